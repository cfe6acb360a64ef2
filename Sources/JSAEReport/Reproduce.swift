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
    public var lr = 1e-3
    public var seed: UInt64 = 0
    public var heldOutFraction = 0.2
    /// (token, input latent, output latent) triples for linearity and ablation, per run.
    public var samples = 200
    /// Extra λ values trained on the pre-trained data for the sweep plot.
    public var lambdaSweep: [Double] = []
    public var topConnections = 8
    /// Threads for the package's own loops; results do not depend on it.
    public var threads = Parallel.onlineCores
    public init(pretrained: String, randomized: String, outDir: String) {
        self.pretrained = pretrained; self.randomized = randomized; self.outDir = outDir
    }
    /// --quick: smaller SAEs, fewer steps and samples (CI).
    public mutating func makeQuick() { expansion = 4; steps = 80; samples = 40; topConnections = 4 }
}

/// Every number of the report, also written as summary.json.
public struct RunSummary: Codable, Sendable {
    public var name: String
    public var data: String
    public var lambda: Double
    public var forwardFiles: [String: String]          // evaluation point -> file
    public var shares: [String: [Double]]              // evaluation point -> shares > 0.005/0.01/0.015/0.02
    public var explainedVarianceIn: Double, explainedVarianceOut: Double
    public var mseIn: Double, mseOut: Double
    public var l0In: Double, l0Out: Double
    public var deadIn: Int, deadOut: Int
    public var linearity: [String: Double]             // linear / JumpReLU / other shares
    public var ablationAgreement: Double
    public var samples: Int
}

public struct ReproduceSummary: Codable, Sendable {
    public var options: [String: String]
    public var heldOutTokens: Int
    public var runs: [RunSummary]
    public var verdicts: [String]
}

/// The paper's figures (jsae-spec.md), Pythia-70m layer 3 unless noted.
enum PaperFigures {
    static let jsaeShare = 0.113, tradShare = 0.688, jsaeShareRandom = 0.336, tradShareRandom = 0.869
    static let jsaeLinearity = ["linear": 0.868, "JumpReLU": 0.104, "other": 0.028]
    static let tradLinearity = ["linear": 0.719, "JumpReLU": 0.145, "other": 0.136]
    static let ablation = 0.975
    static let sweep: [(Double, Double)] = [(0.01, 0.51), (0.5, 0.21), (1, 0.082), (3, 0.042)]
}

