import Foundation
import JSAECore
import JSAEIO

/// The paper's qualitative claim (Section 5.2): a JSAE output latent that
/// fires on German text, computed from a few input latents that fire on
/// tokens frequent in German text. Tokens are labelled German when their
/// document comes from the `fortunes-de` source of the activations file.

/// How selectively one latent fires on labelled tokens.
public struct Selectivity: Codable, Sendable, Equatable {
    public var latent: Int
    /// Tokens on which the latent fires (value > 0), and how many of them are labelled.
    public var firings: Int, labelledFirings: Int
    /// labelledFirings / firings (0 for a latent that never fires).
    public var precision: Double
    /// labelledFirings / labelled tokens (0 when no token is labelled).
    public var recall: Double
}

/// Precision and recall of every latent against per-token labels.
/// - indices, values: [tokens, k] sparse codes; labels: [tokens]; m: latents
public func selectivity<T: JSAEScalar>(indices: [Int], values: [T], k: Int, labels: [Bool], m: Int) -> [Selectivity] {
    precondition(indices.count == values.count && indices.count == labels.count * k)
    var fire = [Int](repeating: 0, count: m), hit = [Int](repeating: 0, count: m)
    for (b, labelled) in labels.enumerated() {
        for s in (b * k)..<((b + 1) * k) where values[s] > 0 {
            fire[indices[s]] += 1
            if labelled { hit[indices[s]] += 1 }
        }
    }
    let positives = labels.reduce(0) { $0 + ($1 ? 1 : 0) }
    return (0..<m).map { i in
        Selectivity(latent: i, firings: fire[i], labelledFirings: hit[i],
                    precision: fire[i] > 0 ? Double(hit[i]) / Double(fire[i]) : 0,
                    recall: positives > 0 ? Double(hit[i]) / Double(positives) : 0)
    }
}

/// The rule that picks "the" German output latent, fixed before any run was looked at.
public enum GermanRule {
    public static let minPrecision = 0.9
    /// A latent that fires on fewer tokens says nothing about a language.
    public static let minFirings = 10
    public static let statement = "the output latent with the highest German recall among those with German precision ≥ 0.9 "
        + "that fire on ≥ 10 held-out tokens (ties: higher precision, then lower index); when none qualifies, the one with the highest F1, "
        + "reported as not qualifying"
    /// REPRODUCED when the JSAE pair's unit has precision ≥ 0.9 and recall ≥ 0.3
    /// and at least 3 of its 5 strongest inputs have German precision ≥ 0.8.
    public static let verdictRecall = 0.3, inputPrecision = 0.8, inputsNeeded = 3, topInputs = 5

    /// The chosen latent, and whether it met the precision rule.
    public static func choose(_ all: [Selectivity]) -> (Selectivity, qualifies: Bool)? {
        let eligible = all.filter { $0.firings >= minFirings }
        func better(_ a: Selectivity, _ b: Selectivity, _ key: (Selectivity) -> Double) -> Bool {
            key(a) != key(b) ? key(a) > key(b) : (a.precision != b.precision ? a.precision > b.precision : a.latent < b.latent)
        }
        if let best = eligible.filter({ $0.precision >= minPrecision }).min(by: { better($0, $1, \.recall) }) { return (best, true) }
        let f1 = { (s: Selectivity) in s.precision + s.recall > 0 ? 2 * s.precision * s.recall / (s.precision + s.recall) : 0 }
        return eligible.filter { $0.labelledFirings > 0 }.min(by: { better($0, $1, f1) }).map { ($0, false) }
    }
}

/// One input latent feeding the German unit.
public struct GermanInput: Codable, Sendable {
    public var latent: Int
    /// Mean |J| from it into the unit over the tokens where the unit is active.
    public var meanAbsJ: Double
    public var selectivity: Selectivity
    /// Its top-activating evaluated tokens, in context.
    public var examples: [String]
}

