import Foundation
import JSAECore
import JSAEIO

func writePlots(_ runs: [RunSummary], o: ReproduceOptions) throws {
    let main = try MainRuns(runs)
    func absJ(_ r: RunSummary) throws -> [Double] {
        guard let path = r.forwardFiles[.trueInput] else { throw JSAEError("\(r.name) names no true-input forward file") }
        let f = try ForwardFile<Float>(path)
        guard let J = f.jacobian else { throw JSAEError(file: path, "holds no Jacobian") }
        return J.map { Double(abs($0)) }
    }
    let dist = Plots.jacobianDistribution(
        [("JSAE", jsaeColor, try absJ(main.jsaePretrained)), ("TRADITIONAL", tradColor, try absJ(main.traditionalPretrained))],
        title: "|J| PRE-TRAINED, HELD-OUT, TRUE INPUT")
    try atomicWrite(dist, to: o.outDir + "/jacobian-distribution.png")
    let bars = Plots.groupedBars([
        ("PRE-TRAINED", [("JSAE", jsaeColor, main.jsaePretrained.headlineShare), ("TRADITIONAL", tradColor, main.traditionalPretrained.headlineShare)]),
        ("RANDOMISED", [("JSAE", jsaeColor, main.jsaeRandomized.headlineShare), ("TRADITIONAL", tradColor, main.traditionalRandomized.headlineShare)]),
    ], title: "SHARE OF |J| > 0.01", yLabel: "SHARE")
    try atomicWrite(bars, to: o.outDir + "/sparsity-bars.png")
    let sweep = runs.filter { $0.data == RunID.Data.pretrained.key }.sorted { $0.lambda < $1.lambda }
        .map { (String(format: "L=%.2g", $0.lambda), $0.headlineShare, $0.metrics.meanExplainedVariance) }
    let sc = Plots.scatter(sweep, title: "SPARSITY VS RECONSTRUCTION (L = LAMBDA)", xLabel: "SHARE OF |J| > 0.01", yLabel: "MEAN EXPLAINED VARIANCE")
    try atomicWrite(sc, to: o.outDir + "/lambda-sweep.png")
}

/// The scale curve's plots: share of |J| > 0.01, the traditional/JSAE
/// ratio and the mean explained variance against training tokens, with the
/// paper's endpoint (100M tokens) beside them.
func writeScalePlots(_ runs: [RunSummary], o: ReproduceOptions) throws {
    func curve(_ id: RunID) -> [Snapshot] { runs[id]?.snapshots ?? [] }
    let names: [(String, RGB, RunID)] = [("JSAE PRE-TRAINED", jsaeColor, .jsaePretrained), ("TRADITIONAL PRE-TRAINED", tradColor, .traditionalPretrained),
                                         ("JSAE RANDOMISED", jsaeLight, .jsaeRandomized), ("TRADITIONAL RANDOMISED", tradLight, .traditionalRandomized)]
    let paperTokens = Double(PaperFigures.tokens)
    let shares = Plots.lines(names.map { ($0.0, $0.1, curve($0.2).map { (Double($0.tokens), $0.shares.headline) }) },
                             references: [("PAPER", jsaeColor, paperTokens, PaperFigures.jsaeShare), ("PAPER", tradColor, paperTokens, PaperFigures.tradShare),
                                          ("PAPER", jsaeLight, paperTokens, PaperFigures.jsaeShareRandom), ("PAPER", tradLight, paperTokens, PaperFigures.tradShareRandom)],
                             title: "SHARE OF |J| > 0.01 VS TRAINING TOKENS (HELD-OUT)", xLabel: "TRAINING TOKENS", yLabel: "SHARE", percent: true)
    try atomicWrite(shares, to: o.outDir + "/scale-shares.png")
    func ratio(_ t: RunID, _ j: RunID) -> [(Double, Double)] {
        zip(curve(t), curve(j)).map { (Double($1.tokens), $0.shares.headline / max($1.shares.headline, 1e-12)) }
    }
    let ratios = Plots.lines([("PRE-TRAINED", jsaeColor, ratio(.traditionalPretrained, .jsaePretrained)),
                              ("RANDOMISED", jsaeLight, ratio(.traditionalRandomized, .jsaeRandomized))],
                             references: [("PAPER", jsaeColor, paperTokens, PaperFigures.ratio),
                                          ("PAPER", jsaeLight, paperTokens, PaperFigures.ratioRandom)],
                             title: "TRADITIONAL / JSAE SHARE OF |J| > 0.01", xLabel: "TRAINING TOKENS", yLabel: "RATIO", percent: false)
    try atomicWrite(ratios, to: o.outDir + "/scale-ratio.png")
    let ev = Plots.lines(names.map { ($0.0, $0.1, curve($0.2).map { (Double($0.tokens), $0.metrics.meanExplainedVariance) }) },
                         title: "MEAN EXPLAINED VARIANCE (IN, OUT) VS TRAINING TOKENS", xLabel: "TRAINING TOKENS", yLabel: "EV", percent: false)
    try atomicWrite(ev, to: o.outDir + "/scale-ev.png")
}