public func reproduce(_ o: ReproduceOptions, log: (String) -> Void) throws -> ReproduceSummary {
    let fm = FileManager.default
    try createOutputFolder(o.outDir + "/data")
    try createOutputFolder(o.outDir + "/forward")
    let pre = try ActivationsReader(o.pretrained), rnd = try ActivationsReader(o.randomized)
    _ = try readTokenSidecar(for: pre)   // checked now, used only at the end
    guard pre.d == rnd.d else { throw JSAEError(file: o.randomized, "has d = \(rnd.d) but \(o.pretrained) has d = \(pre.d)") }
    let d = pre.d, m = o.expansion * d
    guard o.k >= 1 && o.k <= m else { throw JSAEError("k = \(o.k) must be between 1 and m = \(m)") }
    let lambda = o.lambda ?? TrainConfig.paperLambda(k: o.k, d: d)

    // Split: the last heldOutFraction of the rows are evaluation only.
    var splits: [String: (train: String, held: String, reader: ActivationsReader, heldRange: Range<Int>)] = [:]
    for (name, r) in [("pretrained", pre), ("randomized", rnd)] {
        let nHeld = max(1, Int(Double(r.tokens) * o.heldOutFraction))
        guard r.tokens - nHeld >= o.batch else {
            throw JSAEError(file: r.path, "\(r.tokens) tokens leave \(r.tokens - nHeld) for training, fewer than one batch of \(o.batch)")
        }
        let train = o.outDir + "/data/train-\(name).h5", held = o.outDir + "/data/heldout-\(name).h5"
        try writeActivationRows(of: r, 0..<(r.tokens - nHeld), to: train)
        try writeActivationRows(of: r, (r.tokens - nHeld)..<r.tokens, to: held)
        splits[name] = (train, held, r, (r.tokens - nHeld)..<r.tokens)
    }
    let heldTokens = splits["pretrained"]!.heldRange.count

    var plan: [(name: String, data: String, lambda: Double)] = [
        ("jsae-pretrained", "pretrained", lambda), ("traditional-pretrained", "pretrained", 0),
        ("jsae-randomized", "randomized", lambda), ("traditional-randomized", "randomized", 0),
    ]
    for l in o.lambdaSweep where l != lambda && l != 0 { plan.append(("sweep-lambda-\(l)", "pretrained", l)) }

    var runs: [RunSummary] = []
    var models: [String: JSAEModel<Float>] = [:]
    for (i, p) in plan.enumerated() {
        log("[\(i + 1)/\(plan.count)] training \(p.name): λ \(p.lambda), d \(d), m \(m), k \(o.k), \(o.steps) steps of \(o.batch)")
        let split = splits[p.data]!
        let reader = try ActivationsReader(split.train)
        let mlp: MLP<Float> = try MLPFile.read(reader.file, d: d)
        var config = TrainConfig()
        config.lr = o.lr; config.lambda = p.lambda; config.batch = o.batch; config.totalSteps = o.steps; config.seed = o.seed
        var state = try TrainState<Float>.initial(d: d, mIn: m, mOut: m, k: o.k, mlp: mlp, single: false, seed: o.seed)
        let runDir = o.outDir + "/runs/" + p.name
        if fm.fileExists(atPath: runDir) { try fm.removeItem(atPath: runDir) }
        try fm.createDirectory(atPath: runDir, withIntermediateDirectories: true)
        var opts = TrainRunOptions(outDir: runDir)
        opts.checkpointEvery = 0; opts.logEvery = max(1, o.steps / 4); opts.threads = o.threads
        _ = try runTraining(state: &state, config: config,
                            stream: BatchStream<Float>(reader: reader, batch: o.batch, bufferBatches: 4, seed: o.seed),
                            provenance: .init(activationsFile: split.train, shuffleBufferTokens: 4 * o.batch),
                            options: opts, log: { log("    " + $0) })
        models[p.name] = state.model
        runs.append(try evaluate(state.model, name: p.name, data: p.data, lambda: p.lambda, heldOut: split.held, o: o))
    }

    let verdicts = judge(runs)
    let summary = ReproduceSummary(
        options: ["expansion": "\(o.expansion)", "k": "\(o.k)", "lambda": "\(lambda)", "batch": "\(o.batch)", "steps": "\(o.steps)",
                  "lr": "\(o.lr)", "seed": "\(o.seed)", "samples": "\(o.samples)", "pretrained": o.pretrained, "randomized": o.randomized],
        heldOutTokens: heldTokens, runs: runs, verdicts: verdicts)
    let data = try JSONEncoder.sortedPretty.encode(summary)
    try atomicWrite(to: o.outDir + "/summary.json") { try data.write(to: URL(fileURLWithPath: $0)) }

    try writePlots(runs, o: o)
    let connections = try strongestConnections(models["jsae-pretrained"]!, run: runs[0], reader: pre, o: o)
    let report = renderReport(summary, lambda: lambda, d: d, m: m, o: o, connections: connections)
    try atomicWrite(to: o.outDir + "/report.md") { try report.write(toFile: $0, atomically: false, encoding: .utf8) }
    log("wrote \(o.outDir)/report.md, summary.json, 3 plots, forward files in \(o.outDir)/forward")
    return summary
}

extension JSONEncoder {
    static var sortedPretty: JSONEncoder { let e = JSONEncoder(); e.outputFormatting = [.prettyPrinted, .sortedKeys]; return e }
}

