import Foundation
import JSAECore
import JSAEIO

func writePlots(_ runs: [RunSummary], o: ReproduceOptions) throws {
    func run(_ n: String) -> RunSummary { runs.first { $0.name == n }! }
    func absJ(_ r: RunSummary) throws -> [Double] {
        try ForwardFile<Float>(r.forwardFiles["trueInput"]!).jacobian!.map { Double(abs($0)) }
    }
    let dist = Plots.jacobianDistribution(
        [("JSAE", jsaeColor, try absJ(run("jsae-pretrained"))), ("TRADITIONAL", tradColor, try absJ(run("traditional-pretrained")))],
        title: "|J| PRE-TRAINED, HELD-OUT, TRUE INPUT")
    try atomicWrite(to: o.outDir + "/jacobian-distribution.png") { try dist.write(to: URL(fileURLWithPath: $0)) }
    let s = { (r: RunSummary) in r.shares["trueInput"]![1] }
    let bars = Plots.groupedBars([
        ("PRE-TRAINED", [("JSAE", jsaeColor, s(run("jsae-pretrained"))), ("TRADITIONAL", tradColor, s(run("traditional-pretrained")))]),
        ("RANDOMISED", [("JSAE", jsaeColor, s(run("jsae-randomized"))), ("TRADITIONAL", tradColor, s(run("traditional-randomized")))]),
    ], title: "SHARE OF |J| > 0.01", yLabel: "SHARE")
    try atomicWrite(to: o.outDir + "/sparsity-bars.png") { try bars.write(to: URL(fileURLWithPath: $0)) }
    let sweep = runs.filter { $0.data == "pretrained" }.sorted { $0.lambda < $1.lambda }
        .map { (String(format: "L=%.2g", $0.lambda), s($0), ($0.explainedVarianceIn + $0.explainedVarianceOut) / 2) }
    let sc = Plots.scatter(sweep, title: "SPARSITY VS RECONSTRUCTION (L = LAMBDA)", xLabel: "SHARE OF |J| > 0.01", yLabel: "MEAN EXPLAINED VARIANCE")
    try atomicWrite(to: o.outDir + "/lambda-sweep.png") { try sc.write(to: URL(fileURLWithPath: $0)) }
}

/// One strong input→output connection and each latent's top tokens in context.
struct Connection {
    var input: Int, output: Int, meanAbsJ: Double
    var inputExamples: [String], outputExamples: [String]
}

func strongestConnections(_ model: JSAEModel<Float>, run: RunSummary, reader: ActivationsReader, o: ReproduceOptions) throws -> [Connection] {
    let f = try ForwardFile<Float>(run.forwardFiles["trueInput"]!)
    let k = f.k, T = f.xHat.rows
    var sums: [Int: Double] = [:]   // key: input * m + output
    let m = model.saeOut!.m
    for b in 0..<T {
        for q in 0..<k { for p in 0..<k {
            sums[f.inIndices[b * k + p] * m + f.outIndices![b * k + q], default: 0] += Double(abs(f.jacobian![b * k * k + q * k + p]))
        } }
    }
    let top = sums.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.prefix(o.topConnections)

    // Top-activating tokens over the whole pre-trained file.
    let x: Matrix<Float> = try reader.x(0..<reader.tokens)
    let codesIn = model.saeIn.encode(x), codesOut = model.saeOut!.encode(model.mlp!.forward(x).y)
    let side = try readTokenSidecar(for: reader)
    let tokens = side?.tokens, docs = side?.documents
    func examples(_ codes: SparseCodes<Float>, _ latent: Int) -> [String] {
        var hits: [(Float, Int)] = []
        for b in 0..<codes.tokens { for j in 0..<codes.k where codes.indices[b * codes.k + j] == latent && codes.values[b * codes.k + j] > 0 {
            hits.append((codes.values[b * codes.k + j], b)) } }
        return hits.sorted { $0.0 > $1.0 }.prefix(3).map { v, b in
            guard let tokens, let docs else { return String(format: "token %d (%.2f)", b, v) }
            let ctx = (max(0, b - 6)...min(tokens.count - 1, b + 3)).filter { docs[$0] == docs[b] }
            let text = ctx.map { $0 == b ? "**" + tokens[$0] + "**" : tokens[$0] }.joined(separator: " ").replacingOccurrences(of: " ##", with: "")
            return String(format: "%.2f: ", v) + text.replacingOccurrences(of: "|", with: "\\|")
        }
    }
    return top.map { key, sum in
        Connection(input: key / m, output: key % m, meanAbsJ: sum / Double(T),
                   inputExamples: examples(codesIn, key / m), outputExamples: examples(codesOut, key % m))
    }
}