/// The German unit of one run and how it is computed.
public struct GermanUnit: Codable, Sendable {
    public var run: String
    public var evaluatedTokens: Int, germanTokens: Int
    public var output: Selectivity
    public var qualifies: Bool
    /// Mean activation of the unit (0 where it does not fire) on German and on other tokens.
    public var meanActivationGerman: Double, meanActivationOther: Double
    /// The inputs with the largest mean |J| into the unit, strongest first.
    public var inputs: [GermanInput]
    /// Share of the unit's total |J| (over the tokens where it is active) that its top 5 inputs hold.
    public var topFiveShare: Double
    public var outputExamples: [String]

    /// Inputs among the top 5 with German precision ≥ GermanRule.inputPrecision.
    public var germanInputs: Int {
        inputs.prefix(GermanRule.topInputs).filter { $0.selectivity.precision >= GermanRule.inputPrecision }.count
    }
}

/// The German analysis of a report: the units, or why there are none.
public struct GermanAnalysis: Codable, Sendable {
    public var rule: String
    public var units: [GermanUnit]
    /// Why the analysis could not run (no document sources, no German held-out token).
    public var unavailable: String?
}

/// Per evaluated row: is its document from `source`? nil when the file does
/// not record document sources or has no such source.
func languageLabels(_ reader: ActivationsReader, rows: RowSelection, source: String = "fortunes-de") throws -> [Bool]? {
    let f = reader.file
    guard f.exists("/text/doc_source"), f.exists("/text/doc"),
          let sources = try f.stringAttribute("text_sources")?.split(separator: ",").map(String.init),
          let code = sources.firstIndex(of: source) else { return nil }
    let docSource = try f.readInts("/text/doc_source", shape: [nil]).data
    let doc = try f.readInts("/text/doc", shape: [reader.tokens]).data
    return try (0..<rows.count).map { i in
        let d = doc[rows[i]]
        guard d >= 0 && d < docSource.count else {
            throw JSAEError(file: reader.path, "/text/doc names document \(d) at row \(rows[i]), but /text/doc_source has \(docSource.count)")
        }
        return docSource[d] == code
    }
}

/// A pair's codes and Jacobian on evaluated tokens, as a true-input forward file holds them.
struct PairCodes {
    /// [tokens, k] each; J: [tokens, k (output slots), k (input slots)].
    var k: Int, inIndices: [Int], inValues: [Float], outIndices: [Int], outValues: [Float], jacobian: [Float]
}

/// The German unit of one run.
/// - labels: [tokens]; examples: a latent's top tokens in context (input side: false)
func germanUnit(run: String, codes f: PairCodes, mIn: Int, mOut: Int, labels: [Bool],
                examples: (_ output: Bool, _ latent: Int) -> [String]) -> GermanUnit? {
    let outIdx = f.outIndices, outVal = f.outValues, J = f.jacobian
    let k = f.k, T = labels.count
    let outSel = selectivity(indices: outIdx, values: outVal, k: k, labels: labels, m: mOut)
    guard let (unit, qualifies) = GermanRule.choose(outSel) else { return nil }
    let inSel = selectivity(indices: f.inIndices, values: f.inValues, k: k, labels: labels, m: mIn)
    var sumJ = [Int: Double](), total = 0.0, active = 0
    var actGerman = 0.0, actOther = 0.0
    for b in 0..<T {
        guard let q = (0..<k).first(where: { outIdx[b * k + $0] == unit.latent && outVal[b * k + $0] > 0 }) else { continue }
        active += 1
        if labels[b] { actGerman += Double(outVal[b * k + q]) } else { actOther += Double(outVal[b * k + q]) }
        for p in 0..<k {
            let v = Double(abs(J[b * k * k + q * k + p]))
            sumJ[f.inIndices[b * k + p], default: 0] += v
            total += v
        }
    }
    let ranked = sumJ.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
    let top5 = ranked.prefix(GermanRule.topInputs).reduce(0.0) { $0 + $1.value }
    let german = labels.reduce(0) { $0 + ($1 ? 1 : 0) }
    return GermanUnit(
        run: run, evaluatedTokens: T, germanTokens: german, output: unit, qualifies: qualifies,
        meanActivationGerman: actGerman / Double(max(german, 1)), meanActivationOther: actOther / Double(max(T - german, 1)),
        inputs: ranked.prefix(8).map { GermanInput(latent: $0.key, meanAbsJ: $0.value / Double(max(active, 1)),
                                                   selectivity: inSel[$0.key], examples: examples(false, $0.key)) },
        topFiveShare: total > 0 ? top5 / total : 0, outputExamples: examples(true, unit.latent))
}