/// Rows of an activations file (with its /mlp and provenance) as a new activations file.
func writeActivationRows(of r: ActivationsReader, _ rows: Range<Int>, to path: String) throws {
    let x: Matrix<Float> = try r.x(rows)
    let mlp: MLP<Float> = try MLPFile.read(r.file, d: r.d)
    try atomicWrite(to: path) { tmp in
        let f = try HDF5File.create(tmp)
        try FileFormat.writeHeader(f, kind: .activations)
        for key in ["source_model", "layer", "hook_in", "hook_out", "text_source", "activation"] {
            if let v = try r.file.attribute(key) { try f.setAttribute(key, v) }
        }
        try f.setAttribute("tokens", .int(rows.count))
        try f.setAttribute("rows_of", .string("\(r.path) rows \(rows.lowerBound)..<\(rows.upperBound)"))
        try f.write("/x", x)
        try f.write("/mlp/W_in", mlp.wIn); try f.write("/mlp/b_in", shape: [mlp.dMlp], mlp.bIn)
        try f.write("/mlp/W_out", mlp.wOut); try f.write("/mlp/b_out", shape: [mlp.d], mlp.bOut)
        f.close()
    }
}


func evaluate(_ model: JSAEModel<Float>, name: String, data: String, lambda: Double, heldOut: String, o: ReproduceOptions) throws -> RunSummary {
    var files: [String: String] = [:], shares: [String: [Double]] = [:]
    var forwards: [EvaluationPoint: ForwardFile<Float>] = [:]
    let reader = try ActivationsReader(heldOut)
    for point in EvaluationPoint.allCases {
        let path = o.outDir + "/forward/\(name).\(point.rawValue).h5"
        var fo = ForwardOptions()
        fo.point = point; fo.lambda = lambda; fo.threads = o.threads
        try runForward(model: model, activations: reader, modelPath: o.outDir + "/runs/\(name)/model.h5",
                       outPath: path, options: fo)
        let f = try ForwardFile<Float>(path)
        files[point.rawValue] = path; shares[point.rawValue] = jacobianShares(f.jacobian ?? []); forwards[point] = f
    }
    // Reconstruction metrics at the true input (the output SAE's target is f(x)).
    let t = forwards[.trueInput]!
    let x: Matrix<Float> = try reader.x(0..<t.xHat.rows)
    func l0(_ v: [Float]) -> Double { v.withUnsafeBufferPointer { meanL0(values: $0, tokens: t.xHat.rows) } }
    // Dead over the held-out set: no activation in its one "step".
    let tracker = DeadLatentTracker(mIn: model.saeIn.m, mOut: model.saeOut!.m, startStep: 0)
    tracker.record(SparseCodes(indices: t.inIndices, values: t.inValues, k: t.k), output: false, step: 0)
    tracker.record(SparseCodes(indices: t.outIndices!, values: t.outValues!, k: t.k), output: true, step: 0)
    let dead = tracker.dead(atStep: 1, window: 1)
    let (lin, agree, n) = linearityAndAblation(model, x: x, forward: forwards[.reconstruction]!, o: o)
    return RunSummary(name: name, data: data, lambda: lambda, forwardFiles: files, shares: shares,
                      explainedVarianceIn: explainedVariance(x, t.xHat), explainedVarianceOut: explainedVariance(t.y!, t.yHat!),
                      mseIn: t.mseIn, mseOut: t.mseOut ?? 0, l0In: l0(t.inValues), l0Out: l0(t.outValues!),
                      deadIn: dead.input, deadOut: dead.output,
                      linearity: lin, ablationAgreement: agree, samples: n)
}

