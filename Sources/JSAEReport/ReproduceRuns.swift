import Foundation
import JSAECore
import JSAEIO
import JSAERuns

/// One data file's training rows and evaluated held-out rows.
struct DataSplit {
    let reader: ActivationsReader
    let train: RowSelection
    /// Held-out rows evaluated: the first `evalTokens` of them, in file order.
    let eval: RowSelection
    let heldStart: Int, heldFromFile: Bool
    let special: [Bool]?
    let o: ReproduceOptions

    init(_ r: ActivationsReader, o: ReproduceOptions) throws {
        reader = r; self.o = o
        (heldStart, heldFromFile) = try r.heldOutStart(fallbackFraction: o.heldOutFraction)
        special = try r.specialRows()
        if o.excludeSpecial, let special {
            train = RowSelection(0..<heldStart) { !special[$0] }
            eval = RowSelection(heldStart..<r.tokens) { !special[$0] }.prefix(o.evalTokens ?? Int.max)
        } else {
            train = RowSelection(0..<heldStart)
            eval = RowSelection(heldStart..<r.tokens).prefix(o.evalTokens ?? Int.max)
        }
        guard train.count >= o.batch else {
            throw JSAEError(file: r.path, "has \(train.count) training rows (before row \(heldStart)), fewer than one batch of \(o.batch)")
        }
        guard eval.count >= 1 else { throw JSAEError(file: r.path, "has no held-out rows to evaluate on") }
    }

    /// The shuffling buffer, in batches. A one-pass run (`tokens` set) must
    /// not read a row twice, and refills are whole buffers: the largest
    /// buffer of at most `o.bufferBatches` batches whose refills stay within
    /// the training rows, or an error naming the file when even one batch
    /// per refill runs past them.
    func bufferBatches(_ o: ReproduceOptions) throws -> Int {
        guard let tokens = o.tokens else { return o.bufferBatches }
        let steps = o.trainingSteps
        for b in stride(from: o.bufferBatches, through: 1, by: -1) where ((steps + b - 1) / b) * b * o.batch <= train.count {
            return b
        }
        throw JSAEError(file: reader.path, "has \(train.count) training rows\(o.excludeSpecial && special != nil ? " (special tokens left out)" : ""), "
                        + "fewer than the \(steps * o.batch) that \(tokens) tokens in steps of \(o.batch) need without repeating a row")
    }

    /// Reads the evaluated rows (and writes them as an activations file, the
    /// input of the forward files), with the MLP output y at the true input.
    func evalSet(heldOutFile: String, processedEmulation: Bool = false) throws -> EvalSet {
        let rowsOf = "\(reader.path): the first \(eval.count) held-out rows from row \(heldStart)"
            + (o.excludeSpecial && special != nil ? ", special-token rows left out" : "")
        return try writeEvalSet(reader: reader, rows: eval, rowsOf: rowsOf, mlp: nil, heldOutFile: heldOutFile, processedEmulation: processedEmulation)
    }

    func facts(_ e: EvalSet) -> DataFacts {
        // Norms of held-out special and ordinary rows: why they are left out.
        var normSpecial: Double? = nil, normOther: Double? = nil
        if let special, let x: Matrix<Float> = try? reader.x(heldStart..<min(reader.tokens, heldStart + 65_536)) {
            var s = (0.0, 0), n = (0.0, 0)
            for r in 0..<x.rows {
                let norm = Double(x.row(r).reduce(Float(0)) { $0 + $1 * $1 }).squareRoot()
                if special[heldStart + r] { s = (s.0 + norm, s.1 + 1) } else { n = (n.0 + norm, n.1 + 1) }
            }
            if s.1 > 0 { normSpecial = s.0 / Double(s.1) }
            if n.1 > 0 { normOther = n.0 / Double(n.1) }
        }
        let excluded = special.map { flags in o.excludeSpecial ? flags.reduce(0) { $0 + ($1 ? 1 : 0) } : 0 }
        let f = reader.file
        let attr = { (k: String) -> String? in (try? f.stringAttribute(k)) ?? nil }
        let intAttr = { (k: String) -> Int? in (try? f.intAttribute(k)) ?? nil }
        let std: Double? = (try? f.doubleAttribute("randomization_std")) ?? nil
        let split = heldFromFile ? "document-level (heldout_start_row in the file)" : "last \(Int(o.heldOutFraction * 100))% of the rows (the file records no split)"
        let meanSquare = squaredDistance(e.y, Matrix(rows: e.y.rows, cols: e.y.cols)) / Double(max(e.y.count, 1))
        var facts = DataFacts(file: reader.path, rows: reader.tokens, heldOutStartRow: heldStart, split: split,
                              trainingRows: train.count, evaluatedRows: e.rows.count, specialRowsExcluded: excluded,
                              meanNormSpecial: normSpecial, meanNormOther: normOther, outputMeanSquare: meanSquare,
                              textPackages: attr("text_packages"), sourceModel: attr("source_model"), layer: intAttr("layer"))
        facts.randomizationRule = attr("randomization_rule")
        facts.randomizationStd = std
        facts.maxLength = intAttr("max_length")
        return facts
    }
}