let jsaeLight: RGB = (140, 190, 230), tradLight: RGB = (250, 190, 130)

/// Each connection with its latents' top tokens, as a Markdown list.
func renderConnections(_ connections: [Connection]) -> String {
    connections.map { c in
        "- input \(c.input) → output \(c.output): mean |J| \(String(format: "%.4f", c.meanAbsJ))\n"
            + c.inputExamples.map { "  - in \(c.input): " + $0 }.joined(separator: "\n") + "\n"
            + c.outputExamples.map { "  - out \(c.output): " + $0 }.joined(separator: "\n") + "\n"
    }.joined()
}

/// A latent's 3 top-activating evaluated tokens, in context (or row numbers without text).
/// - indices, values: [tokens, k] codes of the evaluated rows `rows`
func topExamples(indices: [Int], values: [Float], k: Int, latent: Int, rows: RowSelection, text: TokenText?) -> [String] {
    var hits: [(Float, Int)] = []
    for b in 0..<(indices.count / k) {
        for j in 0..<k where indices[b * k + j] == latent && values[b * k + j] > 0 { hits.append((values[b * k + j], b)) }
    }
    return hits.sorted { $0.0 != $1.0 ? $0.0 > $1.0 : $0.1 < $1.1 }.prefix(3).map { v, b in
        let row = rows[b]
        guard let text else { return String(format: "row %d (%.2f)", row, v) }
        return String(format: "%.2f: ", v) + text.context(row)
    }
}

/// One strong input→output connection and each latent's top tokens in context.
struct Connection {
    var input: Int, output: Int, meanAbsJ: Double
    var inputExamples: [String], outputExamples: [String]
}

/// The largest mean |J| over the evaluated held-out tokens, from the run's
/// forward file, and each latent's top-activating evaluated tokens (their
/// codes are in the same file, so nothing is recomputed or loaded whole).
func strongestConnections(_ model: JSAEModel<Float>, run: RunSummary, eval: EvalSet, text: TokenText?, o: ReproduceOptions) throws -> [Connection] {
    guard let path = run.forwardFiles[.trueInput] else { throw JSAEError("\(run.name) names no true-input forward file") }
    let f = try ForwardFile<Float>(path)
    guard let J = f.jacobian, let outIdx = f.outIndices, let outValues = f.outValues, let saeOut = model.saeOut else {
        throw JSAEError(file: path, "holds no Jacobian or output codes")
    }
    let k = f.k, T = f.xHat.rows, mIn = model.saeIn.m, mOut = saeOut.m
    // A dense mIn × mOut table when it is small enough (16M entries), else a dictionary.
    var dense = mIn * mOut <= 1 << 24 ? [Double](repeating: 0, count: mIn * mOut) : []
    var sparse: [Int: Double] = [:]
    for b in 0..<T {
        for q in 0..<k { for p in 0..<k {
            let key = f.inIndices[b * k + p] * mOut + outIdx[b * k + q], v = Double(abs(J[b * k * k + q * k + p]))
            if dense.isEmpty { sparse[key, default: 0] += v } else { dense[key] += v }
        } }
    }
    let pairs = dense.isEmpty ? Array(sparse) : dense.enumerated().filter { $0.element > 0 }.map { ($0.offset, $0.element) }
    let top = pairs.sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }.prefix(o.topConnections)

    func examples(_ indices: [Int], _ values: [Float], _ latent: Int) -> [String] {
        topExamples(indices: indices, values: values, k: k, latent: latent, rows: eval.rows, text: text)
    }
    return top.map { key, sum in
        Connection(input: key / mOut, output: key % mOut, meanAbsJ: sum / Double(T),
                   inputExamples: examples(f.inIndices, f.inValues, key / mOut), outputExamples: examples(outIdx, outValues, key % mOut))
    }
}

