import Foundation
import JSAECore
import JSAEIO
import JSAERuns

/// Record of a finished run (`runs/<name>/run.json`), reused on resume.
/// `evaluation` names the final evaluation it holds (`ReproduceOptions.evaluationID`):
/// a run finished under another one is evaluated again from its model.h5,
/// without retraining.
struct FinishedRun: Codable {
    var summary: RunSummary; var evaluation: String?

    /// The record in the run folder `dir`; nil when there is none or it does not decode (the run is then trained or resumed).
    static func read(_ dir: String) -> FinishedRun? {
        FileManager.default.contents(atPath: dir + "/run.json").flatMap { try? JSONDecoder().decode(FinishedRun.self, from: $0) }
    }
}

/// Trains one run (resuming from its folder when it has a checkpoint, or
/// reusing it when it finished), evaluating the scale-curve snapshots on the
/// way and the full final evaluation at the end.
func trainAndEvaluate(_ p: RunPlan, split: DataSplit, eval: EvalSet, d: Int, m: Int, o: ReproduceOptions,
                      progress: PlanProgress, shouldStop: () -> Bool) throws -> RunSummary {
    let dir = o.outDir + "/runs/" + p.name
    let finishedPath = dir + "/run.json", snapshotsPath = dir + "/snapshots.json"
    let folder = try RunFolder(dir, log: { progress.say("[\(p.name)] " + $0) })
    if let done = FinishedRun.read(dir) {
        if done.evaluation == o.evaluationID {
            progress.say("[\(p.name)] finished earlier: reusing \(finishedPath)")
            progress.done(p.name)
            return done.summary
        }
        progress.say("[\(p.name)] finished earlier under another evaluation (\(done.evaluation ?? "unversioned")): evaluating its model again, "
                     + "training untouched")
        let started = Date()
        let model: JSAEModel<Float> = try ModelFile.read(dir + "/model.h5")
        var summary = try evaluate(model, name: p.name, data: p.data, lambda: p.lambda, eval: eval, o: o)
        let old = done.summary
        summary.steps = old.steps; summary.trainedTokens = old.trainedTokens; summary.trainingRows = old.trainingRows
        summary.epochs = old.epochs; summary.shuffleBufferBatches = old.shuffleBufferBatches
        if let snaps = old.snapshots {
            // The last point is the final evaluation's, which is unchanged by construction only in its shared measures.
            let end = Snapshot(finalEvaluation: summary, step: old.steps ?? 0, tokens: old.trainedTokens ?? 0)
            summary.snapshots = snaps.filter { $0.step != end.step } + [end]
        }
        summary.wallSeconds = (old.wallSeconds ?? 0) + Date().timeIntervalSince(started)
        try writeJSON(FinishedRun(summary: summary, evaluation: o.evaluationID), to: finishedPath)
        progress.done(p.name)
        return summary
    }
    let started = Date()
    let reader = split.reader
    let settings = try runSettings(o, split: split, lambda: p.lambda, d: d)
    let training = try Training<Float>(
        folder: folder, data: reader, settings: { _ in settings },
        initial: { s in
            try TrainState<Float>.initial(d: s.d, mIn: s.m, mOut: s.m, k: s.k, mlp: try MLPFile.read(reader.file, d: s.d), single: false, seed: s.config.seed)
        },
        hint: { _ in " (remove \(dir) to start this run again)" })
    let config = settings.config
    var snapshots: [Snapshot] = []
    var wall = 0.0
    if let latest = training.resumedFrom {
        if let data = FileManager.default.contents(atPath: snapshotsPath) {
            let saved = (try? JSONDecoder().decode(SavedSnapshots.self, from: data)) ?? SavedSnapshots(snapshots: [], wallSeconds: 0)
            snapshots = saved.snapshots.filter { $0.step <= training.state.completedSteps }
            wall = saved.wallSeconds
        }
        progress.say("[\(p.name)] resuming from \(latest) at step \(training.state.completedSteps)/\(config.totalSteps)")
    } else {
        progress.say("[\(p.name)] training: λ \(p.lambda), d \(d), m \(settings.m), k \(o.k), \(config.totalSteps) steps of \(o.batch) "
                      + "(\(config.totalSteps * o.batch) tokens of \(split.train.count) training rows), lr \(o.lr)")
    }
    var opts = TrainRunOptions(outDir: dir)
    opts.checkpointEvery = o.checkpointEvery; opts.logEvery = max(1, min(25, config.totalSteps / 8)); opts.threads = o.threads
    func saveSnapshots() throws {
        try writeJSON(SavedSnapshots(snapshots: snapshots, wallSeconds: wall + Date().timeIntervalSince(started)), to: snapshotsPath)
    }
    // The last pause is the end of training, whose snapshot is taken from
    // the final evaluation's true-input pass below instead of a pass of its own.
    let last = config.totalSteps
    for pause in o.snapshotSteps where pause > training.state.completedSteps
        || (pause == training.state.completedSteps && pause != last && !snapshots.contains { $0.step == pause }) {
        if pause > training.state.completedSteps {
            opts.pauseAtStep = pause
            progress.begin(p.name, atStep: training.state.completedSteps, of: config.totalSteps)
            let outcome = try training.run(opts, shouldStop: shouldStop, status: { progress.status(p.name, step: $0, total: config.totalSteps) },
                                           log: { progress.say("    [\(p.name)] " + $0) })
            if case .interrupted(let step, let cp) = outcome, step != pause {
                try saveSnapshots()
                throw ReproduceInterrupted(run: p.name, step: step, checkpoint: cp)
            }
        }
        guard pause != last else { continue }
        let snap = evaluateSnapshot(training.state.model, eval: eval, step: training.state.completedSteps, batch: o.batch, threads: o.threads)
        snapshots.append(snap)
        try saveSnapshots()
        saySnapshot(snap, run: p.name, progress: progress)
    }
    if !FileManager.default.fileExists(atPath: dir + "/model.h5") {
        // Resumed from the final checkpoint of a run killed before its model.h5
        // was in place: finishing again writes it (and rewrites that checkpoint).
        opts.pauseAtStep = nil
        _ = try training.run(opts, shouldStop: shouldStop)
    }
    let state = training.state
    var summary = try evaluate(state.model, name: p.name, data: p.data, lambda: p.lambda, eval: eval, o: o)
    summary.steps = state.completedSteps; summary.trainedTokens = state.completedSteps * o.batch; summary.trainingRows = split.train.count
    summary.epochs = Double(state.completedSteps * o.batch) / Double(split.train.count)
    summary.shuffleBufferBatches = settings.bufferBatches
    if o.snapshotSteps.count > 1 {
        let end = Snapshot(finalEvaluation: summary, step: state.completedSteps, tokens: state.completedSteps * o.batch)
        snapshots = snapshots.filter { $0.step != end.step } + [end]
        try saveSnapshots()
        saySnapshot(end, run: p.name, progress: progress)
        summary.snapshots = snapshots
    }
    summary.wallSeconds = wall + Date().timeIntervalSince(started)
    try writeJSON(FinishedRun(summary: summary, evaluation: o.evaluationID), to: finishedPath)
    progress.done(p.name)
    return summary
}