struct RunPlan { var name: String, data: String, lambda: Double }

/// Creates (or reopens, for a resume) the report folder `o.outDir`: locks
/// it against a concurrent run, checks or writes its plan.json, and makes
/// data/ and forward/. The caller holds the returned lock until done.
func openReportFolder(_ o: ReproduceOptions, inputs: [ActivationsReader], log: (String) -> Void) throws -> RunLock {
    try createOutputFolder(o.outDir)
    let lock = try RunLock.acquire(o.outDir)
    try PlanRecord(o, files: inputs).requireSameOrWrite(in: o.outDir, log: log)
    try createOutputFolder(o.outDir + "/data")
    try createOutputFolder(o.outDir + "/forward")
    return lock
}

/// `plan.json` in the report folder: the options and input fingerprints the
/// runs in it were trained with. A second invocation with the same ones
/// resumes; with others it is refused, so that finished runs are never mixed
/// with runs of another configuration.
struct PlanRecord: Codable {
    var options: [String: String]
    var inputs: [String: String]
    /// OpenBLAS threads each run trains on. OpenBLAS's threaded sgemm rounds
    /// differently from its single-threaded one, so a run resumed on another
    /// count continues to numbers that differ from an uninterrupted run's in
    /// their last bits: such a resume is allowed (the machine may have
    /// changed) but said. nil in plans written before it was recorded.
    var blasThreadsPerRun: Int?

    init(_ o: ReproduceOptions, files: [ActivationsReader]) throws {
        options = o.resultDefining
        inputs = Dictionary(uniqueKeysWithValues: try files.map { ($0.path, "\($0.tokens) rows, fingerprint \(try $0.fingerprint())") })
        blasThreadsPerRun = o.blasThreadsPerRun
    }

    func requireSameOrWrite(in dir: String, log: (String) -> Void) throws {
        let path = dir + "/plan.json"
        if FileManager.default.fileExists(atPath: path) {
            guard let data = FileManager.default.contents(atPath: path), let old = try? JSONDecoder().decode(PlanRecord.self, from: data) else {
                throw JSAEError(file: path, "is not a reproduction plan (remove it, or choose another --out)")
            }
            let training = { (o: [String: String]) in o.filter { !ReproduceOptions.evaluationOnly.contains($0.key) } }
            if training(old.options) != training(options) || old.inputs != inputs {
                let key = (Set(old.options.keys).union(options.keys)).sorted().first { old.options[$0] != options[$0] && !ReproduceOptions.evaluationOnly.contains($0) }
                let what = key.map { "\($0) was \(old.options[$0] ?? "unset"), now \(options[$0] ?? "unset")" } ?? "the input files changed"
                throw JSAEError(file: path, "holds a reproduction with other settings (\(what)): rerun with the same ones to resume, or choose another --out")
            }
            log("resuming the reproduction in \(dir) (same settings and inputs as \(path))")
            if old.options != options {
                log("evaluation settings changed (\(ReproduceOptions.evaluationOnly.sorted().joined(separator: ", "))): finished runs are evaluated again")
                // The runs' OpenBLAS thread count stays the one they trained on.
                var merged = self
                merged.blasThreadsPerRun = old.blasThreadsPerRun ?? blasThreadsPerRun
                try writeJSON(merged, to: path)
            }
            if let before = old.blasThreadsPerRun, let now = blasThreadsPerRun, before != now {
                log("note: its runs trained on \(before) OpenBLAS thread\(before == 1 ? "" : "s") each, these on \(now) (--threads / --runs-at-once): "
                    + "a resumed run's numbers will differ from an uninterrupted one's in their last bits")
            }
            return
        }
        try writeJSON(self, to: path)
    }
}

