import Testing
import JSAECore
import _JSAETestSupport

@Suite("f_s linearity and ablation")
struct AnalysisTests {
    let grid = (0..<100).map { Double($0) * 5 / 99 }

    @Test("Classification of response curves")
    func classification() {
        #expect(classifyResponse(grid: grid, values: grid.map { 0.3 * $0 - 0.2 }) == .linear)
        #expect(classifyResponse(grid: grid, values: grid.map { max(0, 0.3 * $0 - 0.6) > 0 ? 0.3 * $0 - 0.6 : 0 }) == .jumpReLU)
        // A jump: zero, then a line that does not start at zero.
        #expect(classifyResponse(grid: grid, values: grid.map { $0 < 2 ? 0 : 0.3 * $0 + 0.5 }) == .jumpReLU)
        #expect(classifyResponse(grid: grid, values: grid.map { $0 > 3 ? 0 : 1 - 0.1 * $0 }) == .jumpReLU)
        #expect(classifyResponse(grid: grid, values: grid.map { 0.2 * $0 * $0 }) == .other)
        #expect(classifyResponse(grid: grid, values: grid.map { $0 < 2 ? 0 : 0.2 * $0 * $0 }) == .other)
        // Residuals just under / over the 1e-2 tolerance.
        #expect(classifyResponse(grid: grid, values: grid.enumerated().map { $0.1 + ($0.0 % 2 == 0 ? 0.009 : -0.009) }) == .linear)
        #expect(classifyResponse(grid: grid, values: grid.enumerated().map { $0.1 + ($0.0 % 2 == 0 ? 0.02 : -0.02) }) == .other)
    }

    @Test("The response curve's slope at s_j is the Jacobian entry (K1, K2 unchanged nearby)",
          arguments: EvaluationPoint.allCases)
    func responseMatchesJacobian(_ point: EvaluationPoint) throws {
        let (model, x) = randomModel(PairShape.sweep[4], seed: 111)
        let r = model.forward(x, point: point)
        let k = model.k
        var checked = 0
        for b in 0..<x.rows {
            let codesIn = r.codesIn.indices(ofToken: b), valuesIn = Array(r.codesIn.values[(b * k)..<((b + 1) * k)])
            let codesOut = Array(r.codesOut!.indices(ofToken: b)), valuesOut = Array(r.codesOut!.values[(b * k)..<((b + 1) * k)])
            guard let p = valuesIn.firstIndex(where: { $0 > 0.1 }), let q = valuesOut.firstIndex(where: { $0 > 0.1 }) else { continue }
            let j = Array(codesIn)[p], i = codesOut[q], sj = valuesIn[p]
            // ε = 1e-5 around s_j, where neither TopK set changes for a random model.
            let eps = 1e-5
            let curve = model.response(token: x.row(b), inputLatent: j, outputLatent: i, grid: [sj - eps, sj, sj + eps], point: point)
            #expect(abs(curve.values[1] - valuesOut[q]) < 1e-12, "response at s_j is the forward value")
            let slope = (curve.values[2] - curve.values[0]) / (2 * eps)
            let Jqp = r.jacobian![b * k * k + q * k + p]
            // Central difference of a smooth function: truncation ~ε², rounding ~1e-16/ε.
            #expect(abs(slope - Jqp) < 1e-7 + 1e-6 * abs(Jqp), "slope \(slope) vs J \(Jqp)")
            // Ablation is the same curve one unit down: Δ = f(s_j − 1) − f(s_j).
            let ab = model.ablation(token: x.row(b), inputLatent: j, outputLatent: i, jacobianEntry: Jqp, point: point)
            let down = model.response(token: x.row(b), inputLatent: j, outputLatent: i, grid: [sj - 1, sj], point: point)
            #expect(abs(ab.delta - (down.values[0] - down.values[1])) < 1e-12)
            #expect(ab.agrees == (abs(Jqp + ab.delta) < 0.1))
            checked += 1
        }
        #expect(checked > 3)
    }

    @Test("The default grid is linspace(0, max(5, s_j + 1), 100)")
    func defaultGrid() {
        let (model, x) = randomModel(PairShape.sweep[0], seed: 112)
        let codes = model.saeIn.encode(x)
        let j = codes.indices[0]
        let c = model.response(token: x.row(0), inputLatent: j, outputLatent: 0)
        #expect(c.grid.count == 100 && c.grid[0] == 0)
        #expect(abs(c.grid[99] - max(5, Double(codes.values[0]) + 1)) < 1e-12)
    }

    /// The analyses' batched reader must be exactly the composition it stands
    /// for: the MLP's y (computed there without φ'), the output SAE's full
    /// TopK, and the slot holding the latent. Same operations in the same
    /// order, so the same bits; 1,100 rows cross the encoder's 512-row chunks.
    @Test("outputLatentValues is the output SAE's TopK of f(x) read at each latent, bit for bit",
          arguments: [0, 1, 4])
    func outputLatentValuesComposition(_ shape: Int) {
        var s = PairShape.sweep[shape]
        s.tokens = 1100
        let (model, x) = randomModel(s, seed: 113)
        var g = SeededGenerator(seed: 114)
        let latents = (0..<x.rows).map { _ in Int.random(in: 0..<model.saeOut!.m, using: &g) }
        func expected<T: JSAEScalar>(_ m: JSAEModel<T>, _ x: Matrix<T>) -> [T] {
            let codes = m.saeOut!.encode(m.mlp!.forward(x, threads: 2).y, threads: 2)
            return latents.enumerated().map { r, i in
                (0..<codes.k).first { codes.indices[r * codes.k + $0] == i }.map { codes.values[r * codes.k + $0] } ?? 0
            }
        }
        let want = expected(model, x), got = model.outputLatentValues(x, latents: latents, threads: 2)
        #expect(got == want)
        #expect(want.contains { $0 > 0 } && want.contains { $0 == 0 })
        let mf: JSAEModel<Float> = model.converted(), xf: Matrix<Float> = x.converted()
        #expect(mf.outputLatentValues(xf, latents: latents, threads: 1) == expected(mf, xf))
    }

    @Test("moveAlongInputLatent writes base + o·W_dec_x[j] into the rows from `at`, nothing else")
    func moveAlong() {
        let (model, x) = randomModel(PairShape.sweep[4], seed: 115)
        let base = x.row(2), j = 5, offsets = [0, -1, 2.5]
        var inputs = Matrix<Double>(rows: 6, cols: model.d)
        for r in 0..<6 { for c in 0..<model.d { inputs[r, c] = -7 } }
        model.moveAlongInputLatent(&inputs, at: 2, base: base, inputLatent: j, offsets: offsets)
        let w = model.saeIn.wDec
        for r in 0..<6 {
            for c in 0..<model.d {
                let want = (2..<5).contains(r) ? base[c] + offsets[r - 2] * w[j, c] : -7
                #expect(inputs[r, c] == want)
            }
        }
    }
}