/// f_s (the paper's point, x̂) along sampled (token, active input latent,
/// active output latent) triples: shape shares and ablation agreement.
func linearityAndAblation(_ model: JSAEModel<Float>, x: Matrix<Float>, forward f: ForwardFile<Float>,
                          o: ReproduceOptions) -> ([String: Double], Double, Int) {
    var g = SeededGenerator(seed: o.seed &+ 17)
    let k = f.k
    var counts = [String: Int](), agree = 0, n = 0, tries = 0
    while n < o.samples && tries < 20 * o.samples {
        tries += 1
        let b = Int.random(in: 0..<x.rows, using: &g)
        let ps = (0..<k).filter { f.inValues[b * k + $0] > 0 }, qs = (0..<k).filter { f.outValues![b * k + $0] > 0 }
        guard let p = ps.randomElement(using: &g), let q = qs.randomElement(using: &g) else { continue }
        let j = f.inIndices[b * k + p], i = f.outIndices![b * k + q]
        let curve = model.response(token: x.row(b), inputLatent: j, outputLatent: i, point: .reconstruction)
        counts[classifyResponse(grid: curve.grid, values: curve.values).rawValue, default: 0] += 1
        let J = Double(f.jacobian![b * k * k + q * k + p])
        if model.ablation(token: x.row(b), inputLatent: j, outputLatent: i, jacobianEntry: J, point: .reconstruction).agrees { agree += 1 }
        n += 1
    }
    let shares = Dictionary(uniqueKeysWithValues: ResponseShape.allCases.map { ($0.rawValue, Double(counts[$0.rawValue] ?? 0) / Double(max(n, 1))) })
    return (shares, Double(agree) / Double(max(n, 1)), n)
}

/// The reproduction's claims, each with a one-line verdict.
func judge(_ runs: [RunSummary]) -> [String] {
    func run(_ n: String) -> RunSummary { runs.first { $0.name == n }! }
    let jp = run("jsae-pretrained"), tp = run("traditional-pretrained"), jr = run("jsae-randomized"), tr = run("traditional-randomized")
    let s = { (r: RunSummary) in r.shares["trueInput"]![1] }
    func pct(_ v: Double) -> String { String(format: "%.1f%%", 100 * v) }
    var v: [String] = []
    let ratio = s(tp) / max(s(jp), 1e-12), paperRatio = PaperFigures.tradShare / PaperFigures.jsaeShare
    v.append((ratio >= 2 ? "REPRODUCED" : "NOT REPRODUCED") + ": the JSAE's Jacobian is sparser than the traditional pair's: "
             + "\(pct(s(jp))) vs \(pct(s(tp))) of |J| > 0.01, \(String(format: "%.1f", ratio))× (paper \(String(format: "%.1f", paperRatio))×; reproduced means ≥ 2×).")
    let evCost = (tp.explainedVarianceIn + tp.explainedVarianceOut - jp.explainedVarianceIn - jp.explainedVarianceOut) / 2
    v.append((evCost <= 0.05 ? "REPRODUCED" : "NOT REPRODUCED") + ": at a small reconstruction cost: mean explained variance "
             + String(format: "%.3f vs %.3f, a cost of %.3f", (jp.explainedVarianceIn + jp.explainedVarianceOut) / 2,
                      (tp.explainedVarianceIn + tp.explainedVarianceOut) / 2, evCost) + " (reproduced means ≤ 0.05).")
    let ratioR = s(tr) / max(s(jr), 1e-12), paperR = PaperFigures.tradShareRandom / PaperFigures.jsaeShareRandom
    v.append((ratioR < ratio ? "REPRODUCED" : "NOT REPRODUCED") + ": the effect is weaker on the randomised model: "
             + "\(pct(s(jr))) vs \(pct(s(tr))), \(String(format: "%.1f", ratioR))× against \(String(format: "%.1f", ratio))× pre-trained "
             + "(paper \(String(format: "%.1f", paperR))× vs \(String(format: "%.1f", paperRatio))×).")
    let lj = jp.linearity["linear"] ?? 0, lt = tp.linearity["linear"] ?? 0
    v.append((lj >= 0.5 && lj >= lt ? "REPRODUCED" : "NOT REPRODUCED") + ": f_s is mostly linear in the JSAE basis: "
             + "\(pct(lj)) linear vs \(pct(lt)) for the traditional pair (paper \(pct(PaperFigures.jsaeLinearity["linear"]!)) vs "
             + "\(pct(PaperFigures.tradLinearity["linear"]!)); reproduced means ≥ 50% and ≥ the traditional pair).")
    v.append((jp.ablationAgreement >= 0.9 ? "REPRODUCED" : "NOT REPRODUCED") + ": ablating one unit of an input latent agrees with J "
             + "(|J + Δ| < 0.1) in \(pct(jp.ablationAgreement)) of samples (paper \(pct(PaperFigures.ablation)); reproduced means ≥ 90%).")
    return v
}