/// The claim's verdict lines: the unit itself, and the comparison the paper implies.
func judgeGerman(_ g: GermanAnalysis, jsae: String = RunID.jsaePretrained.name, traditional: String = RunID.traditionalPretrained.name) -> [String] {
    if let why = g.unavailable { return ["NOT TESTED: a German-text computational unit (paper §5.2): \(why)."] }
    guard let j = g.units.first(where: { $0.run == jsae }) else {
        return ["NOT REPRODUCED: the JSAE has a German-text output latent: no output latent of \(jsae) fires on ≥ \(GermanRule.minFirings) "
                + "held-out tokens with any German firing (reproduced means precision ≥ 90%, recall ≥ 30% and ≥ 3 of its top 5 inputs German)."]
    }
    func pct(_ v: Double) -> String { String(format: "%.1f%%", 100 * v) }
    let ok = j.qualifies && j.output.recall >= GermanRule.verdictRecall && j.germanInputs >= GermanRule.inputsNeeded
    var v = [(ok ? "REPRODUCED" : "NOT REPRODUCED") + ": the JSAE has a German-text output latent computed from German-token input latents: "
             + "output \(j.output.latent) has German precision \(pct(j.output.precision)) and recall \(pct(j.output.recall)); "
             + "\(j.germanInputs) of its top 5 |J| inputs have German precision ≥ 80% (reproduced means precision ≥ 90%, recall ≥ 30% and ≥ 3 of 5)."]
    if let t = g.units.first(where: { $0.run == traditional }) {
        v.append((j.topFiveShare > t.topFiveShare ? "REPRODUCED" : "NOT REPRODUCED")
                 + ": the JSAE's German unit draws its |J| from fewer inputs than the traditional pair's: its top 5 inputs hold "
                 + "\(pct(j.topFiveShare)) of its |J| against \(pct(t.topFiveShare)) (reproduced means a higher share).")
    }
    return v
}

/// The German units of the pre-trained JSAE and traditional pairs, from their true-input forward files.
/// - latents: the pairs' m_in and m_out (nil: expansion · d, as the reproduction trains them)
func germanAnalysis(_ runs: [RunSummary], names: [String] = [RunID.jsaePretrained.name, RunID.traditionalPretrained.name],
                    eval: EvalSet, reader: ActivationsReader, text: TokenText?, o: ReproduceOptions,
                    latents: (input: Int, output: Int)? = nil) throws -> GermanAnalysis {
    var g = GermanAnalysis(rule: GermanRule.statement, units: [], unavailable: nil)
    guard let labels = try languageLabels(reader, rows: eval.rows) else {
        g.unavailable = "\(reader.path) records no document sources with a fortunes-de source (/text/doc_source, text_sources)"
        return g
    }
    guard labels.contains(true) else {
        g.unavailable = "none of the \(labels.count) evaluated held-out tokens comes from a German (fortunes-de) document"
        return g
    }
    let m = latents ?? (o.expansion * reader.d, o.expansion * reader.d)
    for name in names {
        guard let run = runs.first(where: { $0.name == name }), let path = run.forwardFiles[.trueInput] else { continue }
        let f = try ForwardFile<Float>(path)
        guard f.xHat.rows == labels.count else {
            throw JSAEError(file: path, "has \(f.xHat.rows) tokens, but \(labels.count) held-out rows were evaluated")
        }
        guard let outIndices = f.outIndices, let outValues = f.outValues, let J = f.jacobian else { continue }
        let codes = PairCodes(k: f.k, inIndices: f.inIndices, inValues: f.inValues, outIndices: outIndices, outValues: outValues, jacobian: J)
        let unit = germanUnit(run: name, codes: codes, mIn: m.input, mOut: m.output, labels: labels) { output, latent in
            output ? topExamples(indices: f.outIndices!, values: f.outValues!, k: f.k, latent: latent, rows: eval.rows, text: text)
                   : topExamples(indices: f.inIndices, values: f.inValues, k: f.k, latent: latent, rows: eval.rows, text: text)
        }
        if let unit { g.units.append(unit) }
    }
    return g
}

