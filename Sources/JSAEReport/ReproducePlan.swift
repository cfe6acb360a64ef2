import Foundation
import JSAECore
import JSAEIO
import JSAERuns

struct RunPlan { var name: String, data: String, lambda: Double }

/// Creates (or reopens, for a resume) the report folder `o.outDir`: locks
/// it against a concurrent run, checks or writes its plan.json, makes
/// data/ and forward/, and removes what killed processes left in them. The caller holds the returned lock until done.
func openReportFolder(_ o: ReproduceOptions, inputs: [ActivationsReader], log: (String) -> Void) throws -> RunLock {
    try createOutputFolder(o.outDir)
    let lock = try RunLock.acquire(o.outDir)
    try PlanRecord(o, files: inputs).requireSameOrWrite(in: o.outDir, log: log)
    try createOutputFolder(o.outDir + "/data")
    try createOutputFolder(o.outDir + "/forward")
    // With the lock held, temporaries here are a killed process's (the runs' own folders are cleared by RunFolder).
    for dir in [o.outDir, o.outDir + "/data", o.outDir + "/forward"] {
        let removed = removeStaleTemporaries(in: dir)
        if !removed.isEmpty { log("removed \(removed.count) temporary file(s) left by killed runs in \(dir): \(removed.joined(separator: ", "))") }
    }
    return lock
}

/// `plan.json` in the report folder: the options and input fingerprints the
/// runs in it were trained with. A second invocation with the same ones
/// resumes; with others it is refused, so that finished runs are never mixed
/// with runs of another configuration.
struct PlanRecord: Codable {
    var options: [String: String]
    var inputs: [String: String]
    /// OpenBLAS threads each run trains on: 1 with this code. A plan.json
    /// that records more holds runs trained on OpenBLAS's threaded sgemm,
    /// which rounds differently from its single-threaded one, so a run
    /// resumed from it continues to numbers that differ from an
    /// uninterrupted run's in their last bits: such a resume is allowed but
    /// said. nil in plans that do not record it.
    var blasThreadsPerRun: Int?

    init(_ o: ReproduceOptions, files: [ActivationsReader]) throws {
        options = o.resultDefining
        inputs = Dictionary(uniqueKeysWithValues: try files.map { ($0.path, "\($0.tokens) rows, fingerprint \(try $0.fingerprint())") })
        blasThreadsPerRun = o.blasThreadsPerRun
    }

    /// The plan.json in `dir`, nil when there is none.
    static func read(in dir: String) throws -> PlanRecord? {
        let path = dir + "/plan.json"
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        guard let data = FileManager.default.contents(atPath: path), let old = try? JSONDecoder().decode(PlanRecord.self, from: data) else {
            throw JSAEError(file: path, "is not a reproduction plan (remove it, or choose another --out)")
        }
        return old
    }

    /// Refuses, naming the first setting that differs, when `old` holds
    /// other settings or inputs than these (evaluation settings aside when
    /// `evaluationMayDiffer`).
    func requireSame(as old: PlanRecord, path: String, evaluationMayDiffer: Bool) throws {
        let counted = { (key: String) in !evaluationMayDiffer || !ReproduceOptions.evaluationOnly.contains(key) }
        let key = (Set(old.options.keys).union(options.keys)).sorted().first { old.options[$0] != options[$0] && counted($0) }
        guard key != nil || old.inputs != inputs else { return }
        let what = key.map { "\($0) was \(old.options[$0] ?? "unset"), now \(options[$0] ?? "unset")" } ?? "the input files changed"
        throw JSAEError(file: path, "holds a reproduction with other settings (\(what)): rerun with the same ones to resume, or choose another --out")
    }

    /// For the split stages, which never write plan.json: it must be there
    /// (written by --plan) and hold these settings.
    func requireSame(in dir: String, evaluationMayDiffer: Bool) throws {
        guard let old = try PlanRecord.read(in: dir) else {
            throw JSAEError(file: dir + "/plan.json", "no such file: write the plan first with the same options and --plan")
        }
        try requireSame(as: old, path: dir + "/plan.json", evaluationMayDiffer: evaluationMayDiffer)
    }

    func requireSameOrWrite(in dir: String, log: (String) -> Void) throws {
        let path = dir + "/plan.json"
        if let old = try PlanRecord.read(in: dir) {
            try requireSame(as: old, path: path, evaluationMayDiffer: true)
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
/// returns the summaries in plan order. A run's numbers depend neither on
/// the runs beside it nor on the threads it is given (the products are cut
/// into tiles by shape alone: `GemmTiles`).
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