/// The settings of a run of `o` on `split`'s training rows, checked (k in
/// [1, m], memory, the configuration's rules): every run of the plan is
/// checked this way before any work, and trains with them.
func runSettings(_ o: ReproduceOptions, split: DataSplit, lambda: Double, d: Int) throws -> TrainingSettings {
    var config = TrainConfig()
    config.lr = o.lr; config.lambda = lambda; config.batch = o.batch; config.totalSteps = o.trainingSteps; config.seed = o.seed
    let s = TrainingSettings(config: config, d: d, m: try RunRules.latents(expansion: o.expansion, d: d), k: o.k, precision: Float.precisionName,
                             bufferBatches: try split.bufferBatches(o), trainingRowsEnd: split.heldStart,
                             excludesSpecial: o.excludeSpecial && split.special != nil)
    try s.validate(flags: "--expansion or --batch")
    return s
}

struct SavedSnapshots: Codable { var snapshots: [Snapshot]; var wallSeconds: Double }

func saySnapshot(_ snap: Snapshot, run: String, progress: PlanProgress) {
    progress.say("    [\(run)] " + String(format: "snapshot at %d tokens: |J|>0.01 %.1f%%, EV in %.3f out %.3f", snap.tokens, 100 * snap.shares.headline,
                                        snap.metrics.explainedVarianceIn, snap.metrics.explainedVarianceOut))
}

extension Snapshot {
    /// The scale curve's last point: the final evaluation at the true input
    /// (the same held-out rows and measures as `evaluateSnapshot`).
    init(finalEvaluation r: RunSummary, step: Int, tokens: Int) {
        self.init(step: step, tokens: tokens, shares: r.shares[.trueInput]!, metrics: r.metrics)
    }
}
