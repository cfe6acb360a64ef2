import Foundation
import JSAECore
import JSAEIO
import JSAERuns

/// Record of a finished run (`runs/<name>/run.json`), reused on resume.
/// `evaluation` names the final evaluation it holds (`ReproduceOptions.evaluationID`):
/// a run finished under another one is evaluated again from its model.h5,
/// without retraining.
struct FinishedRun: Codable { var summary: RunSummary; var evaluation: String? }

/// Trains one run (resuming from its folder when it has a checkpoint, or
/// reusing it when it finished), evaluating the scale-curve snapshots on the
/// way and the full final evaluation at the end.
func trainAndEvaluate(_ p: RunPlan, split: DataSplit, eval: EvalSet, d: Int, m: Int, o: ReproduceOptions,
                      progress: PlanProgress, shouldStop: () -> Bool) throws -> RunSummary {
    let dir = o.outDir + "/runs/" + p.name
    let finishedPath = dir + "/run.json", snapshotsPath = dir + "/snapshots.json"
    // The report folder's lock is held: temporaries in the run's folder are a killed process's.
    let removed = removeStaleTemporaries(in: dir)
    if !removed.isEmpty { progress.say("[\(p.name)] removed \(removed.count) temporary file(s) left by killed runs: \(removed.joined(separator: ", "))") }
    if let data = FileManager.default.contents(atPath: finishedPath), let done = try? JSONDecoder().decode(FinishedRun.self, from: data) {
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
    try createOutputFolder(dir)
    let reader = split.reader
    var config = TrainConfig()
    config.lr = o.lr; config.lambda = p.lambda; config.batch = o.batch; config.totalSteps = o.trainingSteps; config.seed = o.seed
    let bufferBatches = try split.bufferBatches(o)
    var state: TrainState<Float>
    var snapshots: [Snapshot] = []
    var wall = 0.0
    if let latest = CheckpointFile.latest(in: dir) {
        let loaded: (state: TrainState<Float>, config: TrainConfig, provenance: CheckpointFile.Provenance) = try CheckpointFile.read(latest)
        try loaded.provenance.requireSameActivations(reader, checkpoint: latest)
        guard loaded.config.totalSteps == config.totalSteps, loaded.config.lambda == config.lambda, loaded.state.model.d == d else {
            throw JSAEError(file: latest, "was trained with other settings than this reproduction's (remove \(dir) to start it again)")
        }
        state = loaded.state
        if let data = FileManager.default.contents(atPath: snapshotsPath) {
            let saved = (try? JSONDecoder().decode(SavedSnapshots.self, from: data)) ?? SavedSnapshots(snapshots: [], wallSeconds: 0)
            snapshots = saved.snapshots.filter { $0.step <= state.step }
            wall = saved.wallSeconds
        }
        progress.say("[\(p.name)] resuming from \(latest) at step \(state.step)/\(config.totalSteps)")
    } else {
        let mlp: MLP<Float> = try MLPFile.read(reader.file, d: d)
        state = try TrainState<Float>.initial(d: d, mIn: m, mOut: m, k: o.k, mlp: mlp, single: false, seed: o.seed)
        progress.say("[\(p.name)] training: λ \(p.lambda), d \(d), m \(m), k \(o.k), \(config.totalSteps) steps of \(o.batch) "
                      + "(\(config.totalSteps * o.batch) tokens of \(split.train.count) training rows), lr \(o.lr)")
    }
    let stream = BatchStream<Float>(reader: reader, batch: o.batch, bufferBatches: bufferBatches, seed: o.seed, rows: split.train)
    var provenance = try CheckpointFile.Provenance(reader: reader, shuffleBufferTokens: stream.bufferTokens)
    provenance.trainingRowsEnd = split.heldStart
    provenance.trainingExcludesSpecial = o.excludeSpecial && split.special != nil
    func saveSnapshots() throws {
        try writeJSON(SavedSnapshots(snapshots: snapshots, wallSeconds: wall + Date().timeIntervalSince(started)), to: snapshotsPath)
    }
    // The last pause is the end of training, whose snapshot is taken from
    // the final evaluation's true-input pass below instead of a pass of its own.
    let last = config.totalSteps
    for pause in o.snapshotSteps where pause > state.step || (pause == state.step && pause != last && !snapshots.contains { $0.step == pause }) {
        if pause > state.step {
            var opts = TrainRunOptions(outDir: dir)
            opts.checkpointEvery = o.checkpointEvery; opts.logEvery = max(1, min(25, config.totalSteps / 8)); opts.threads = o.threads
            opts.pauseAtStep = pause
            progress.begin(p.name, atStep: state.step, of: config.totalSteps)
            let outcome = try runTraining(state: &state, config: config, stream: stream, provenance: provenance, options: opts,
                                          shouldStop: shouldStop, status: { progress.status(p.name, step: $0, total: config.totalSteps) },
                                          log: { progress.say("    [\(p.name)] " + $0) })
            if case .interrupted(let step, let cp) = outcome, step != pause {
                try saveSnapshots()
                throw ReproduceInterrupted(run: p.name, step: step, checkpoint: cp)
            }
        }
        guard pause != last else { continue }
        let snap = evaluateSnapshot(state.model, eval: eval, step: state.step, batch: o.batch, threads: o.threads)
        snapshots.append(snap)
        try saveSnapshots()
        saySnapshot(snap, run: p.name, progress: progress)
    }
    if !FileManager.default.fileExists(atPath: dir + "/model.h5") {
        try ModelFile.write(state.model, to: dir + "/model.h5",
                            attributes: ["note": .string("trained by jsae reproduce: \(state.step) steps"),
                                         "activations_file": .string(reader.path)])
    }
    var summary = try evaluate(state.model, name: p.name, data: p.data, lambda: p.lambda, eval: eval, o: o)
    summary.steps = state.step; summary.trainedTokens = state.step * o.batch; summary.trainingRows = split.train.count
    summary.epochs = Double(state.step * o.batch) / Double(split.train.count)
    summary.shuffleBufferBatches = bufferBatches
    if o.snapshotSteps.count > 1 {
        let end = Snapshot(finalEvaluation: summary, step: state.step, tokens: state.step * o.batch)
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

struct SavedSnapshots: Codable { var snapshots: [Snapshot]; var wallSeconds: Double }

func saySnapshot(_ snap: Snapshot, run: String, progress: PlanProgress) {
    progress.say("    [\(run)] " + String(format: "snapshot at %d tokens: |J|>0.01 %.1f%%, EV in %.3f out %.3f", snap.tokens, 100 * snap.shares[1],
                                        snap.explainedVarianceIn, snap.explainedVarianceOut))
}

extension Snapshot {
    /// The scale curve's last point: the final evaluation at the true input
    /// (the same held-out rows and measures as `evaluateSnapshot`).
    init(finalEvaluation r: RunSummary, step: Int, tokens: Int) {
        self.init(step: step, tokens: tokens, shares: r.shares["trueInput"] ?? [],
                  explainedVarianceIn: r.explainedVarianceIn, explainedVarianceOut: r.explainedVarianceOut,
                  mseIn: r.mseIn, mseOut: r.mseOut, jacobianL1: r.jacobianL1 ?? 0,
                  l0In: r.l0In, l0Out: r.l0Out, deadIn: r.deadIn, deadOut: r.deadOut)
    }
}