/// Progress over the whole plan, from the workers of `runPlan`: each run's
/// steps, seconds per step measured separately for JSAE and traditional runs
/// (the JSAE's Jacobian makes it about twice as slow), and from them an ETA
/// for everything left, with `runsAtOnce` runs sharing the machine. Lines
/// from concurrent runs are written whole, one at a time.
final class PlanProgress: @unchecked Sendable {
    // @unchecked: every mutable field is guarded by `lock`.
    private let lock = NSLock()
    private let order: [String]
    private var remaining: [String: Int]
    private let isJSAE: [String: Bool]
    private var secondsPerStep: [Bool: Double] = [:]
    /// Runs training now: where their current segment (between snapshots) started.
    private var segments: [String: (start: Date, step: Int)] = [:]
    private let runsAtOnce: Int
    private let logLine: (String) -> Void

    init(_ plan: [RunPlan], steps: Int, runsAtOnce: Int = 1, log: @escaping (String) -> Void) {
        order = plan.map(\.name)
        remaining = Dictionary(uniqueKeysWithValues: plan.map { ($0.name, steps) })
        isJSAE = Dictionary(uniqueKeysWithValues: plan.map { ($0.name, $0.lambda > 0) })
        self.runsAtOnce = max(1, runsAtOnce)
        logLine = log
    }

    func say(_ s: String) { lock.withLock { logLine(s) } }

    func begin(_ run: String, atStep step: Int, of total: Int) {
        lock.withLock {
            segments[run] = (Date(), step)
            remaining[run] = total - step
        }
    }

    func done(_ run: String) { lock.withLock { remaining[run] = 0; segments[run] = nil } }

    /// "  ETA run …, all …" for a progress line of `run` at `step`.
    func status(_ run: String, step: Int, total: Int) -> String {
        lock.withLock {
            guard let segment = segments[run], step > segment.step else { return "" }
            let rate = Date().timeIntervalSince(segment.start) / Double(step - segment.step)
            let jsae = isJSAE[run] ?? true
            secondsPerStep[jsae] = rate
            remaining[run] = total - step
            func seconds(_ name: String) -> Double {
                let kind = isJSAE[name] ?? true
                return Double(remaining[name] ?? 0) * (secondsPerStep[kind] ?? (kind == jsae ? rate : (kind ? rate * 2 : rate / 2)))
            }
            // The runs in progress keep their slots; waiting runs start, in
            // plan order, on whichever slot frees first.
            var slots = order.filter { segments[$0] != nil && (remaining[$0] ?? 0) > 0 }.map(seconds)
            slots += Array(repeating: 0, count: max(0, runsAtOnce - slots.count))
            for name in order where segments[name] == nil && (remaining[name] ?? 0) > 0 {
                let i = slots.indices.min { slots[$0] < slots[$1] }!
                slots[i] += seconds(name)
            }
            return "  ETA run \(duration(Double(total - step) * rate)), all runs \(duration(slots.max() ?? 0))"
        }
    }
}