func renderReport(_ s: ReproduceSummary, lambda: Double, d: Int, m: Int, o: ReproduceOptions, connections: [Connection]) -> String {
    func pct(_ v: Double) -> String { String(format: "%.1f%%", 100 * v) }
    func f3(_ v: Double) -> String { String(format: "%.3f", v) }
    let main = s.runs.filter { !$0.name.hasPrefix("sweep") }
    let paper: [String: (Double, String)] = [
        "jsae-pretrained": (PaperFigures.jsaeShare, "11.3%"), "traditional-pretrained": (PaperFigures.tradShare, "68.8%"),
        "jsae-randomized": (PaperFigures.jsaeShareRandom, "33.6%"), "traditional-randomized": (PaperFigures.tradShareRandom, "86.9%"),
    ]
    var r = "# JSAE reproduction report\n\n"
    r += "Data: `\(s.options["pretrained"]!)` and its randomised control `\(s.options["randomized"]!)`; "
    r += "\(s.heldOutTokens) held-out tokens per model (the last \(Int(o.heldOutFraction * 100))% of each file) for every number below.\n"
    r += "SAEs: d \(d), m \(m) (expansion \(o.expansion)), k \(o.k); JSAE λ \(String(format: "%.4g", lambda)) (\(o.lambda == nil ? "the paper's rule 0.5·k²/d" : "given")), traditional λ 0; "
    r += "\(o.steps) steps of \(o.batch) tokens, lr \(o.lr), seed \(o.seed), the paper's schedules. "
    r += "Paper figures are Pythia-70m layer 3 (jsae-spec.md); this is a different, smaller model and far less data, so compare directions, not digits.\n\n"
    r += "## Verdicts\n\n" + s.verdicts.map { "- " + $0 }.joined(separator: "\n") + "\n\n"
    r += "## Jacobian sparsity (share of |J| above each threshold, held-out tokens)\n\n"
    r += "| run | point | > 0.005 | > 0.01 | > 0.015 | > 0.02 | paper, > 0.01 |\n|---|---|---|---|---|---|---|\n"
    for run in main {
        for point in ["trueInput", "reconstruction"] {
            let sh = run.shares[point]!
            r += "| \(run.name) | \(point) | \(sh.map(pct).joined(separator: " | ")) | \(point == "trueInput" ? (paper[run.name]?.1 ?? "") : "") |\n"
        }
    }
    r += "\n`trueInput`: J at the true MLP input (the training loss); `reconstruction`: J of the paper's f_s at x̂.\n\n"
    r += "## Reconstruction (held-out, true input)\n\n"
    r += "| run | EV in | EV out | MSE in | MSE out | L0 in | L0 out | dead in | dead out |\n|---|---|---|---|---|---|---|---|---|\n"
    for run in main {
        r += "| \(run.name) | \(f3(run.explainedVarianceIn)) | \(f3(run.explainedVarianceOut)) | \(String(format: "%.4g", run.mseIn)) | "
        r += "\(String(format: "%.4g", run.mseOut)) | \(String(format: "%.1f", run.l0In)) | \(String(format: "%.1f", run.l0Out)) | \(run.deadIn) | \(run.deadOut) |\n"
    }
    r += "\nDead: latents never active on the held-out tokens (of \(m)).\n\n"
    r += "## f_s linearity and ablation (\(o.samples) sampled connections per run, at x̂)\n\n"
    r += "| run | linear | JumpReLU | other | ablation agrees | paper |\n|---|---|---|---|---|---|\n"
    for run in main {
        let l = run.linearity
        let p = run.name == "jsae-pretrained" ? "86.8 / 10.4 / 2.8%; ablation 97.5%" : (run.name == "traditional-pretrained" ? "71.9 / 14.5 / 13.6%" : "")
        r += "| \(run.name) | \(pct(l["linear"] ?? 0)) | \(pct(l["JumpReLU"] ?? 0)) | \(pct(l["other"] ?? 0)) | \(pct(run.ablationAgreement)) | \(p) |\n"
    }
    let sweep = s.runs.filter { $0.data == "pretrained" }.sorted { $0.lambda < $1.lambda }
    if sweep.count > 2 {
        r += "\n## λ sweep (pre-trained)\n\n| λ | > 0.01 | mean EV |\n|---|---|---|\n"
        for run in sweep { r += "| \(String(format: "%g", run.lambda)) | \(pct(run.shares["trueInput"]![1])) | \(f3((run.explainedVarianceIn + run.explainedVarianceOut) / 2)) |\n" }
        r += "\nPaper (Pythia-70m): 51% / 21% / 8.2% / 4.2% at λ = 0.01 / 0.5 / 1 / 3.\n"
    }
    r += "\n## Plots\n\n![|J| distribution](jacobian-distribution.png)\n\n![sparsity](sparsity-bars.png)\n\n![lambda sweep](lambda-sweep.png)\n\n"
    r += "## Strongest connections (JSAE, pre-trained: largest mean |J| over held-out tokens)\n\n"
    r += "Each latent's top-activating tokens over the whole sample, in context (**token**).\n\n"
    for c in connections {
        r += "- input \(c.input) → output \(c.output): mean |J| \(String(format: "%.4f", c.meanAbsJ))\n"
        r += c.inputExamples.map { "  - in \(c.input): " + $0 }.joined(separator: "\n") + "\n"
        r += c.outputExamples.map { "  - out \(c.output): " + $0 }.joined(separator: "\n") + "\n"
    }
    r += "\nNumbers come from the forward files in `forward/` (kind `forward`, one per run and evaluation point) and are repeated in `summary.json`.\n"
    return r
}
