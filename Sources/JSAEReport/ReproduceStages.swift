import Foundation
import JSAECore
import JSAEIO
import JSAERuns

/// A reproduction's inputs and runs, checked before any work: the data
/// files, their common d, k against m, λ, each file's split and every run's
/// settings. The monolithic `reproduce` and the split stages (`--plan`,
/// `--only`, `--report-only`) start from this one value, so a run trained
/// alone is the run a monolithic reproduction trains.
struct ReproductionInputs {
    /// What plan.json records (a layer sweep: the `{layer}` pattern, no randomised file).
    let planOptions: ReproduceOptions
    /// What the runs train with (a layer sweep evaluates each run at its end only).
    let options: ReproduceOptions
    /// In data order: pretrained, randomized; or one per layer.
    let readers: [ActivationsReader]
    let dataNames: [String]
    let splits: [String: DataSplit]
    let d: Int, m: Int, lambda: Double
    let runs: [RunPlan]

    init(_ given: ReproduceOptions, layers: [Int]? = nil) throws {
        var o = given
        var plan = given
        // The per-layer table reports each run at its end: no scale-curve
        // snapshots, whose evaluations would cost time and appear nowhere.
        if layers != nil { o.snapshotTokens = [] }
        try requireCreatableFolder(o.outDir)
        if let layers {
            guard o.pretrained.contains("{layer}") else { throw JSAEError("--pretrained must contain {layer} with --layers, got \(o.pretrained)") }
            readers = try layers.map { try ActivationsReader(o.pretrained.replacingOccurrences(of: "{layer}", with: String($0))) }
            dataNames = layers.map { "l\($0)" }
            plan = o
            plan.randomized = "-"
        } else {
            readers = [try ActivationsReader(o.pretrained), try ActivationsReader(o.randomized)]
            dataNames = ["pretrained", "randomized"]
        }
        d = readers[0].d
        for r in readers.dropFirst() where r.d != d { throw JSAEError(file: r.path, "has d = \(r.d) but \(readers[0].path) has d = \(d)") }
        m = try RunRules.latents(expansion: o.expansion, d: d)
        try RunRules.requireK(o.k, m: m, d: d, file: readers[0].path)
        lambda = o.lambda ?? TrainConfig.paperLambda(k: o.k, d: d)
        let split = try readers.map { try DataSplit($0, o: o) }
        splits = Dictionary(uniqueKeysWithValues: zip(dataNames, split))
        // Every run's settings (a one-pass run's rows among them) must hold before any work.
        for s in split { _ = try runSettings(o, split: s, lambda: lambda, d: d) }
        let lambda = lambda
        if let layers {
            runs = layers.flatMap { [RunPlan(RunID(.jsae, .layer($0)), lambda: lambda), RunPlan(RunID(.traditional, .layer($0)), lambda: 0)] }
        } else {
            let sweep = o.lambdaSweep.filter { $0 != lambda && $0 != 0 }.map { RunPlan(.sweep(lambda: $0), lambda: $0) }
            runs = RunID.main.map { RunPlan($0, lambda: $0.method == .jsae ? lambda : 0) } + sweep
        }
        options = o
        planOptions = plan
    }

    /// The processed-model emulation applies to pre-trained data (a layer sweep's files are all pre-trained).
    func processedEmulation(_ data: String) -> Bool { data != "randomized" }
}

/// What a cluster needs to know about each run of a plan: its name (in plan
/// order) and the resources it asks for.
public struct PlannedRuns: Sendable {
    public var names: [String]
    /// The largest estimate over the runs (`estimatedRunBytes`).
    public var memoryBytes: Double
    /// Training tokens of each run (steps × batch).
    public var trainingTokens: Int
    /// Files every run reads: the activations.
    public var inputFiles: [String]
}