/// Trains and evaluates `plan`'s runs, `runsAtOnce` at a time on their own
/// threads, each worker taking the next waiting run in plan order, and
/// returns the summaries in plan order. A run's numbers do not depend on
/// the runs beside it, only on the OpenBLAS threads it is given (OpenBLAS's
/// threaded sgemm rounds differently from its single-threaded one).
/// After a failure no further run starts and the runs in progress stop at
/// their next step (with a checkpoint); the failure is rethrown, before
/// any interruption. Interruptions of several runs are reported together.
func runPlan(_ plan: [RunPlan], runsAtOnce: Int, shouldStop: () -> Bool,
             _ body: @escaping (RunPlan, _ shouldStop: () -> Bool) throws -> RunSummary) throws -> [RunSummary] {
    let workers = max(1, min(runsAtOnce, plan.count))
    if workers == 1 { return try plan.map { try body($0, shouldStop) } }
    final class State: @unchecked Sendable {
        // @unchecked: every mutable field is guarded by `lock`; the closures
        // are called only while runPlan waits for the workers.
        let lock = NSLock()
        var next = 0, results: [RunSummary?], errors: [(index: Int, error: Error)] = []
        /// failed: a run threw other than an interruption (the others stop);
        /// ended: any run threw (no further run starts).
        var failed = false, ended = false
        init(_ n: Int) { results = Array(repeating: nil, count: n) }
    }
    let state = State(plan.count)
    return try withoutActuallyEscaping(shouldStop) { shouldStop in
        let stop = { shouldStop() || state.lock.withLock { state.failed } }
        let work = {
            while true {
                let i: Int? = state.lock.withLock {
                    guard !state.ended, state.next < plan.count else { return nil }
                    defer { state.next += 1 }
                    return state.next
                }
                guard let i else { return }
                do {
                    let r = try body(plan[i], stop)
                    state.lock.withLock { state.results[i] = r }
                } catch {
                    state.lock.withLock {
                        state.errors.append((i, error))
                        state.ended = true
                        if !(error is ReproduceInterrupted) { state.failed = true }
                    }
                }
            }
        }
        // The threads reach `work` (which holds the non-escaping shouldStop)
        // only through `box`, and drop it before signalling: a Thread keeps
        // its block until it exits, which may be after the wait below.
        final class Box: @unchecked Sendable {
            // @unchecked: written before the threads start and after they are done.
            var work: (() -> Void)?
            init(_ w: @escaping () -> Void) { work = w }
        }
        let box = Box(work)
        let finished = DispatchSemaphore(value: 0)
        for _ in 0..<workers {
            let t = Thread {
                do { let w = box.work; w?() }
                finished.signal()
            }
            t.stackSize = 1 << 23
            t.start()
        }
        for _ in 0..<workers { finished.wait() }
        box.work = nil
        let errors = state.errors.sorted { $0.index < $1.index }.map(\.error)
        if let failure = errors.first(where: { !($0 is ReproduceInterrupted) }) { throw failure }
        let interrupted = errors.compactMap { $0 as? ReproduceInterrupted }
        if var first = interrupted.first {
            first.others = Array(interrupted.dropFirst())
            throw first
        }
        return state.results.map { $0! }
    }
}

func duration(_ s: Double) -> String {
    let t = Int(s.rounded())
    return t >= 3600 ? String(format: "%dh%02dm", t / 3600, (t % 3600) / 60) : String(format: "%dm%02ds", t / 60, t % 60)
}

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

/// A held-out evaluation at the true input, in memory (no forward files):
/// the scale curve's point. The same measures as the final evaluation, by
/// the same functions (explainedVariance, meanL0, LossSums).
func evaluateSnapshot(_ model: JSAEModel<Float>, eval: EvalSet, step: Int, batch: Int, threads: Int) -> Snapshot {
    let n = eval.x.rows, d = model.d, chunk = 1024
    let ws = Workspace<Float>(model.workspaceShape(tokens: min(chunk, n)), purpose: .storeJacobian, threads: threads)
    model.updateJacobianFactors(ws)
    var xHat = Matrix<Float>(rows: n, cols: d), yHat = Matrix<Float>(rows: n, cols: d), y = Matrix<Float>(rows: n, cols: d)
    var counts = ThresholdCounts()
    var activeIn = [Bool](repeating: false, count: model.saeIn.m), activeOut = [Bool](repeating: false, count: model.saeOut!.m)
    var l0In = 0, l0Out = 0
    var sums = LossSums()
    for start in stride(from: 0, to: n, by: chunk) {
        let rows = start..<min(n, start + chunk)
        let r = model.evaluate(eval.x.rows(rows), point: .trueInput, workspace: ws)
        xHat.data.replaceSubrange((rows.lowerBound * d)..<(rows.upperBound * d), with: r.xHat.data)
        yHat.data.replaceSubrange((rows.lowerBound * d)..<(rows.upperBound * d), with: r.yHat!.data)
        y.data.replaceSubrange((rows.lowerBound * d)..<(rows.upperBound * d), with: r.y!.data)
        counts.add(r.jacobian!)
        for (i, v) in r.codesIn.values.enumerated() where v > 0 { activeIn[r.codesIn.indices[i]] = true; l0In += 1 }
        for (i, v) in r.codesOut!.values.enumerated() where v > 0 { activeOut[r.codesOut!.indices[i]] = true; l0Out += 1 }
        sums.add(r.sums)
    }
    let c = sums.components(lambda: 0)
    return Snapshot(step: step, tokens: step * batch, shares: counts.sharesAbove,
                    explainedVarianceIn: explainedVariance(eval.x, xHat), explainedVarianceOut: explainedVariance(y, yHat),
                    mseIn: c.mseIn, mseOut: c.mseOut, jacobianL1: c.jacobianL1,
                    l0In: Double(l0In) / Double(n), l0Out: Double(l0Out) / Double(n),
                    deadIn: activeIn.filter { !$0 }.count, deadOut: activeOut.filter { !$0 }.count)
}