/// german-unit.png: each pair's unit, its firing rate on German and on other
/// held-out tokens, and the share of its |J| held by its top inputs.
func writeGermanPlot(_ g: GermanAnalysis, o: ReproduceOptions) throws {
    let colors: [RGB] = [jsaeColor, tradColor]
    let groups: [(String, [(String, RGB, Double)])] = [
        ("FIRES ON GERMAN TOKENS", g.units.enumerated().map { (label($1.run), colors[$0 % 2], $1.output.recall) }),
        ("FIRES ON OTHER TOKENS", g.units.enumerated().map { i, u in
            (label(u.run), colors[i % 2], Double(u.output.firings - u.output.labelledFirings) / Double(max(u.evaluatedTokens - u.germanTokens, 1))) }),
        ("|J| SHARE OF TOP 5 INPUTS", g.units.enumerated().map { (label($1.run), colors[$0 % 2], $1.topFiveShare) }),
    ]
    try atomicWrite(Plots.groupedBars(groups, title: "THE GERMAN-TEXT OUTPUT LATENT OF EACH PAIR (HELD-OUT)", yLabel: "SHARE"),
                    to: o.outDir + "/german-unit.png")
    func label(_ run: String) -> String {
        run == RunID.jsaePretrained.name ? "JSAE" : (run == RunID.traditionalPretrained.name ? "TRADITIONAL" : run.uppercased())
    }
}

/// The report's German section.
func renderGerman(_ g: GermanAnalysis) -> String {
    var r = "## A German-text computational unit (paper §5.2)\n\n"
    r += "The paper: \"JSAEs find an output latent corresponding to whether the text is in German, which is computed using several input latents "
    r += "corresponding to tokens frequently found in German text.\" A held-out token is labelled German when its document comes from `fortunes-de`.\n\n"
    r += "Rule, fixed before any run was looked at: \(g.rule). Verdict criterion: the JSAE's unit has German precision ≥ 90% and recall ≥ 30%, "
    r += "and at least 3 of its 5 strongest inputs (mean |J| over the tokens where the unit fires) have German precision ≥ 80%; "
    r += "and, as the paper implies, the JSAE's unit draws its |J| from fewer inputs than the traditional pair's (a higher top-5 share).\n\n"
    if let why = g.unavailable { return r + "Not tested: \(why).\n\n" }
    func pct(_ v: Double) -> String { String(format: "%.1f%%", 100 * v) }
    r += "| pair | output latent | meets the rule | German precision | German recall | fires on | mean activation German / other | top-5 share of its \\|J\\| | top-5 inputs with German precision ≥ 80% |\n"
    r += "|---|---|---|---|---|---|---|---|---|\n"
    for u in g.units {
        r += "| \(u.run) | \(u.output.latent) | \(u.qualifies ? "yes" : "no (best F1)") | \(pct(u.output.precision)) | \(pct(u.output.recall)) | "
        r += "\(u.output.firings) of \(u.evaluatedTokens) tokens (\(u.germanTokens) German) | "
        r += String(format: "%.3f / %.3f", u.meanActivationGerman, u.meanActivationOther) + " | \(pct(u.topFiveShare)) | \(u.germanInputs) of 5 |\n"
    }
    r += "\n![German unit](german-unit.png)\n\n"
    for u in g.units {
        r += "### \(u.run): output \(u.output.latent)\n\n"
        r += u.outputExamples.map { "- out \(u.output.latent): " + $0 }.joined(separator: "\n") + "\n\n"
        r += "| input | mean \\|J\\| into it | German precision | German recall | top tokens |\n|---|---|---|---|---|\n"
        for i in u.inputs.prefix(GermanRule.topInputs) {
            r += "| \(i.latent) | \(String(format: "%.4f", i.meanAbsJ)) | \(pct(i.selectivity.precision)) | \(pct(i.selectivity.recall)) | "
            r += i.examples.joined(separator: "<br>") + " |\n"
        }
        r += "\n"
    }
    return r
}