/// `jsae reproduce --plan`: checks everything the reproduction checks,
/// writes OUT/plan.json (or finds the same one there) and the folders the
/// runs write into, and trains nothing.
public func writeReproductionPlan(_ o: ReproduceOptions, layers: [Int]? = nil, log: (String) -> Void) throws -> PlannedRuns {
    let inputs = try ReproductionInputs(o, layers: layers)
    let lock = try openReportFolder(inputs.planOptions, inputs: inputs.readers, log: log)
    try createOutputFolder(o.outDir + "/runs")
    withExtendedLifetime(lock) {}
    let memory = try inputs.runs.map { p in
        let split = inputs.splits[p.data]!
        return estimatedRunBytes(try runSettings(inputs.options, split: split, lambda: p.lambda, d: inputs.d), evaluatedRows: split.eval.count)
    }.max() ?? 0
    return PlannedRuns(names: inputs.runs.map(\.name), memoryBytes: memory, trainingTokens: inputs.options.trainingSteps * o.batch,
                       inputFiles: inputs.readers.map(\.path))
}

/// The memory a run of a reproduction is given on a cluster: twice the
/// training buffers `RunRules` counts (a lower bound of a step's working
/// set: the batch's activation cache and the Jacobian's scratch come on
/// top), the final evaluation's forward files held at once (three
/// Jacobians of rows × k² floats and their x̂, ŷ, y), the evaluated rows'
/// x and y and their processed copies, and 512 MiB for the runtime,
/// OpenBLAS, HDF5 and the allocator's caches (a quick run's measured peak
/// is below this floor: docs/cluster.md).
public func estimatedRunBytes(_ s: TrainingSettings, evaluatedRows rows: Int) -> Double {
    let training = RunRules.trainingBytes(d: s.d, m: s.m, saes: 2, batch: s.config.batch, bufferBatches: s.bufferBatches, scalarBytes: 4)
    let n = Double(rows), k = Double(s.k), d = Double(s.d)
    let forwardFiles = 3 * n * (k * k + 3 * d + 4 * k) * 4
    let evaluatedRows = 4 * n * d * 4
    return 2 * training + forwardFiles + evaluatedRows + 512 * 1_048_576
}

/// `jsae reproduce --only RUN`: trains and evaluates one run of the plan in
/// OUT/plan.json, in OUT/runs/RUN, locked and resumable like any run, as
/// the monolithic reproduction trains it (same settings, same held-out
/// rows). Refused, naming the setting, when the options differ from the
/// plan's in anything; refused, naming the valid ones, for an unknown run.
public func reproduceOne(_ o: ReproduceOptions, layers: [Int]? = nil, run name: String, shouldStop: () -> Bool = { false },
                         log: @escaping (String) -> Void) throws -> RunSummary {
    let inputs = try ReproductionInputs(o, layers: layers)
    guard let p = inputs.runs.first(where: { $0.name == name }) else {
        throw JSAEError("--only \(name) is not a run of this reproduction; its runs are \(inputs.runs.map(\.name).joined(separator: ", "))")
    }
    try PlanRecord(inputs.planOptions, files: inputs.readers).requireSame(in: o.outDir, evaluationMayDiffer: false)
    // Per run, so that tasks on several nodes never write one file.
    let split = inputs.splits[p.data]!
    let eval = try split.evalSet(heldOutFile: o.outDir + "/data/heldout-\(p.data)-\(p.name).h5", processedEmulation: inputs.processedEmulation(p.data))
    var one = inputs.options
    one.runsAtOnce = 1
    let progress = PlanProgress([p], steps: one.trainingSteps, log: log)
    return try trainAndEvaluate(p, split: split, eval: eval, d: inputs.d, m: inputs.m, o: one, progress: progress, shouldStop: shouldStop)
}

/// Before `jsae reproduce --report-only` reports: the plan in OUT is this
/// one (evaluation settings may differ: finished runs are then evaluated
/// again from their models) and every run has finished. Otherwise one error
/// naming every unfinished or missing run; nothing is written.
public func requireFinishedRuns(_ o: ReproduceOptions, layers: [Int]? = nil) throws {
    let inputs = try ReproductionInputs(o, layers: layers)
    try PlanRecord(inputs.planOptions, files: inputs.readers).requireSame(in: o.outDir, evaluationMayDiffer: true)
    let unfinished = inputs.runs.map(\.name).filter { FinishedRun.read(o.outDir + "/runs/" + $0) == nil }
    guard unfinished.isEmpty else {
        throw JSAEError(file: o.outDir + "/runs", "unfinished or missing run\(unfinished.count == 1 ? "" : "s"): \(unfinished.joined(separator: ", ")) "
                        + "(run their --only commands first; nothing was written)")
    }
}
