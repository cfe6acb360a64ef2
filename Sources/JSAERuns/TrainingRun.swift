import Foundation
import JSAECore
import JSAEIO

/// How a run is driven: where it writes, how often it checkpoints and logs.
public struct TrainRunOptions: Sendable {
    public var outDir: String
    public var checkpointEvery = 1000
    public var logEvery = 10
    public var deadWindow = 1000
    /// Checkpoints kept in the folder (older ones are removed after a newer
    /// one is safely in place); at least 2, so a damaged latest file still
    /// leaves one to fall back on by hand.
    public var keepCheckpoints = 2
    /// Threads for the package's own loops; results do not depend on it.
    public var threads = Parallel.onlineCores
    /// Stop (with a checkpoint, as on a signal) once this many steps are
    /// done: a caller evaluates part-way and calls again to continue, with
    /// the same result as an uninterrupted run.
    public var pauseAtStep: Int? = nil
    public init(outDir: String) { self.outDir = outDir }
}

/// The run stopped because a loss or gradient was not finite; nothing of the
/// failing step was written.
public struct TrainingDiverged: Error, CustomStringConvertible, Sendable {
    public var description: String
}

public enum RunOutcome: Equatable, Sendable {
    case finished(checkpoint: String)
    case interrupted(step: Int, checkpoint: String)
}

/// Trains until `config.totalSteps`, checkpointing every
/// `options.checkpointEvery` steps, when `shouldStop()` turns true (checked
/// between steps: SIGINT/SIGTERM in the CLI), and at the end, where the final
/// `model.h5` is written too. A non-finite loss or gradient stops the run with
/// `TrainingDiverged`; the failing step never updates the parameters, so the
/// last checkpoint on disk is the last good one.
@_specialize(exported: true, where T == Float)
@_specialize(exported: true, where T == Double)
public func runTraining<T: JSAEScalar>(state: inout TrainState<T>, config: TrainConfig, stream: BatchStream<T>,
                                       provenance: CheckpointFile.Provenance, options: TrainRunOptions,
                                       shouldStop: () -> Bool = { false },
                                       status: (_ step: Int) -> String = { _ in "" },
                                       log: (String) -> Void = { _ in }) throws -> RunOutcome {
    try config.validate()
    let dir = options.outDir
    let tracker = DeadLatentTracker(mIn: state.model.saeIn.m, mOut: state.model.saeOut?.m ?? 0, startStep: state.completedSteps)
    // Every step's scratch, allocated once for the whole run.
    let workspace = state.workspace(config: config, threads: options.threads)
    var windowStart = Date(), windowTokens = 0

    var lastCheckpoint: (step: Int, path: String)? = nil
    func checkpoint() throws -> String {
        // A stop right after a periodic checkpoint reuses it instead of writing it again.
        if let last = lastCheckpoint, last.step == state.completedSteps { return last.path }
        let path = CheckpointFile.path(in: dir, step: state.completedSteps)
        try CheckpointFile.write(state, config: config, provenance: provenance, to: path)
        CheckpointFile.prune(in: dir, keep: max(options.keepCheckpoints, 2))
        lastCheckpoint = (state.completedSteps, path)
        return path
    }

    while state.completedSteps < config.totalSteps {
        if shouldStop() || state.completedSteps == options.pauseAtStep {
            let path = try checkpoint()
            return .interrupted(step: state.completedSteps, checkpoint: path)
        }
        let t = state.completedSteps
        let (x, y) = try stream.batch(forStep: t)
        let logNow = options.logEvery > 0 && ((t + 1) % options.logEvery == 0 || t + 1 == config.totalSteps)
        let report: StepReport
        do {
            report = try state.step(x, yTarget: y, config: config, workspace: workspace, report: logNow, deadLatents: tracker)
        } catch let e as TrainingError {
            let last = CheckpointFile.latest(in: dir).map { "last good checkpoint: \($0)" } ?? "no checkpoint was written yet"
            throw TrainingDiverged(description: "\(e.description); \(last)")
        }
        windowTokens += x.rows
        if logNow {
            let dt = max(Date().timeIntervalSince(windowStart), 1e-9)
            log(progressLine(report, total: config.totalSteps, tokensPerSecond: Double(windowTokens) / dt,
                             dead: tracker.dead(atStep: state.completedSteps, window: options.deadWindow), pair: state.model.saeOut != nil)
                + status(state.completedSteps))
            windowStart = Date(); windowTokens = 0
        }
        if options.checkpointEvery > 0 && state.completedSteps % options.checkpointEvery == 0 && state.completedSteps < config.totalSteps {
            _ = try checkpoint()
        }
    }
    let path = try checkpoint()
    try ModelFile.write(state.model, to: dir + "/model.h5",
                        attributes: ["note": .string("trained by jsae train: \(state.completedSteps) steps"),
                                     "activations_file": .string(provenance.activationsFile)])
    return .finished(checkpoint: path)
}

func progressLine(_ r: StepReport, total: Int, tokensPerSecond: Double, dead: (input: Int, output: Int), pair: Bool) -> String {
    func f(_ v: Double, _ digits: Int = 4) -> String { String(format: "%.\(digits)g", v) }
    let c = r.components, m = r.metrics
    var s = "step \(r.step + 1)/\(total)  \(Int(tokensPerSecond.rounded())) tok/s  loss \(f(c.loss))  mse_in \(f(c.mseIn))"
    if pair { s += "  mse_out \(f(c.mseOut))  jac \(f(c.jacobianL1))" }
    s += "  ev_in \(f(m.explainedVarianceIn, 3))"
    if let e = m.explainedVarianceOut { s += "  ev_out \(f(e, 3))" }
    s += "  L0 \(f(m.l0In, 3))"
    if let l = m.l0Out { s += "/\(f(l, 3))" }
    if let sh = m.jacobianShares { s += "  |J|>0.01 \(f(100 * sh[1], 3))%" }
    s += "  dead \(dead.input)" + (pair ? "/\(dead.output)" : "")
    s += "  lr \(f(r.lr, 3))  λ \(f(r.lambda, 3))"
    if r.clipFactor < 1 { s += "  clipped(\(f(r.gradNorm, 3)))" }
    return s
}
