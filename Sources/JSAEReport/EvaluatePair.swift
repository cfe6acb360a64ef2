import Foundation
import JSAECore
import JSAEIO
import JSAERuns

/// What `jsae evaluate` measures on one pair.
public struct EvaluateOptions: Codable, Sendable, Equatable {
    /// Rows evaluated at most: the first held-out ones, in file order.
    public var evalTokens = 65_536
    /// Leave special-token rows (/text/special) out.
    public var excludeSpecial = true
    /// Sampled connections per analysis variant for f_s linearity and for ablation (as `ReproduceOptions`).
    public var linearitySamples = 10_000
    public var ablationSamples = 100_000
    /// λ of the loss figure only (nil: the paper's rule 0.5·k²/d); nothing is trained.
    public var lambda: Double? = nil
    public var seed: UInt64 = 0
    /// Threads for the package's own loops; results do not depend on it.
    public var threads = Parallel.onlineCores
    public var topConnections = 8
    public init() {}
}

/// The inputs of an evaluation folder, as given and by content: the folder's
/// identity (`inputs.json`), so that a folder is only ever reused for the same pair and data.
public struct EvaluationInputs: Codable, Sendable, Equatable {
    public var model: String, activations: String
    public var modelFingerprint: String, activationsFingerprint: String

    func sameContent(_ o: EvaluationInputs) -> Bool {
        modelFingerprint == o.modelFingerprint && activationsFingerprint == o.activationsFingerprint
    }
}

/// Everything `jsae evaluate` measured, also in OUT/summary.json.
public struct EvaluationSummary: Codable, Sendable {
    /// Layout version of summary.json.
    public var version = 1
    public var inputs: EvaluationInputs
    public var options: EvaluateOptions
    /// λ of the loss figure.
    public var lambda: Double
    public var d: Int, mIn: Int, mOut: Int, k: Int, dMlp: Int
    /// Which MLP the pair wraps, and how it compares with the activations file's.
    public var mlp: String
    /// The pair's evaluation, named "pair": forward files, shares, counts, reconstruction, analyses.
    public var run: RunSummary
    public var data: DataFacts
    public var german: GermanAnalysis
    /// The German unit's verdict line (no comparison: there is no traditional pair here).
    public var germanVerdict: [String]
    /// Command, commit, machine, date, input files.
    public var provenance: [String: String]
}

/// The run name of the evaluated pair, in forward/ and summary.json.
let evaluatedPair = "pair"

