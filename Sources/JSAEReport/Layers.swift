import Foundation
import JSAECore
import JSAEIO
import JSAERuns

/// One layer of the sweep: its JSAE and traditional pair on pre-trained data.
public struct LayerResult: Codable, Sendable {
    public var layer: Int
    public var data: DataFacts
    public var jsae: RunSummary
    public var traditional: RunSummary
    /// The German-text unit of this layer's pairs (paper §5.2), and its verdicts.
    public var german: GermanAnalysis? = nil
    public var germanVerdicts: [String]? = nil
}

public struct LayerSweepSummary: Codable, Sendable {
    public var options: [String: String]
    public var layers: [LayerResult]
    public var provenance: [String: String]
}

/// The per-layer sweep (`jsae reproduce --layers 0-5`): for each layer, the
/// activations file `pattern` with `{layer}` replaced, a JSAE pair and a
/// traditional pair trained and evaluated exactly as in the main
/// reproduction (same options, resumable, held-out evaluation), then one
/// table and plot over the layers in OUT/layers.md.
public func reproduceLayers(_ options: ReproduceOptions, layers: [Int], pattern: String, provenance: [String: String] = [:],
                            shouldStop: () -> Bool = { false }, log: @escaping (String) -> Void) throws -> LayerSweepSummary {
    let start = Date()
    // The files, d, k, λ, splits and every run's settings, checked before
    // any work by the rules the split stages use.
    var given = options
    given.pretrained = pattern
    let inputs = try ReproductionInputs(given, layers: layers)
    let o = inputs.options, plan = inputs.planOptions, readers = inputs.readers
    let d = inputs.d, m = inputs.m, lambda = inputs.lambda, runPlans = inputs.runs
    let splits = inputs.dataNames.map { inputs.splits[$0]! }
    let lock = try openReportFolder(plan, inputs: readers, log: log)
    defer { withExtendedLifetime(lock) {} }

    let progress = PlanProgress(runPlans, steps: o.trainingSteps, runsAtOnce: o.runsAtOnce, log: log)
    let evals = try layers.enumerated().map { i, layer in try splits[i].evalSet(heldOutFile: o.outDir + "/data/heldout-l\(layer).h5", processedEmulation: true) }
    let runs = try withRunThreads(o) { perRun in
        try runPlan(runPlans, runsAtOnce: o.runsAtOnce, shouldStop: shouldStop) { p, stop in
            let i = runPlans.firstIndex { $0.name == p.name }! / 2
            return try trainAndEvaluate(p, split: splits[i], eval: evals[i], d: d, m: m, o: perRun, progress: progress, shouldStop: stop)
        }
    }
    let results = try layers.indices.map { i in
        let (j, t) = (runs[2 * i], runs[2 * i + 1])
        let german = try germanAnalysis([j, t], names: [j.name, t.name], eval: evals[i], reader: readers[i], text: try TokenText.read(for: readers[i]), o: o)
        return LayerResult(layer: layers[i], data: splits[i].facts(evals[i]), jsae: j, traditional: t,
                           german: german, germanVerdicts: judgeGerman(german, jsae: j.name, traditional: t.name))
    }
    var prov = provenance
    prov["total wall seconds (this session)"] = String(format: "%.0f", Date().timeIntervalSince(start))
    prov["runs at once, OpenBLAS threads per run"] = "\(o.runsAtOnce), \(o.blasThreadsPerRun)"
    let summary = LayerSweepSummary(options: plan.resultDefining.merging(["lambda": "\(lambda)", "layers": layers.map(String.init).joined(separator: ",")],
                                                                          uniquingKeysWith: { $1 }),
                                    layers: results, provenance: prov)
    try writeJSON(summary, to: o.outDir + "/summary.json")

    let shares = Plots.lines([("JSAE", jsaeColor, results.map { (Double($0.layer), $0.jsae.headlineShare) }),
                              ("TRADITIONAL", tradColor, results.map { (Double($0.layer), $0.traditional.headlineShare) })],
                             references: [("PAPER L3", jsaeColor, 3, PaperFigures.jsaeShare), ("PAPER L3", tradColor, 3, PaperFigures.tradShare)],
                             title: "SHARE OF |J| > 0.01 BY LAYER (HELD-OUT)", xLabel: "LAYER", yLabel: "SHARE", percent: true, logX: false)
    try atomicWrite(shares, to: o.outDir + "/layers-shares.png")
    let ev = Plots.lines([("JSAE", jsaeColor, results.map { (Double($0.layer), $0.jsae.metrics.meanExplainedVariance) }),
                          ("TRADITIONAL", tradColor, results.map { (Double($0.layer), $0.traditional.metrics.meanExplainedVariance) })],
                         title: "MEAN EXPLAINED VARIANCE BY LAYER", xLabel: "LAYER", yLabel: "EV", percent: false, logX: false)
    try atomicWrite(ev, to: o.outDir + "/layers-ev.png")
    let report = renderLayersReport(summary, lambda: lambda, d: d, m: m, o: o)
    try atomicWrite(to: o.outDir + "/report.md") { try report.write(toFile: $0, atomically: false, encoding: .utf8) }
    log("wrote \(o.outDir)/report.md, summary.json, layers-shares.png, layers-ev.png")
    return summary
}

