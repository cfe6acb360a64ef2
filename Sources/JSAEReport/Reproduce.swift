import Foundation
import JSAECore
import JSAEIO
import JSAERuns

/// What `jsae reproduce` trains and evaluates.
public struct ReproduceOptions: Sendable {
    public var pretrained: String
    public var randomized: String
    public var outDir: String
    public var expansion = 8
    public var k = 32
    /// nil: the paper's rule 0.5·k²/d.
    public var lambda: Double? = nil
    public var batch = 256
    public var steps = 600
    /// Training tokens per run; when set, the run is one pass over distinct
    /// tokens (each seen at most once) of ceil(tokens/batch) steps, and
    /// `steps` is ignored.
    public var tokens: Int? = nil
    /// Training tokens at which each run is also evaluated on the held-out
    /// set (the scale curve); the end of training is always one.
    public var snapshotTokens: [Int] = []
    public var lr = 1e-3
    public var seed: UInt64 = 0
    /// Held-out share for files without `heldout_start_row` (exporter v1).
    public var heldOutFraction = 0.2
    /// Held-out tokens evaluated (the first ones, i.e. whole documents in
    /// the file's shuffled order); nil: all of them.
    public var evalTokens: Int? = nil
    /// Leave special-token rows ([CLS], [SEP], … from /text/special) out of
    /// training and evaluation.
    public var excludeSpecial = true
    /// Sampled connections per run and analysis variant for f_s linearity
    /// (the authors' variant takes whole tokens of k, so it rounds up to a
    /// multiple of k) and for ablation. Both are capped by the distinct
    /// samples the held-out tokens hold (tokens·k in the authors' variant);
    /// the report gives the totals taken.
    public var linearitySamples = 10_000
    public var ablationSamples = 100_000
    /// Extra λ values trained on the pre-trained data for the sweep plot.
    public var lambdaSweep: [Double] = []
    public var topConnections = 8
    /// Steps between checkpoints (a resumed run loses at most this many).
    public var checkpointEvery = 100
    /// Batches in the shuffling buffer (at most; a one-pass run takes fewer
    /// when whole buffers would run past the training rows).
    public var bufferBatches = 4
    /// "quick", "default" or "full": named in the report.
    public var mode = "default"
    /// Threads for the package's own loops; results do not depend on it.
    public var threads = Parallel.onlineCores
    /// Runs trained at the same time, each on threads / runsAtOnce of the
    /// package's workers (at least 1). A run's numbers depend neither on
    /// that count nor on the runs beside it (`GemmTiles`).
    /// Two 1-thread runs at once on 2 cores train faster than one 2-thread
    /// run after another (reproduce/README.md, "Time").
    public var runsAtOnce = 1
    public init(pretrained: String, randomized: String, outDir: String) {
        self.pretrained = pretrained; self.randomized = randomized; self.outDir = outDir
    }
    /// --quick: smaller SAEs, fewer steps and samples (CI).
    public mutating func makeQuick() {
        expansion = 4; steps = 80; linearitySamples = 320; ablationSamples = 3_200; topConnections = 4; mode = "quick"
    }
    /// --full: one pass over 4M distinct tokens per run at the paper's batch,
    /// learning rate and schedules, evaluated along the way (reproduce/README.md).
    public mutating func makeFull() {
        expansion = 8; k = 32; batch = 4096; lr = 5e-4; tokens = 4_000_000
        snapshotTokens = [250_000, 500_000, 1_000_000, 2_000_000]
        evalTokens = 65_536; bufferBatches = 16; checkpointEvery = 50; mode = "full"
    }

    /// OpenBLAS threads each run trains on: 1, since every product is tiled
    /// on the package's workers. plan.json records it, so that a plan whose
    /// runs trained on more is resumed with a note on the last bits.
    var blasThreadsPerRun: Int { BLASThreads.count }

    /// Optimizer steps per run.
    public var trainingSteps: Int { tokens.map { ($0 + batch - 1) / batch } ?? steps }
    /// Steps at which a snapshot is evaluated, ascending, ending with the last.
    public var snapshotSteps: [Int] {
        let n = trainingSteps
        return Array(Set(snapshotTokens.map { min(n, max(1, ($0 + batch - 1) / batch)) } + [n])).sorted()
    }