func renderReport(_ s: ReproduceSummary, lambda: Double, d: Int, m: Int, o: ReproduceOptions, connections: [Connection]) -> String {
    func pct(_ v: Double) -> String { String(format: "%.1f%%", 100 * v) }
    func f3(_ v: Double) -> String { String(format: "%.3f", v) }
    func g4(_ v: Double) -> String { String(format: "%.4g", v) }
    let main = RunID.main.compactMap { s.runs[$0] }
    let pre = s.data?["pretrained"]
    var r = "# JSAE reproduction report (\(o.mode) mode)\n\n"
    r += "Data: `\(s.options["pretrained"]!)` and its randomised control `\(s.options["randomized"]!)`"
    if let pre { r += " (\(pre.sourceModel ?? "unknown model"), layer \(pre.layer.map(String.init) ?? "?"))" }
    r += ". Every number below is measured on \(s.heldOutTokens) held-out tokens per model"
    if let pre { r += ", the first of the held-out rows (split: \(pre.split), from row \(pre.heldOutStartRow))" }
    r += ".\n\n"
    r += "SAEs: d \(d), m \(m) (expansion \(o.expansion)), k \(o.k); JSAE λ \(String(format: "%.4g", lambda)) (\(o.lambda == nil ? "the paper's rule 0.5·k²/d" : "given")), traditional λ 0; "
    r += "\(o.trainingSteps) steps of \(o.batch) tokens (\(o.trainingSteps * o.batch) tokens per run), lr \(o.lr), seed \(o.seed), the paper's schedules"
    r += o.tokens != nil ? " (one pass: no training token is seen twice).\n" : ".\n"
    r += "Paper figures are Pythia-70m layer 3 after 100M tokens (docs/jsae-spec.md); this is a different, smaller model and far less data, so compare directions, not digits.\n\n"
    if let data = s.data {
        r += "## Data\n\n| data | file | rows | training rows | evaluated rows | special-token rows left out | mean ‖x‖ special / other | mean y²/d |\n|---|---|---|---|---|---|---|---|\n"
        for name in ["pretrained", "randomized"] {
            guard let f = data[name] else { continue }
            let norms = f.meanNormSpecial.map { sp in String(format: "%.2f / %.2f", sp, f.meanNormOther ?? .nan) } ?? "n/a"
            r += "| \(name) | `\(f.file)` | \(f.rows) | \(f.trainingRows) | \(f.evaluatedRows) | \(f.specialRowsExcluded.map(String.init) ?? "none marked") | \(norms) | \(g4(f.outputMeanSquare)) |\n"
        }
        if let pkgs = pre?.textPackages { r += "\nText: \(pkgs).\n" }
        r += o.excludeSpecial
            ? "\nSpecial-token positions ([CLS], [SEP]; `/text/special`) are left out of training and evaluation (`--include-special` keeps them): they are sequence markers, not text, and their MLP inputs are outliers in norm (table), as a BOS position is in GPT-style models, which SAE practice drops (SAELens: `exclude_special_tokens`).\n\n"
            : "\nSpecial-token positions are kept (`--include-special`).\n\n"
    }
    r += "## Verdicts\n\n" + s.verdicts.map { "- " + $0 }.joined(separator: "\n") + "\n\n"
    if let trends = s.trends, !trends.isEmpty { r += "### Trends along the scale curve\n\n" + trends.map { "- " + $0 }.joined(separator: "\n") + "\n\n" }
    r += renderProtocol(s, o: o)
    r += "## Jacobian sparsity (share of |J| above each threshold, held-out tokens)\n\n"
    r += "| run | point | > 0.005 | > 0.01 | > 0.015 | > 0.02 | paper, > 0.01 |\n|---|---|---|---|---|---|---|\n"
    for run in main {
        for point in EvaluationPoint.allCases {
            let sh = run.shares[EvaluationKey(point)]?.values.map(pct) ?? Array(repeating: "", count: JacobianThreshold.allCases.count)
            let paper = point == .trueInput ? RunID(name: run.name).flatMap(PaperFigures.share).map(pct) ?? "" : ""
            r += "| \(run.name) | \(point.rawValue) | \(sh.joined(separator: " | ")) | \(paper) |\n"
        }
    }
    r += "\n`trueInput`: J at the true MLP input (the training loss); `reconstruction`: J of the paper's f_s at x̂.\n\n"
    r += renderThresholdCounts(s.runs)
    r += "## Reconstruction (held-out, true input)\n\n"
    r += "| run | EV in | EV out | MSE in | MSE out | L0 in | L0 out | dead in | dead out |\n|---|---|---|---|---|---|---|---|---|\n"
    for run in main {
        let x = run.metrics
        r += "| \(run.name) | \(f3(x.explainedVarianceIn)) | \(f3(x.explainedVarianceOut)) | \(g4(x.mseIn)) | "
        r += "\(g4(x.mseOut)) | \(String(format: "%.1f", x.l0In)) | \(String(format: "%.1f", x.l0Out)) | \(x.deadIn) | \(x.deadOut) |\n"
    }
    r += "\nDead: latents never active on the held-out tokens (of \(m)).\n\n"
    if main.allSatisfy({ $0.snapshots != nil }) {
        r += "## Scale curve (held-out, true input)\n\n"
        r += "| tokens | JSAE > 0.01 | traditional > 0.01 | ratio | EV in / out JSAE | EV in / out traditional | JSAE rnd > 0.01 | trad. rnd > 0.01 | ratio rnd | EV out JSAE rnd / trad. rnd |\n"
        r += "|---|---|---|---|---|---|---|---|---|---|\n"
        func curve(_ id: RunID) -> [Snapshot] { s.runs[id]?.snapshots ?? [] }
        let jp = curve(.jsaePretrained), tp = curve(.traditionalPretrained), jr = curve(.jsaeRandomized), tr = curve(.traditionalRandomized)
        let times = PaperFigures.times
        for i in 0..<min(jp.count, tp.count, jr.count, tr.count) {
            let (j, t, jrm, trm) = (jp[i].metrics, tp[i].metrics, jr[i].metrics, tr[i].metrics)
            let (js, ts, jrs, trs) = (jp[i].shares.headline, tp[i].shares.headline, jr[i].shares.headline, tr[i].shares.headline)
            r += "| \(jp[i].tokens) | \(pct(js)) | \(pct(ts)) | \(times(ts / max(js, 1e-12))) | "
            r += "\(f3(j.explainedVarianceIn)) / \(f3(j.explainedVarianceOut)) | \(f3(t.explainedVarianceIn)) / \(f3(t.explainedVarianceOut)) | "
            r += "\(pct(jrs)) | \(pct(trs)) | \(times(trs / max(jrs, 1e-12))) | "
            r += "\(f3(jrm.explainedVarianceOut)) / \(f3(trm.explainedVarianceOut)) |\n"
        }
        r += "| paper, 100M | \(pct(PaperFigures.jsaeShare)) | \(pct(PaperFigures.tradShare)) | \(times(PaperFigures.ratio)) | | | "
        r += "\(pct(PaperFigures.jsaeShareRandom)) | \(pct(PaperFigures.tradShareRandom)) | \(times(PaperFigures.ratioRandom)) | |\n\n"
        r += "Snapshots are the same runs part-way through their schedule (learning rate not yet decayed), not separate shorter runs.\n\n"
        r += "![shares](scale-shares.png)\n\n![ratio](scale-ratio.png)\n\n![EV](scale-ev.png)\n\n"
    }
    if let data = s.data, let jp = s.runs[.jsaePretrained], let jr = s.runs[.jsaeRandomized],
       let jl = jp.metrics.jacobianL1, let jrl = jr.metrics.jacobianL1 {
        r += "## The randomised control's scale\n\n"
        r += "λ multiplies a Jacobian term whose size does not scale with the MLP's output, while the reconstruction terms do. "
        r += "If the randomised model's outputs are much smaller, the same λ weighs the Jacobian far more heavily there:\n\n"
        r += "| JSAE run | mean y²/d | MSE out | Jacobian term Σ\\|J\\|/(B·k²) | λ × term | λ × term / MSE out |\n|---|---|---|---|---|---|\n"
        for (run, l1, key) in [(jp, jl, RunID.Data.pretrained.key), (jr, jrl, RunID.Data.randomized.key)] {
            let mse = run.metrics.mseOut
            r += "| \(run.name) | \(g4(data[key]?.outputMeanSquare ?? .nan)) | \(g4(mse)) | \(g4(l1)) | \(g4(lambda * l1)) | \(g4(lambda * l1 / max(mse, 1e-30))) |\n"
        }
        r += "\n"
    }
    r += renderConnectionAnalyses(s.runs)
    r += renderProcessed(s.runs)
    if let g = s.german { r += renderGerman(g) }
    let sweep = s.runs.filter { $0.data == RunID.Data.pretrained.key }.sorted { $0.lambda < $1.lambda }
    if sweep.count > 2 {
        r += "\n## λ sweep (pre-trained)\n\n| λ | > 0.01 | mean EV |\n|---|---|---|\n"
        for run in sweep { r += "| \(String(format: "%g", run.lambda)) | \(pct(run.headlineShare)) | \(f3(run.metrics.meanExplainedVariance)) |\n" }
        r += "\nPaper (Pythia-70m): \(PaperFigures.sweepLine).\n"
    }
    r += "\n## Plots\n\n![|J| distribution](jacobian-distribution.png)\n\n![sparsity](sparsity-bars.png)\n\n![lambda sweep](lambda-sweep.png)\n\n"
    r += "## Strongest connections (JSAE, pre-trained: largest mean |J| over held-out tokens)\n\n"
    r += "Each latent's top-activating evaluated tokens, in context (**token**).\n\n"
    r += renderConnections(connections)
    if let prov = s.provenance, !prov.isEmpty {
        r += "\n## How this report was made\n\n"
        r += "| | |\n|---|---|\n" + prov.sorted { $0.key < $1.key }.map { "| \($0.key) | \($0.value.replacingOccurrences(of: "|", with: "\\|")) |" }.joined(separator: "\n") + "\n"
        r += "\n| run | steps | tokens | training rows | epochs | wall time |\n|---|---|---|---|---|---|\n"
        for run in s.runs {
            r += "| \(run.name) | \(run.steps.map(String.init) ?? "") | \(run.trainedTokens.map(String.init) ?? "") | \(run.trainingRows.map(String.init) ?? "") | "
            r += "\(run.epochs.map { String(format: "%.3f", $0) } ?? "") | \(run.wallSeconds.map { duration($0) } ?? "") |\n"
        }
    }
    r += "\nNumbers come from the forward files in `forward/` (kind `forward`, one per run and evaluation point; not committed) and are repeated in `summary.json`.\n"
    return r
}