/// Evaluates one given pair (trained here, or brought in by `jsae import`) on
/// an activations file without training, and writes into `outDir` the
/// reproduction report's evaluation sections for it (report.md), summary.json,
/// the |J| plot, the evaluated rows (data/) and the forward files (forward/).
/// Every input is checked before `outDir` is created. `outDir` must be absent,
/// empty, or an earlier evaluation of the same model and activations (by
/// content, `inputs.json`), which is then evaluated again.
public func evaluatePair(modelPath: String, activationsPath: String, outDir: String, options e: EvaluateOptions,
                         provenance: [String: String] = [:], log: (String) -> Void) throws -> EvaluationSummary {
    let start = Date()
    guard e.evalTokens >= 1 else { throw JSAEError("--eval-tokens must be at least 1, got \(e.evalTokens)") }
    guard e.linearitySamples >= 1 && e.ablationSamples >= 1 else { throw JSAEError("--samples and --ablation-samples must be at least 1") }
    if let l = e.lambda { try RunRules.requireLambda(l) }

    // MARK: Validation: nothing is written until every input is known good.
    let reader = try ActivationsReader(activationsPath)
    let stored: JSAEModel<Double> = try ModelFile.read(modelPath)
    guard let saeOut = stored.saeOut else {
        throw JSAEError(file: modelPath, "has no /sae_out: jsae evaluate measures a pair (an input and an output SAE)")
    }
    guard stored.d == reader.d else {
        throw JSAEError(file: activationsPath, "/x has d = \(reader.d) columns but the model \(modelPath) has d = \(stored.d)")
    }
    guard stored.k <= min(stored.saeIn.m, saeOut.m) else {
        throw JSAEError(file: modelPath, "has k = \(stored.k), more than m_in = \(stored.saeIn.m) or m_out = \(saeOut.m)")
    }
    let (mlp, mlpNote) = try pairMLP(stored, modelPath: modelPath, reader: reader)
    let modelD = try JSAEModel(saeIn: stored.saeIn, saeOut: saeOut, mlp: mlp)
    let model: JSAEModel<Float> = modelD.converted()
    let (heldStart, fromFile) = try reader.heldOutStart(fallbackFraction: 1)   // no split recorded: every row
    let special = try reader.specialRows()
    let leaveOut = e.excludeSpecial && special != nil
    let rows = (leaveOut ? RowSelection(heldStart..<reader.tokens) { !special![$0] } : RowSelection(heldStart..<reader.tokens)).prefix(e.evalTokens)
    guard rows.count >= 1 else {
        throw JSAEError(file: activationsPath, "has no \(fromFile ? "held-out " : "")rows to evaluate\(leaveOut ? " that are not special-token rows (--include-special keeps them)" : "")")
    }
    let text = try TokenText.read(for: reader)
    // Read now what the evaluation reads later, so that a damaged file is refused before OUT exists:
    // the evaluated rows (NaN, Inf), the document sources and the hooked LayerNorm.
    _ = try rows.read(0..<rows.count, of: "/x", from: reader) as Matrix<Float>
    _ = try languageLabels(reader, rows: rows)
    _ = try ProcessedModel.layerNorm(reader)
    let inputs = EvaluationInputs(model: modelPath, activations: activationsPath,
                                  modelFingerprint: modelFingerprint(modelD), activationsFingerprint: try reader.fingerprint())
    try requireEvaluationFolder(outDir, for: inputs)

    // MARK: The folder, locked for as long as this evaluation writes into it.
    try createOutputFolder(outDir)
    let lock = try RunLock.acquire(outDir)
    defer { withExtendedLifetime(lock) {} }
    try writeJSON(inputs, to: outDir + "/inputs.json")
    try createOutputFolder(outDir + "/data")
    try createOutputFolder(outDir + "/forward")

    var o = ReproduceOptions(pretrained: activationsPath, randomized: "", outDir: outDir)
    o.k = model.k; o.evalTokens = e.evalTokens; o.excludeSpecial = e.excludeSpecial
    o.linearitySamples = e.linearitySamples; o.ablationSamples = e.ablationSamples
    o.seed = e.seed; o.threads = e.threads; o.topConnections = e.topConnections
    let lambda = e.lambda ?? TrainConfig.paperLambda(k: model.k, d: model.d)
    let which = fromFile ? "the first \(rows.count) held-out rows from row \(heldStart)" : "the first \(rows.count) rows (the file records no held-out split)"
    // A randomised model is analysed without processing by the authors too (ProcessedModel).
    let randomized = ((try? reader.file.intAttribute("randomized")) ?? nil) == 1
    log("evaluating \(modelPath) on \(which) of \(activationsPath)")
    let eval = try writeEvalSet(reader: reader, rows: rows, rowsOf: "\(activationsPath): \(which)" + (leaveOut ? ", special-token rows left out" : ""),
                                mlp: model.mlp!, heldOutFile: outDir + "/data/heldout.h5", processedEmulation: !randomized)
    let run = try evaluate(model, name: evaluatedPair, data: activationsPath, lambda: lambda, eval: eval, o: o, modelPath: modelPath)
    log("|J| > 0.01 at the true input: " + String(format: "%.2f%%", 100 * run.headlineShare))
    let german = try germanAnalysis([run], names: [evaluatedPair], eval: eval, reader: reader, text: text, o: o,
                                    latents: (model.saeIn.m, saeOut.m))

    var data = DataFacts(file: activationsPath, rows: reader.tokens, heldOutStartRow: heldStart,
                         split: fromFile ? "document-level (heldout_start_row in the file): held-out rows only"
                                         : "none recorded (no heldout_start_row): all rows, which may include rows the pair was trained on",
                         trainingRows: heldStart, evaluatedRows: rows.count,
                         specialRowsExcluded: special.map { flags in leaveOut ? rows.bounds.filter { flags[$0] }.count : 0 },
                         meanNormSpecial: nil, meanNormOther: nil,
                         outputMeanSquare: squaredDistance(eval.y, Matrix(rows: eval.y.rows, cols: eval.y.cols)) / Double(max(eval.y.count, 1)),
                         textPackages: (try? reader.file.stringAttribute("text_packages")) ?? nil,
                         sourceModel: (try? reader.file.stringAttribute("source_model")) ?? nil,
                         layer: (try? reader.file.intAttribute("layer")) ?? nil)
    data.maxLength = (try? reader.file.intAttribute("max_length")) ?? nil
    var prov = provenance
    prov["model file"] = modelPath
    prov["activations file"] = activationsPath
    prov["wall seconds"] = String(format: "%.0f", Date().timeIntervalSince(start))
    let summary = EvaluationSummary(inputs: inputs, options: e, lambda: lambda, d: model.d, mIn: model.saeIn.m, mOut: saeOut.m,
                                    k: model.k, dMlp: mlp.dMlp, mlp: mlpNote, run: run, data: data, german: german,
                                    germanVerdict: judgeGerman(german, jsae: evaluatedPair, traditional: ""), provenance: prov)
    try writeJSON(summary, to: outDir + "/summary.json")

    let absJ = try ForwardFile<Float>(run.forwardFiles[.trueInput]!).jacobian!.map { Double(abs($0)) }
    try atomicWrite(Plots.jacobianDistribution([("PAIR", jsaeColor, absJ)], title: "|J| \(fromFile ? "HELD-OUT" : "ALL ROWS"), TRUE INPUT"),
                    to: outDir + "/jacobian-distribution.png")
    // An earlier evaluation of the same pair may have had German tokens where this one has none.
    if german.units.isEmpty { try? FileManager.default.removeItem(atPath: outDir + "/german-unit.png") } else { try writeGermanPlot(german, o: o) }
    let connections = try strongestConnections(model, run: run, eval: eval, text: text, o: o)
    let report = renderEvaluation(summary, processed: eval.processed != nil, randomized: randomized, connections: connections)
    try atomicWrite(to: outDir + "/report.md") { try report.write(toFile: $0, atomically: false, encoding: .utf8) }
    log("wrote \(outDir)/report.md, summary.json, jacobian-distribution.png; forward files in \(outDir)/forward")
    return summary
}

