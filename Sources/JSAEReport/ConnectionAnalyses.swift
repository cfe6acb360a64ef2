import Foundation
import JSAECore
import JSAEIO

/// f_s per connection: is the output latent linear in the input latent, and
/// does J predict the effect of removing one unit of the input latent? Two
/// variants, both reported; the verdicts use the authors'.

/// A share with its 95% Wilson score interval. The interval treats samples
/// as independent; samples drawn from the same token are not, so it is a
/// lower bound on the uncertainty.
public struct Proportion: Codable, Sendable, Equatable {
    public var count: Int, total: Int
    public var share: Double, low: Double, high: Double

    public init(_ count: Int, of total: Int) {
        let z = 1.959963984540054   // the 97.5% normal quantile
        self.count = count; self.total = total
        guard total > 0 else { share = 0; low = 0; high = 1; return }
        let n = Double(total), p = Double(count) / n, z2 = z * z
        let denominator = 1 + z2 / n
        let centre = (p + z2 / (2 * n)) / denominator
        let half = z * (p * (1 - p) / n + z2 / (4 * n * n)).squareRoot() / denominator
        share = p; low = max(0, centre - half); high = min(1, centre + half)
    }
}

/// How the connections are sampled and where f_s is evaluated.
public enum AnalysisVariant: String, Codable, Sendable, CaseIterable {
    /// As `runners/linear.py` and `runners/ablation.py` do: at the true input
    /// x, with K2 the output SAE's TopK of f(x). Linearity: k (output slot,
    /// input slot) pairs per token, drawn uniformly with replacement, latents
    /// whose value is 0 included; the input latent's contribution s_j·d_j in
    /// x is replaced by u·d_j. Ablation: the k diagonal slot pairs (input
    /// slot i, output slot i, slots in descending pre-activation order).
    case authors
    /// The paper's formal f_s at x̂ = d_x(τ_k(e_x(x))), K2 from f(x̂), one
    /// random pair of active latents (value > 0) per sampled token, for both analyses.
    case reconstruction
}

/// Which model and inputs an analysis ran on.
public enum ModelPath: String, Codable, Sendable {
    /// The pair on the MLP and inputs it was trained on.
    case consistent
    /// TransformerLens' processed model, as the authors' analysis scripts load
    /// pre-trained models (`ProcessedModel`).
    case processed
}

/// Linearity and ablation of one run, one variant.
public struct ConnectionAnalysis: Codable, Sendable {
    public var variant: AnalysisVariant
    public var path: ModelPath
    public var linear: Proportion, jumpReLU: Proportion, other: Proportion
    /// |J + Δ| < 0.1.
    public var ablationAgrees: Proportion
    public var seconds: Double
}

/// One sampled connection: a token of the forward file and a slot of each SAE.
struct SlotPair: Equatable { var token: Int, inSlot: Int, outSlot: Int }

enum ConnectionSampling {
    /// Linearity pairs: whole tokens of k pairs (authors) or one active pair per token (reconstruction).
    /// The authors' variant takes distinct tokens, so it gives at most tokens·k pairs.
    static func linearityPairs<T: JSAEScalar>(_ v: AnalysisVariant, _ f: ForwardFile<T>, count: Int, seed: UInt64) -> [SlotPair] {
        var g = SeededGenerator(seed: seed)
        let k = f.k, tokens = f.xHat.rows
        switch v {
        case .authors:
            let order = Array(0..<tokens).shuffled(using: &g)
            var pairs: [SlotPair] = []
            for b in order where pairs.count < count {
                for _ in 0..<k {
                    let q = Int.random(in: 0..<k, using: &g), p = Int.random(in: 0..<k, using: &g)
                    pairs.append(SlotPair(token: b, inSlot: p, outSlot: q))
                }
            }
            return pairs
        case .reconstruction:
            return activePairs(f, count: count, using: &g)
        }
    }

    /// Ablation pairs: the k diagonal slot pairs of whole tokens (authors) or one active pair per token.
    /// A diagonal pair is fixed by its token, so the authors' variant takes
    /// distinct tokens only: at most tokens·k pairs, however many are asked for.
    static func ablationPairs<T: JSAEScalar>(_ v: AnalysisVariant, _ f: ForwardFile<T>, count: Int, seed: UInt64) -> [SlotPair] {
        var g = SeededGenerator(seed: seed)
        let k = f.k, tokens = f.xHat.rows
        switch v {
        case .authors:
            var pairs: [SlotPair] = []
            for b in Array(0..<tokens).shuffled(using: &g) where pairs.count < count {
                for s in 0..<k { pairs.append(SlotPair(token: b, inSlot: s, outSlot: s)) }
            }
            return pairs
        case .reconstruction:
            return activePairs(f, count: count, using: &g)
        }
    }