func renderLayersReport(_ s: LayerSweepSummary, lambda: Double, d: Int, m: Int, o: ReproduceOptions) -> String {
    func pct(_ v: Double) -> String { String(format: "%.1f%%", 100 * v) }
    func f3(_ v: Double) -> String { String(format: "%.3f", v) }
    let sh = { (r: RunSummary) in r.headlineShare }
    var r = "# JSAE reproduction: all layers\n\n"
    r += "Data: `\(s.options["pretrained"]!)` for layers \(s.options["layers"]!) (\(s.layers.first?.data.sourceModel ?? "unknown model"), pre-trained). "
    r += "Per layer, a JSAE pair (λ \(String(format: "%.4g", lambda)), the paper's rule 0.5·k²/d) and a traditional pair (λ 0): d \(d), m \(m) (expansion \(o.expansion)), k \(o.k), "
    r += "\(o.trainingSteps) steps of \(o.batch) tokens (\(o.trainingSteps * o.batch) tokens per run, one pass), lr \(o.lr), seed \(o.seed). "
    r += "Held-out tokens: the first \(o.evalTokens.map(String.init) ?? "all") of each file's held-out documents"
    r += o.excludeSpecial ? ", special-token rows left out of training and evaluation.\n\n" : ", special-token rows kept.\n\n"
    r += "The paper shows per-layer Jacobian sparsity for Pythia models; its layer-3 Pythia-70m figures (\(pct(PaperFigures.jsaeShare)) JSAE, \(pct(PaperFigures.tradShare)) traditional, after 100M tokens) are the only per-layer numbers in docs/jsae-spec.md, marked in the plot.\n\n"
    r += "| layer | JSAE > 0.01 | traditional > 0.01 | ratio | EV in / out JSAE | EV in / out traditional | dead in / out JSAE | training rows | wall JSAE / trad. |\n"
    r += "|---|---|---|---|---|---|---|---|---|\n"
    for l in s.layers {
        r += "| \(l.layer) | \(pct(sh(l.jsae))) | \(pct(sh(l.traditional))) | \(String(format: "%.1f×", sh(l.traditional) / max(sh(l.jsae), 1e-12))) | "
        let (j, t) = (l.jsae.metrics, l.traditional.metrics)
        r += "\(f3(j.explainedVarianceIn)) / \(f3(j.explainedVarianceOut)) | \(f3(t.explainedVarianceIn)) / \(f3(t.explainedVarianceOut)) | "
        r += "\(j.deadIn) / \(j.deadOut) | \(l.data.trainingRows) | \(l.jsae.wallSeconds.map { duration($0) } ?? "") / \(l.traditional.wallSeconds.map { duration($0) } ?? "") |\n"
    }
    r += "\n![shares by layer](layers-shares.png)\n\n![EV by layer](layers-ev.png)\n\n"
    r += "## A German-text computational unit per layer (paper §5.2)\n\n"
    r += "The rule and the criterion are the main report's: \(GermanRule.statement).\n\n"
    r += "| layer | pair | output latent | meets the rule | German precision | German recall | top-5 share of its \\|J\\| | top-5 inputs with German precision ≥ 80% |\n|---|---|---|---|---|---|---|---|\n"
    for l in s.layers {
        if let why = l.german?.unavailable { r += "| \(l.layer) | | not tested: \(why) | | | | | |\n"; continue }
        for u in l.german?.units ?? [] {
            r += "| \(l.layer) | \(u.run) | \(u.output.latent) | \(u.qualifies ? "yes" : "no (best F1)") | \(pct(u.output.precision)) | \(pct(u.output.recall)) | \(pct(u.topFiveShare)) | \(u.germanInputs) of 5 |\n"
        }
    }
    r += "\n" + s.layers.flatMap { l in (l.germanVerdicts ?? []).map { "- layer \(l.layer): " + $0 } }.joined(separator: "\n") + "\n\n"
    r += "## How this report was made\n\n| | |\n|---|---|\n"
    r += s.provenance.sorted { $0.key < $1.key }.map { "| \($0.key) | \($0.value.replacingOccurrences(of: "|", with: "\\|")) |" }.joined(separator: "\n") + "\n"
    return r
}