/// The MLP the pair wraps: the model file's own, else the activations file's
/// /mlp; and a note saying which, and how far the other one is from it.
private func pairMLP(_ model: JSAEModel<Double>, modelPath: String, reader: ActivationsReader) throws -> (MLP<Double>, String) {
    let theirs: MLP<Double>? = reader.file.exists("/mlp") ? try MLPFile.read(reader.file, d: model.d) : nil
    guard let own = model.mlp else {
        guard let theirs else {
            throw JSAEError(file: modelPath, "has no /mlp, and \(reader.path) has none either: the pair's MLP is needed for its Jacobian")
        }
        return (theirs, "the activations file's /mlp (the model file has none)")
    }
    guard let theirs else { return (own, "the model file's /mlp (the activations file has none)") }
    guard theirs.wIn.rows == own.wIn.rows, theirs.dMlp == own.dMlp else {
        return (own, "the model file's /mlp; the activations file's has another shape (d_mlp \(theirs.dMlp), here \(own.dMlp)): another model's MLP?")
    }
    var worst = 0.0
    for (a, b) in [(own.wIn.data, theirs.wIn.data), (own.bIn, theirs.bIn), (own.wOut.data, theirs.wOut.data), (own.bOut, theirs.bOut)] {
        for (x, y) in zip(a, b) { worst = max(worst, abs(x - y)) }
    }
    let act = own.activation == theirs.activation ? "" : ", and its nonlinearity is \(theirs.activation.rawValue), here \(own.activation.rawValue)"
    return (own, worst == 0 && act.isEmpty ? "the model file's /mlp, equal to the activations file's"
                : "the model file's /mlp; the activations file's differs by up to \(String(format: "%.3g", worst)) in a weight\(act)")
}

/// A content fingerprint of a pair: shapes, k and every parameter
/// (float64 bits), 64-bit FNV-1a; enough to tell two pairs apart, not a
/// cryptographic hash.
private func modelFingerprint(_ m: JSAEModel<Double>) -> String {
    var h: UInt64 = 0xcbf29ce484222325
    func mix(_ v: UInt64) { for i in 0..<8 { h = (h ^ ((v >> (8 * UInt64(i))) & 0xff)) &* 0x100000001b3 } }
    mix(UInt64(m.k))
    for sae in [m.saeIn] + (m.saeOut.map { [$0] } ?? []) {
        mix(UInt64(sae.d)); mix(UInt64(sae.m))
        for name in SAETensors<Double>.Name.allCases { for v in sae.tensors[name] { mix(v.bitPattern) } }
    }
    if let mlp = m.mlp {
        mix(UInt64(mlp.dMlp))
        for v in mlp.wIn.data + mlp.bIn + mlp.wOut.data + mlp.bOut { mix(v.bitPattern) }
    }
    return "fnv1a64:" + String(h, radix: 16)
}

/// `dir` may be absent, empty, or an earlier evaluation of the same pair and data.
private func requireEvaluationFolder(_ dir: String, for inputs: EvaluationInputs) throws {
    guard try requireCreatableFolder(dir) else { return }
    let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
    guard !names.filter({ $0 != RunLock.fileName }).isEmpty else { return }
    guard let data = FileManager.default.contents(atPath: dir + "/inputs.json"),
          let old = try? JSONDecoder().decode(EvaluationInputs.self, from: data) else {
        throw JSAEError(file: dir, "is not empty and holds no evaluation (inputs.json): choose another --out")
    }
    guard old.sameContent(inputs) else {
        throw JSAEError(file: dir, "holds the evaluation of another pair or data (\(old.model) on \(old.activations)): choose another --out or remove it")
    }
}