    /// Settings that decide only the final evaluation: a change re-evaluates
    /// finished runs from their models instead of refusing the folder.
    static let evaluationOnly: Set<String> = ["samples", "ablationSamples"]

    /// The final evaluation a finished run holds (`FinishedRun.evaluation`).
    var evaluationID: String {
        "v2: thresholds >, >= and the authors' histogram; linearity and ablation in the authors' and the x-hat variant "
            + "(\(linearitySamples), \(ablationSamples) samples); the processed-model emulation"
    }

    /// Everything that decides the numbers (not threads, paths of the
    /// output or the mode's name), for the resume check.
    var resultDefining: [String: String] {
        ["expansion": "\(expansion)", "k": "\(k)", "lambda": lambda.map { "\($0)" } ?? "paper rule", "batch": "\(batch)",
         "steps": "\(trainingSteps)", "tokens": tokens.map(String.init) ?? "-", "lr": "\(lr)", "seed": "\(seed)",
         "heldOutFraction": "\(heldOutFraction)", "evalTokens": evalTokens.map(String.init) ?? "all",
         "excludeSpecial": "\(excludeSpecial)", "samples": "\(linearitySamples)", "ablationSamples": "\(ablationSamples)", "lambdaSweep": lambdaSweep.map { "\($0)" }.joined(separator: ","),
         "snapshots": snapshotSteps.map(String.init).joined(separator: ","), "bufferBatches": "\(bufferBatches)",
         "pretrained": pretrained, "randomized": randomized]
    }
}

/// Facts about the data a report rests on.
public struct DataFacts: Codable, Sendable {
    public var file: String
    public var rows: Int
    public var heldOutStartRow: Int
    /// "file" (heldout_start_row, a document-level split) or "last 20%" style fallback.
    public var split: String
    public var trainingRows: Int
    public var evaluatedRows: Int
    /// Special-token rows left out of training and evaluation (nil: the file marks none).
    public var specialRowsExcluded: Int?
    /// Mean ‖x‖ over held-out special-token rows and over the others (nil without /text/special).
    public var meanNormSpecial: Double?, meanNormOther: Double?
    /// Mean ‖y‖²/d of the MLP output over the evaluated rows.
    public var outputMeanSquare: Double
    /// How the randomised control was drawn (`randomization_rule`, `randomization_std`; nil: not recorded or pre-trained).
    public var randomizationRule: String? = nil, randomizationStd: Double? = nil
    /// Tokens per model sequence at export (`max_length`).
    public var maxLength: Int? = nil
    public var textPackages: String?
    public var sourceModel: String?
    public var layer: Int?
}

public struct ReproduceSummary: Codable, Sendable {
    public var options: [String: String]
    public var heldOutTokens: Int
    public var runs: [RunSummary]
    public var verdicts: [String]
    public var trends: [String]? = nil
    public var data: [String: DataFacts]? = nil
    /// Commands, commit, machine, wall time: how to make this report again.
    public var provenance: [String: String]? = nil
    /// The German-text unit of the pre-trained pairs (paper §5.2).
    public var german: GermanAnalysis? = nil
    /// What the Protocol section measures about the differences from the authors' set-up.
    public var protocolMeasurements: ProtocolMeasurements? = nil
}

/// The run was stopped by a signal between steps; its checkpoint is on disk
/// and the same command resumes it.
public struct ReproduceInterrupted: Error, CustomStringConvertible, Sendable {
    public var run: String, step: Int, checkpoint: String
    /// Runs interrupted at the same time (runs at once > 1).
    public var others: [ReproduceInterrupted] = []
    public init(run: String, step: Int, checkpoint: String) { self.run = run; self.step = step; self.checkpoint = checkpoint }
    public var description: String {
        ([self] + others).map { "interrupted in \($0.run) at step \($0.step): checkpoint \($0.checkpoint)" }.joined(separator: "; ")
    }
}