    /// Random tokens, each with one random active input slot and active output slot;
    /// tokens without an active latent on either side are skipped.
    static func activePairs<T: JSAEScalar>(_ f: ForwardFile<T>, count: Int, using g: inout SeededGenerator) -> [SlotPair] {
        let k = f.k, tokens = f.xHat.rows
        guard let outValues = f.outValues else { return [] }
        // Distinct (token, input slot, output slot) triples: a repeat would be an
        // exact copy of an earlier sample and narrow the interval for nothing.
        var pairs: [SlotPair] = [], seen = Set<Int>(), tries = 0
        while pairs.count < count && tries < 20 * count {
            tries += 1
            let b = Int.random(in: 0..<tokens, using: &g)
            let ps = (0..<k).filter { f.inValues[b * k + $0] > 0 }, qs = (0..<k).filter { outValues[b * k + $0] > 0 }
            guard let p = ps.randomElement(using: &g), let q = qs.randomElement(using: &g), seen.insert((b * k + p) * k + q).inserted else { continue }
            pairs.append(SlotPair(token: b, inSlot: p, outSlot: q))
        }
        return pairs
    }
}

/// Runs both analyses of one variant on one run.
/// - bases: the evaluation point per token of `f` ([tokens, d]: x for authors, x̂ for reconstruction)
/// - f: the forward file at that point (codes, K2 and J)
func connectionAnalysis(_ model: JSAEModel<Float>, variant: AnalysisVariant, path: ModelPath, bases: Matrix<Float>,
                        forward f: ForwardFile<Float>, linearitySamples: Int, ablationSamples: Int, seed: UInt64,
                        threads: Int) -> ConnectionAnalysis {
    let started = Date()
    let k = f.k, d = model.d
    let outIdx = f.outIndices!, J = f.jacobian!
    let grid = 100
    // Linearity: a batch of up to 32 connections, 100 points each.
    var counts = [ResponseShape: Int]()
    let lin = ConnectionSampling.linearityPairs(variant, f, count: linearitySamples, seed: seed &+ 17)
    for batch in stride(from: 0, to: lin.count, by: 32).map({ lin[$0..<min(lin.count, $0 + 32)] }) {
        var inputs = Matrix<Float>(rows: batch.count * grid, cols: d)
        var latents: [Int] = [], grids: [[Double]] = []
        for (n, s) in batch.enumerated() {
            let j = f.inIndices[s.token * k + s.inSlot], sj = Double(f.inValues[s.token * k + s.inSlot])
            let g = (0..<grid).map { Double($0) * max(5, sj + 1) / Double(grid - 1) }
            model.moveAlongInputLatent(&inputs, at: n * grid, base: bases.row(s.token), inputLatent: j, offsets: g.map { $0 - sj })
            latents += Array(repeating: outIdx[s.token * k + s.outSlot], count: grid)
            grids.append(g)
        }
        let values = model.outputLatentValues(inputs, latents: latents, threads: threads).map(Double.init)
        for n in batch.indices.map({ $0 - batch.startIndex }) {
            let curve = Array(values[(n * grid)..<((n + 1) * grid)])
            let shape = variant == .authors ? classifyResponseAsAuthors(grid: grids[n], values: curve)
                                            : classifyResponse(grid: grids[n], values: curve)
            counts[shape, default: 0] += 1
        }
    }
    // Ablation: Δ = s_i(base − d_j) − s_i(base), both through the full TopK, against −J.
    var agree = 0
    let abl = ConnectionSampling.ablationPairs(variant, f, count: ablationSamples, seed: seed &+ 29)
    for batch in stride(from: 0, to: abl.count, by: 1024).map({ abl[$0..<min(abl.count, $0 + 1024)] }) {
        var inputs = Matrix<Float>(rows: 2 * batch.count, cols: d)
        var latents: [Int] = []
        for (n, s) in batch.enumerated() {
            model.moveAlongInputLatent(&inputs, at: 2 * n, base: bases.row(s.token), inputLatent: f.inIndices[s.token * k + s.inSlot],
                                       offsets: [0, -1])
            let i = outIdx[s.token * k + s.outSlot]
            latents += [i, i]
        }
        let v = model.outputLatentValues(inputs, latents: latents, threads: threads).map(Double.init)
        for (n, s) in batch.enumerated() {
            let delta = v[2 * n + 1] - v[2 * n]
            if abs(Double(J[s.token * k * k + s.outSlot * k + s.inSlot]) + delta) < 0.1 { agree += 1 }
        }
    }
    let n = lin.count
    return ConnectionAnalysis(variant: variant, path: path,
                              linear: Proportion(counts[.linear] ?? 0, of: n), jumpReLU: Proportion(counts[.jumpReLU] ?? 0, of: n),
                              other: Proportion(counts[.other] ?? 0, of: n), ablationAgrees: Proportion(agree, of: abl.count),
                              seconds: Date().timeIntervalSince(started))
}