/// The final evaluation: forward files at both evaluation points (and, on
/// pre-trained data with /ln_in, of the processed model), the threshold
/// counts, the reconstruction metrics, and f_s linearity and ablation in
/// both variants.
/// - modelPath: the model file the forward files name (nil: the run's runs/NAME/model.h5)
func evaluate(_ model: JSAEModel<Float>, name: String, data: String, lambda: Double, eval: EvalSet, o: ReproduceOptions,
              modelPath: String? = nil) throws -> RunSummary {
    var files: [String: String] = [:], shares: [String: [Double]] = [:], counts: [String: ThresholdCounts] = [:]
    var forwards: [EvaluationPoint: ForwardFile<Float>] = [:]
    let reader = try ActivationsReader(eval.path)
    var jacobianL1 = 0.0
    func forward(_ m: JSAEModel<Float>, _ r: ActivationsReader, point: EvaluationPoint, key: String) throws -> (ForwardFile<Float>, LossComponents) {
        let path = o.outDir + "/forward/\(name).\(key).h5"
        var fo = ForwardOptions()
        fo.point = point; fo.lambda = lambda; fo.threads = o.threads
        let c = try runForward(model: m, activations: r, modelPath: modelPath ?? o.outDir + "/runs/\(name)/model.h5", outPath: path, options: fo)
        let f = try ForwardFile<Float>(path)
        let n = ThresholdCounts(f.jacobian ?? [])
        files[key] = path; counts[key] = n; shares[key] = n.sharesAbove
        return (f, c)
    }
    for point in EvaluationPoint.allCases {
        let (f, c) = try forward(model, reader, point: point, key: point.rawValue)
        if point == .trueInput { jacobianL1 = c.jacobianL1 }
        forwards[point] = f
    }
    // Reconstruction metrics at the true input (the output SAE's target is f(x)).
    let t = forwards[.trueInput]!
    let x = eval.x
    func l0(_ v: [Float]) -> Double { v.withUnsafeBufferPointer { meanL0(values: $0, tokens: t.xHat.rows) } }
    // Dead over the held-out set: no activation in its one "step".
    let tracker = DeadLatentTracker(mIn: model.saeIn.m, mOut: model.saeOut!.m, startStep: 0)
    tracker.record(SparseCodes(indices: t.inIndices, values: t.inValues, k: t.k), output: false, step: 0)
    tracker.record(SparseCodes(indices: t.outIndices!, values: t.outValues!, k: t.k), output: true, step: 0)
    let dead = tracker.dead(atStep: 1, window: 1)
    func analysis(_ m: JSAEModel<Float>, _ v: AnalysisVariant, _ path: ModelPath, bases: Matrix<Float>, _ f: ForwardFile<Float>) -> ConnectionAnalysis {
        connectionAnalysis(m, variant: v, path: path, bases: bases, forward: f, linearitySamples: o.linearitySamples,
                           ablationSamples: o.ablationSamples, seed: o.seed, threads: o.threads)
    }
    var analyses = [analysis(model, .authors, .consistent, bases: x, t),
                    analysis(model, .reconstruction, .consistent, bases: forwards[.reconstruction]!.xHat, forwards[.reconstruction]!)]
    if let processed = eval.processed {
        let pm = try JSAEModel(saeIn: model.saeIn, saeOut: model.saeOut, mlp: processed.mlp)
        let (f, _) = try forward(pm, try ActivationsReader(processed.path), point: .trueInput, key: ModelPath.processed.rawValue + "-" + EvaluationPoint.trueInput.rawValue)
        analyses.append(analysis(pm, .authors, .processed, bases: processed.x, f))
    }
    let xhatVariant = analyses[1]
    return RunSummary(name: name, data: data, lambda: lambda, forwardFiles: files, shares: shares,
                      explainedVarianceIn: explainedVariance(x, t.xHat), explainedVarianceOut: explainedVariance(t.y!, t.yHat!),
                      mseIn: t.mseIn, mseOut: t.mseOut ?? 0, l0In: l0(t.inValues), l0Out: l0(t.outValues!),
                      deadIn: dead.input, deadOut: dead.output,
                      linearity: ["linear": xhatVariant.linear.share, "JumpReLU": xhatVariant.jumpReLU.share, "other": xhatVariant.other.share],
                      ablationAgreement: xhatVariant.ablationAgrees.share, samples: xhatVariant.linear.total, jacobianL1: jacobianL1,
                      thresholdCounts: counts, analyses: analyses)
}