public func reproduce(_ o: ReproduceOptions, provenance: [String: String] = [:], shouldStop: () -> Bool = { false },
                      log: @escaping (String) -> Void) throws -> ReproduceSummary {
    let start = Date()
    let inputs = try ReproductionInputs(o)
    let pre = inputs.readers[0], d = inputs.d, m = inputs.m, lambda = inputs.lambda, splits = inputs.splits, plan = inputs.runs
    let text = try TokenText.read(for: pre)   // checked now, used only at the end

    let lock = try openReportFolder(o, inputs: inputs.readers, log: log)
    defer { withExtendedLifetime(lock) {} }

    var evalSets: [String: EvalSet] = [:]
    for (name, s) in splits {
        evalSets[name] = try s.evalSet(heldOutFile: o.outDir + "/data/heldout-\(name).h5", processedEmulation: name == "pretrained")
    }
    let progress = PlanProgress(plan, steps: o.trainingSteps, runsAtOnce: o.runsAtOnce, log: log)
    let runs = try withRunThreads(o) { perRun in
        try runPlan(plan, runsAtOnce: o.runsAtOnce, shouldStop: shouldStop) { p, stop in
            try trainAndEvaluate(p, split: splits[p.data]!, eval: evalSets[p.data]!, d: d, m: m, o: perRun, progress: progress, shouldStop: stop)
        }
    }

    let german = try germanAnalysis(runs, eval: evalSets["pretrained"]!, reader: pre, text: text, o: o)
    let measured = try protocolMeasurements(runs, splits: splits, evalSets: evalSets, o: o)
    let main = try MainRuns(runs)
    let verdicts = judge(main) + judgeGerman(german)
    let trends = o.snapshotSteps.count > 1 ? judgeTrends(main) : []
    var prov = provenance
    prov["total wall seconds (this session)"] = String(format: "%.0f", Date().timeIntervalSince(start))
    prov["runs at once, OpenBLAS threads per run"] = "\(o.runsAtOnce), \(o.blasThreadsPerRun)"
    let summary = ReproduceSummary(
        options: o.resultDefining.merging(["lambda": "\(lambda)", "mode": o.mode], uniquingKeysWith: { $1 }),
        heldOutTokens: evalSets["pretrained"]!.rows.count, runs: runs, verdicts: verdicts, trends: trends,
        data: Dictionary(uniqueKeysWithValues: splits.map { ($0.key, $0.value.facts(evalSets[$0.key]!)) }), provenance: prov,
        german: german, protocolMeasurements: measured)
    try writeJSON(summary, to: o.outDir + "/summary.json")

    try writePlots(runs, o: o)
    if o.snapshotSteps.count > 1 { try writeScalePlots(runs, o: o) }
    if !german.units.isEmpty { try writeGermanPlot(german, o: o) }
    let model: JSAEModel<Float> = try ModelFile.read(o.outDir + "/runs/jsae-pretrained/model.h5")
    let connections = try strongestConnections(model, run: runs[0], eval: evalSets["pretrained"]!, text: text, o: o)
    let report = renderReport(summary, lambda: lambda, d: d, m: m, o: o, connections: connections)
    try atomicWrite(to: o.outDir + "/report.md") { try report.write(toFile: $0, atomically: false, encoding: .utf8) }
    log("wrote \(o.outDir)/report.md, summary.json, plots; forward files in \(o.outDir)/forward")
    return summary
}

/// Runs `body` with the options each of `o.runsAtOnce` concurrent runs
/// gets: threads / runsAtOnce worker threads (at least 1).
func withRunThreads<R>(_ o: ReproduceOptions, _ body: (ReproduceOptions) throws -> R) rethrows -> R {
    guard o.runsAtOnce > 1 else { return try body(o) }
    var perRun = o
    perRun.threads = max(1, o.threads / o.runsAtOnce)
    return try body(perRun)
}

extension JSONEncoder {
    static var sortedPretty: JSONEncoder { let e = JSONEncoder(); e.outputFormatting = [.prettyPrinted, .sortedKeys]; return e }
}

/// `value` as sorted, indented JSON, written atomically.
func writeJSON<E: Encodable>(_ value: E, to path: String) throws {
    try atomicWrite(try JSONEncoder.sortedPretty.encode(value), to: path)
}
