import Foundation
import Testing
import JSAECore
@testable import JSAEReport
import _JSAETestSupport

/// The reproduction's protocol analyses on hand-built cases whose answers
/// are worked out by hand (or, for Wilson intervals, taken from the
/// literature), never from the code under test.
@Suite("Protocol analyses")
struct ProtocolAnalysesTests {
    @Test("Wilson intervals match published values")
    func wilson() {
        // Newcombe (1998), Statistics in Medicine 17:857, Table I: 81/263 → 0.2553–0.3662;
        // 15/148 → 0.0624–0.1605; 0/20 → 0.0000–0.1611; 1/29 → 0.0061–0.1718.
        for (c, n, lo, hi) in [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)] {
            let p = Proportion(c, of: n)
            // The table gives 4 decimals.
            #expect(abs(p.low - lo) < 6e-5 && abs(p.high - hi) < 6e-5, "\(c)/\(n): \(p)")
            #expect(p.share == Double(c) / Double(n))
        }
        let none = Proportion(0, of: 0)
        #expect(none.share == 0 && none.low == 0 && none.high == 1)
    }

    @Test("threshold counts: > t, ≥ t, and the authors' histogram that stops at 1.1")
    func thresholdCounts() {
        // |J| = 0.01, 0.01, 0.02, 1.2, 0.0049, 2, 0, 0.5, counted by hand for t = 0.005, 0.01, 0.015, 0.02:
        //   > t:              6, 4, 4, 3   (0.01 is not > 0.01; 0.02 is not > 0.02)
        //   ≥ t:              6, 6, 4, 4
        //   t ≤ |J| ≤ 1.1:    4, 4, 2, 2   (1.2 and 2 lie outside the authors' histogram)
        let J: [Double] = [0.01, -0.01, 0.02, 1.2, 0.0049, -2, 0, 0.5]
        let c = ThresholdCounts(J)
        #expect(c.entries == 8)
        #expect(c.above == [6, 4, 4, 3] && c.atLeast == [6, 6, 4, 4] && c.atLeastWithinHistogram == [4, 4, 2, 2])
        var split = ThresholdCounts(Array(J.prefix(3)))
        split.add(Array(J.dropFirst(3)))
        #expect(split == c)
        #expect(jacobianShares(J) == c.above.map { Double($0) / 8 })
    }

    @Test("the authors' response classifier, case by case")
    func authorsClassifier() {
        let u = (0..<10).map(Double.init)
        #expect(classifyResponseAsAuthors(grid: u, values: u.map { 2 * $0 + 1 }) == .linear)
        #expect(classifyResponseAsAuthors(grid: u, values: u.map { _ in 0 }) == .linear)   // flat is linear
        // Zeros up to u = 3, then a line: JumpReLU.
        #expect(classifyResponseAsAuthors(grid: u, values: u.map { $0 <= 3 ? 0 : $0 - 3 + 0.5 }) == .jumpReLU)
        // A line, then zeros to the end: JumpReLU.
        #expect(classifyResponseAsAuthors(grid: u, values: u.map { $0 >= 7 ? 0 : 3 + $0 }) == .jumpReLU)
        // Zeros only in the middle: touches neither end.
        #expect(classifyResponseAsAuthors(grid: u, values: u.map { (4...5).contains($0) ? 0 : 1 + $0 }) == .other)
        // Zeros at both ends but not contiguous.
        #expect(classifyResponseAsAuthors(grid: u, values: u.map { $0 == 0 || $0 == 9 ? 0 : $0 }) == .other)
        // Zeros everywhere but the last point: fewer than 2 points outside the zero run.
        #expect(classifyResponseAsAuthors(grid: u, values: u.map { $0 == 9 ? 5 : 0 }) == .other)
        // A kink without zeros.
        #expect(classifyResponseAsAuthors(grid: u, values: u.map { abs($0 - 5) }) == .other)
    }

    @Test("selectivity: precision and recall per latent on a hand-built case")
    func selectivityByHand() {
        // 4 tokens, k = 2; tokens 0 and 1 are German.
        //   t0: latent 0 = 1.0, latent 1 = 0.5    t1: latent 0 = 2.0, latent 2 = 0 (selected, not firing)
        //   t2: latent 1 = 1.0, latent 2 = 3.0    t3: latent 0 = 0 (not firing), latent 1 = 1.0
        let indices = [0, 1, 0, 2, 1, 2, 0, 1]
        let values: [Float] = [1, 0.5, 2, 0, 1, 3, 0, 1]
        let s = selectivity(indices: indices, values: values, k: 2, labels: [true, true, false, false], m: 4)
        #expect(s[0] == Selectivity(latent: 0, firings: 2, labelledFirings: 2, precision: 1, recall: 1))
        #expect(s[1] == Selectivity(latent: 1, firings: 3, labelledFirings: 1, precision: 1.0 / 3, recall: 0.5))
        #expect(s[2] == Selectivity(latent: 2, firings: 1, labelledFirings: 0, precision: 0, recall: 0))
        #expect(s[3] == Selectivity(latent: 3, firings: 0, labelledFirings: 0, precision: 0, recall: 0))
    }

    @Test("the German rule: highest recall at precision ≥ 0.9 and ≥ 10 firings; the best F1 otherwise, marked")
    func germanRule() {
        func s(_ i: Int, _ fire: Int, _ hit: Int, _ recall: Double) -> Selectivity {
            Selectivity(latent: i, firings: fire, labelledFirings: hit, precision: Double(hit) / Double(fire), recall: recall)
        }
        let all = [s(0, 100, 95, 0.4), s(1, 9, 9, 0.9), s(2, 50, 46, 0.5), s(3, 200, 100, 0.8), s(4, 50, 46, 0.5)]
        // 1 fires too rarely; 3 is not precise enough; 2 and 4 tie on recall and precision: the lower index.
        let (best, ok) = GermanRule.choose(all)!
        #expect(best.latent == 2 && ok)
        // Without a precise latent: F1 of 3 (0.5 precision, 0.8 recall) is 0.615, of 5 (0.85, 0.3) 0.443.
        let (fallback, ok2) = GermanRule.choose([s(3, 200, 100, 0.8), s(5, 100, 85, 0.3)])!
        #expect(fallback.latent == 3 && !ok2)
        #expect(GermanRule.choose([s(6, 5, 5, 1)]) == nil)
    }

    @Test("the German unit's inputs and top-5 share on a hand-built pair")
    func germanUnitByHand() {
        // k = 2, 3 tokens (German, German, other). Output latent 7 fires on both German tokens only.
        // J[token][output slot][input slot].
        //   t0: in (3: 1.0, 4: 1.0), out (7: 0.5, 8: 0.2); J row of slot 0 (latent 7) = [0.3, -0.1]
        //   t1: in (3: 2.0, 5: 1.0), out (8: 0.1, 7: 0.4); J row of slot 1 (latent 7) = [-0.5, 0.2]
        //   t2: in (4: 1.0, 5: 1.0), out (8: 0.3, 9: 0.6)
        // The three tokens five times over (15 tokens), so that latents fire the rule's 10 times.
        func five<E>(_ a: [E]) -> [E] { Array(Array(repeating: a, count: 5).joined()) }
        let big = PairCodes(k: 2, inIndices: five([3, 4, 3, 5, 4, 5]), inValues: five([1, 1, 2, 1, 1, 1]),
                            outIndices: five([7, 8, 8, 7, 8, 9]), outValues: five([0.5, 0.2, 0.1, 0.4, 0.3, 0.6]),
                            jacobian: five([0.3, -0.1, 9, 9, /* t1 */ 9, 9, -0.5, 0.2, /* t2 */ 9, 9, 9, 9]))
        let labels = five([true, true, false])
        let unit = germanUnit(run: "jsae-pretrained", codes: big, mIn: 6, mOut: 10, labels: labels) { _, l in ["latent \(l)"] }!
        // Latent 7: 10 firings, all German, recall 10/10. Latent 8 fires on all 15 (10 German): precision 2/3;
        // latent 9 fires 5 times, under the rule's 10.
        #expect(unit.output.latent == 7 && unit.qualifies && unit.output.precision == 1 && unit.output.recall == 1)
        // |J| into 7 per copy: latent 3: 0.3 + 0.5 = 0.8; latent 4: 0.1; latent 5: 0.2; 5 copies over 10 active tokens.
        #expect(unit.inputs.map(\.latent) == [3, 5, 4])
        // Float J summed in Double: 1e-6 covers Float's rounding of 0.3, 0.5, 0.2.
        #expect(abs(unit.inputs[0].meanAbsJ - 0.4) < 1e-6 && abs(unit.inputs[1].meanAbsJ - 0.1) < 1e-6 && abs(unit.inputs[2].meanAbsJ - 0.05) < 1e-6)
        #expect(abs(unit.topFiveShare - 1) < 1e-12)   // only 3 inputs
        // Latent 3 fires on t0 and t1 (German): precision 1; latents 4 and 5 on one German and one other token: 1/2.
        #expect(unit.inputs[0].selectivity.precision == 1 && unit.inputs[1].selectivity.precision == 0.5 && unit.inputs[2].selectivity.precision == 0.5)
        #expect(unit.germanInputs == 1)
        #expect(abs(unit.meanActivationGerman - (0.5 + 0.4) / 2) < 1e-6 && unit.meanActivationOther == 0)
    }

    @Test("the processed model: x_n through the folded MLP gives the centred f(x), and W_in' reads no mean")
    func processedModel() throws {
        var g = SeededGenerator(seed: 5)
        let d = 6, h = 10, B = 4
        func randoms(_ n: Int, _ s: Float = 1) -> [Float] { (0..<n).map { _ in Float.random(in: -s...s, using: &g) } }
        let mlp = try MLP<Float>(wIn: Matrix(rows: d, cols: h, data: randoms(d * h, 0.5)), bIn: randoms(h, 0.1),
                                 wOut: Matrix(rows: h, cols: d, data: randoms(h * d, 0.5)), bOut: randoms(d, 0.1), activation: .gelu)
        let w = randoms(d).map { Double($0) + 1.5 }, b = randoms(d).map(Double.init)
        // x as a LayerNorm's output: w ⊙ z + b with z of mean 0 over d.
        var x = Matrix<Float>(rows: B, cols: d)
        for r in 0..<B {
            var z = randoms(d); let mean = z.reduce(0, +) / Float(d); z = z.map { $0 - mean }
            for c in 0..<d { x[r, c] = Float(w[c]) * z[c] + Float(b[c]) }
        }
        let folded = try ProcessedModel.mlp(mlp, w: w, b: b)
        let xn = ProcessedModel.inputs(x, w: w, b: b)
        let y = mlp.forward(x).y, yp = folded.forward(xn).y
        for r in 0..<B {
            let mean = (0..<d).reduce(Float(0)) { $0 + y[r, $1] } / Float(d)
            // Float rounding through one folded product of 6 terms and GELU.
            for c in 0..<d { #expect(abs(yp[r, c] - (y[r, c] - mean)) < 1e-5, "row \(r) col \(c)") }
        }
        for j in 0..<h { #expect(abs((0..<d).reduce(Float(0)) { $0 + folded.wIn[$1, j] }) < 1e-5) }
    }
}