/// report.md of an evaluation: the reproduction report's evaluation sections, for one pair.
func renderEvaluation(_ s: EvaluationSummary, processed: Bool, randomized: Bool, connections: [Connection]) -> String {
    func pct(_ v: Double) -> String { String(format: "%.1f%%", 100 * v) }
    func g4(_ v: Double) -> String { String(format: "%.4g", v) }
    let run = s.run, f = s.data
    var r = "# Evaluation of one SAE pair\n\n"
    r += "Model `\(s.inputs.model)`: d \(s.d), m_in \(s.mIn), m_out \(s.mOut), k \(s.k), d_mlp \(s.dMlp); MLP: \(s.mlp). "
    r += "Activations `\(s.inputs.activations)`"
    if let m = f.sourceModel { r += " (\(m), layer \(f.layer.map(String.init) ?? "?"))" }
    r += ". Nothing is trained: the pair is measured as given, in float32.\n\n"
    r += "Rows: \(f.evaluatedRows) of the file's \(f.rows); split: \(f.split)"
    r += f.heldOutStartRow > 0 ? ", from row \(f.heldOutStartRow)" : ""
    r += f.specialRowsExcluded.map { $0 > 0 ? "; \($0) special-token rows left out (`--include-special` keeps them)" : "" } ?? ""
    r += ". At most `--eval-tokens` \(s.options.evalTokens) rows, the first in file order"
    r += f.heldOutStartRow > 0 ? " (whole documents in the exporter's shuffled order).\n\n" : ".\n\n"
    r += "λ = \(g4(s.lambda)) (\(s.options.lambda == nil ? "the paper's rule 0.5·k²/d" : "--lambda")) enters only the loss in the forward files' attributes.\n\n"
    r += "## Jacobian sparsity (share of |J| above each threshold)\n\n| point | > 0.005 | > 0.01 | > 0.015 | > 0.02 |\n|---|---|---|---|---|\n"
    for point in EvaluationPoint.allCases {
        r += "| \(point.rawValue) | \((run.shares[EvaluationKey(point)]?.values ?? []).map(pct).joined(separator: " | ")) |\n"
    }
    r += "\n`trueInput`: J at the true MLP input (the training loss); `reconstruction`: J of the paper's f_s at x̂. "
    r += "Paper (Pythia-70m layer 3, 100M tokens, |J| > 0.01 at the true input): JSAE \(pct(PaperFigures.jsaeShare)), traditional \(pct(PaperFigures.tradShare)).\n\n"
    r += renderThresholdCounts([run], names: [evaluatedPair])
    r += "## Reconstruction (true input)\n\n| EV in | EV out | MSE in | MSE out | L0 in | L0 out | dead in | dead out | Σ\\|J\\|/(B·k²) |\n"
    r += "|---|---|---|---|---|---|---|---|---|\n"
    let x = run.metrics
    r += "| \(String(format: "%.3f | %.3f", x.explainedVarianceIn, x.explainedVarianceOut)) | \(g4(x.mseIn)) | \(g4(x.mseOut)) | "
    r += "\(String(format: "%.1f | %.1f", x.l0In, x.l0Out)) | \(x.deadIn) of \(s.mIn) | \(x.deadOut) of \(s.mOut) | \(x.jacobianL1.map(g4) ?? "") |\n\n"
    r += "The output SAE is measured against f(x) from the MLP above; mean y²/d over the rows \(g4(f.outputMeanSquare)). "
    r += "Dead: latents never active on the evaluated rows.\n\n"
    r += renderConnectionAnalyses([run], names: [evaluatedPair])
    if processed {
        r += renderProcessed([run])
    } else {
        r += "## The authors' analysis path, emulated\n\nNot measured: "
        r += randomized ? "the activations file is of a randomised model, which the authors analyse without processing.\n\n"
                        : "the activations file has no `/ln_in` (the hooked LayerNorm's weight and bias).\n\n"
    }
    r += renderGerman(s.german)
    r += s.germanVerdict.map { "- " + $0 }.joined(separator: "\n") + "\n\n"
    if s.german.unavailable == nil {
        r += "Only the unit is judged here: the comparison with a traditional pair needs one, evaluated the same way.\n\n"
    }
    r += "## Plots\n\n![|J| distribution](jacobian-distribution.png)\n\n"
    r += "## Strongest connections (largest mean |J| over the evaluated rows)\n\n"
    r += "Each latent's top-activating evaluated tokens, in context (**token**), or row numbers when the file has no text.\n\n"
    r += renderConnections(connections)
    r += "\n## How this report was made\n\n| | |\n|---|---|\n"
    r += s.provenance.sorted { $0.key < $1.key }.map { "| \($0.key) | \($0.value.replacingOccurrences(of: "|", with: "\\|")) |" }.joined(separator: "\n")
    r += "\n\nNumbers come from the forward files in `forward/` (kind `forward`; the evaluated rows are `data/heldout.h5`) and are repeated in `summary.json`.\n"
    return r
}
