import Foundation
import JSAECore

/// The four runs every reproduction trains, each present.
struct MainRuns {
    var jsaePretrained: RunSummary, traditionalPretrained: RunSummary
    var jsaeRandomized: RunSummary, traditionalRandomized: RunSummary

    /// - Throws: naming every main run missing from `runs`.
    init(_ runs: [RunSummary]) throws {
        let missing = RunID.main.filter { runs[$0] == nil }
        guard missing.isEmpty else {
            throw JSAEError("the summary lacks the run\(missing.count > 1 ? "s" : "") \(missing.map(\.name).joined(separator: ", "))")
        }
        jsaePretrained = runs[.jsaePretrained]!; traditionalPretrained = runs[.traditionalPretrained]!
        jsaeRandomized = runs[.jsaeRandomized]!; traditionalRandomized = runs[.traditionalRandomized]!
    }
}

/// The reproduction's claims, each with a one-line verdict.
func judge(_ runs: MainRuns) -> [String] {
    let (jp, tp, jr, tr) = (runs.jsaePretrained, runs.traditionalPretrained, runs.jsaeRandomized, runs.traditionalRandomized)
    let pct = PaperFigures.percent
    var v: [String] = []
    let ratio = tp.headlineShare / max(jp.headlineShare, 1e-12)
    v.append((ratio >= 2 ? "REPRODUCED" : "NOT REPRODUCED") + ": the JSAE's Jacobian is sparser than the traditional pair's: "
             + "\(pct(jp.headlineShare)) vs \(pct(tp.headlineShare)) of |J| > 0.01, \(String(format: "%.1f", ratio))× "
             + "(paper \(String(format: "%.1f", PaperFigures.ratio))×; reproduced means ≥ 2×).")
    let evCost = tp.metrics.explainedVarianceCost(of: jp.metrics)
    v.append((evCost <= 0.05 ? "REPRODUCED" : "NOT REPRODUCED") + ": at a small reconstruction cost: mean explained variance "
             + String(format: "%.3f vs %.3f, a cost of %.3f", jp.metrics.meanExplainedVariance, tp.metrics.meanExplainedVariance, evCost)
             + " (reproduced means ≤ 0.05).")
    let ratioR = tr.headlineShare / max(jr.headlineShare, 1e-12)
    v.append((ratioR < ratio ? "REPRODUCED" : "NOT REPRODUCED") + ": the effect is weaker on the randomised model: "
             + "\(pct(jr.headlineShare)) vs \(pct(tr.headlineShare)), \(String(format: "%.1f", ratioR))× against \(String(format: "%.1f", ratio))× pre-trained "
             + "(paper \(String(format: "%.1f", PaperFigures.ratioRandom))× vs \(String(format: "%.1f", PaperFigures.ratio))×).")
    // The authors' variant (ConnectionAnalyses.swift); summaries without it fall back to the x̂ figures.
    func authors(_ r: RunSummary) -> ConnectionAnalysis? { r.analyses?.first { $0.variant == .authors && $0.path == .consistent } }
    let lj = authors(jp)?.linear.share ?? jp.linearity["linear"] ?? 0, lt = authors(tp)?.linear.share ?? tp.linearity["linear"] ?? 0
    let variant = authors(jp) != nil ? " (the authors' variant, at the true input)" : ""
    v.append((lj >= 0.5 && lj >= lt ? "REPRODUCED" : "NOT REPRODUCED") + ": f_s is mostly linear in the JSAE basis\(variant): "
             + "\(pct(lj)) linear vs \(pct(lt)) for the traditional pair (paper \(pct(PaperFigures.jsaeLinearity["linear"]!)) vs "
             + "\(pct(PaperFigures.tradLinearity["linear"]!)); reproduced means ≥ 50% and ≥ the traditional pair).")
    let agree = authors(jp)?.ablationAgrees.share ?? jp.ablationAgreement
    v.append((agree >= 0.9 ? "REPRODUCED" : "NOT REPRODUCED") + ": ablating one unit of an input latent agrees with J\(variant) "
             + "(|J + Δ| < 0.1) in \(pct(agree)) of samples (paper \(pct(PaperFigures.ablation)); reproduced means ≥ 90%).")
    return v
}

/// One line per claim the scale curve can speak to: does the measured figure
/// move toward the paper's as training tokens double (last doubling, and
/// first snapshot to last)?
func judgeTrends(_ runs: MainRuns) -> [String] {
    let jp = runs.jsaePretrained.snapshots ?? [], tp = runs.traditionalPretrained.snapshots ?? []
    let jr = runs.jsaeRandomized.snapshots ?? [], tr = runs.traditionalRandomized.snapshots ?? []
    guard jp.count >= 2, jp.count == tp.count, jr.count == jp.count, tr.count == jp.count else { return [] }
    func direction(_ values: [Double], paper: Double) -> String {
        let first = values.first!, prev = values[values.count - 2], last = values.last!
        func word(_ a: Double, _ b: Double) -> String {
            abs(b - paper) < abs(a - paper) ? "toward" : (abs(b - paper) > abs(a - paper) ? "away from" : "no closer to")
        }
        return "last doubling \(word(prev, last)) the paper, whole curve \(word(first, last)) it"
    }
    func fmt(_ values: [Double], _ f: (Double) -> String) -> String { values.map(f).joined(separator: " → ") }
    let x = PaperFigures.times, p = { (v: Double) in String(format: "%.3f", v) }
    let ratio = zip(tp, jp).map { $0.shares.headline / max($1.shares.headline, 1e-12) }
    let ratioR = zip(tr, jr).map { $0.shares.headline / max($1.shares.headline, 1e-12) }
    let cost = zip(tp, jp).map { $0.metrics.explainedVarianceCost(of: $1.metrics) }
    let gap = zip(ratio, ratioR).map { $0 - $1 }
    let paperGap = PaperFigures.ratio - PaperFigures.ratioRandom
    let tokens = jp.map { String(format: "%.2gM", Double($0.tokens) / 1e6) }.joined(separator: ", ")
    return [
        "Trend (sparser Jacobian), ratio at \(tokens) tokens: \(fmt(ratio, x)); paper \(x(PaperFigures.ratio)) at 100M: \(direction(ratio, paper: PaperFigures.ratio)).",
        "Trend (reconstruction cost): \(fmt(cost, p)); the paper reports a small cost (taken as 0): \(direction(cost, paper: 0)).",
        "Trend (weaker on the randomised model), pre-trained minus randomised ratio: \(fmt(gap, x)); paper \(x(paperGap)): "
            + "\(direction(gap, paper: paperGap)).",
        "Trend (f_s linearity, ablation): measured at the end of training only.",
    ]
}
