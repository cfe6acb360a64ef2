import Testing
import JSAECore
import _JSAETestSupport

/// Central-difference Jacobian of the output SAE's pre-activations on K2 with
/// respect to the input latents on K1, with K1 and K2 frozen, computed with
/// plain loops (no BLAS, no wd1/w2e).
///
/// Both evaluation points move the MLP input along W_dec_x[K1[p]]:
/// trueInput from x (x(s) = x + (s − s_x) @ W_dec_x, SAE error held fixed),
/// reconstruction from x̂ (x̂(s) = s @ W_dec_x + b_dec_x).
func finiteDifferenceJacobian(model: JSAEModel<Double>, base: [Double], k1: [Int], k2: [Int], eps: Double) -> [Double] {
    let k = k1.count, mlp = model.mlp!, saeOut = model.saeOut!, d = model.d
    var J = [Double](repeating: 0, count: k * k)
    for p in 0..<k {
        let row = model.saeIn.wDec.row(k1[p])
        let plus = (0..<d).map { base[$0] + eps * row[$0] }
        let minus = (0..<d).map { base[$0] - eps * row[$0] }
        let hp = naivePreacts(naiveMLP(plus, mlp).y, saeOut)
        let hm = naivePreacts(naiveMLP(minus, mlp).y, saeOut)
        for q in 0..<k { J[q * k + p] = (hp[k2[q]] - hm[k2[q]]) / (2 * eps) }
    }
    return J
}

/// The full chain by dense matrices, then restricted: dh_y/ds = W_dec_x · (W_in diag(φ') W_out) · W_enc_y.
func denseChainJacobian(model: JSAEModel<Double>, phi: [Double], k1: [Int], k2: [Int]) -> [Double] {
    let mlp = model.mlp!, d = model.d, h = mlp.dMlp, k = k1.count
    var M = [Double](repeating: 0, count: d * d)  // dense MLP Jacobian dy/dx, [d, d]
    for i in 0..<d { for j in 0..<d { for r in 0..<h { M[i * d + j] += mlp.wIn[i, r] * phi[r] * mlp.wOut[r, j] } } }
    var J = [Double](repeating: 0, count: k * k)
    for q in 0..<k {
        for p in 0..<k {
            var acc = 0.0
            for i in 0..<d { for j in 0..<d {
                acc += model.saeIn.wDec[k1[p], i] * M[i * d + j] * model.saeOut!.wEnc[j, k2[q]]
            } }
            J[q * k + p] = acc
        }
    }
    return J
}

@Suite("The k×k Jacobian")
struct JacobianTests {
    // ε = 1e-5 on O(1) inputs (x, W_dec rows ~ N(0, 1/d)): central-difference
    // truncation is ε²/6·|∂³h| ≲ 1e-10 and rounding ~1e-16·|h|/ε ≲ 1e-10, so
    // atol 1e-7 + rtol 1e-6 leaves a 1000× margin, yet any wrong term (φ' at
    // the other point, a swapped index order) is off by 1e-3 or more.
    static let eps = 1e-5, rtol = 1e-6, atol = 1e-7

    @Test("Analytic J matches central differences with K1, K2 frozen",
          arguments: PairShape.sweep, EvaluationPoint.allCases)
    func finiteDifferences(_ s: PairShape, _ point: EvaluationPoint) {
        let (model, x) = randomModel(s, seed: 21)
        let r = model.forward(x, point: point)
        let k = s.k
        for b in 0..<x.rows {
            let k1 = Array(r.codesIn.indices(ofToken: b)), k2 = Array(r.codesOut!.indices(ofToken: b))
            let base = point == .trueInput ? x.row(b) : r.xHat.row(b)
            let fd = finiteDifferenceJacobian(model: model, base: base, k1: k1, k2: k2, eps: Self.eps)
            let analytic = Array(r.jacobian![(b * k * k)..<((b + 1) * k * k)])
            let c = closeness(analytic, fd, rtol: Self.rtol, atol: Self.atol)
            #expect(c.ratio <= 1, "\(s) \(point) token \(b): entry \(c.index) analytic \(c.a) vs fd \(c.b)")
        }
    }

    @Test("The check discriminates: J at one evaluation point fails the other point's finite differences")
    func checkCanFail() {
        let s = PairShape.sweep[0]
        let (model, x) = randomModel(s, seed: 21)
        let rTrue = model.forward(x, point: .trueInput)
        let k = s.k
        let k1 = Array(rTrue.codesIn.indices(ofToken: 0)), k2 = Array(rTrue.codesOut!.indices(ofToken: 0))
        // Same index sets, but differences taken around x̂ instead of x.
        let fdAtXHat = finiteDifferenceJacobian(model: model, base: rTrue.xHat.row(0), k1: k1, k2: k2, eps: Self.eps)
        #expect(!allClose(Array(rTrue.jacobian![0..<(k * k)]), fdAtXHat, rtol: Self.rtol, atol: Self.atol))
    }

    @Test("Efficient wd1/w2e path equals the dense full chain restricted to K2 × K1",
          arguments: PairShape.sweep, EvaluationPoint.allCases)
    func naiveChain(_ s: PairShape, _ point: EvaluationPoint) {
        let (model, x) = randomModel(s, seed: 31)
        let r = model.forward(x, point: point)
        let k = s.k
        for b in 0..<x.rows {
            let k1 = Array(r.codesIn.indices(ofToken: b)), k2 = Array(r.codesOut!.indices(ofToken: b))
            let want = denseChainJacobian(model: model, phi: r.phiPrime!.row(b), k1: k1, k2: k2)
            // Same sums in another association order: rounding only (≤ ~1e-14 here).
            #expect(allClose(Array(r.jacobian![(b * k * k)..<((b + 1) * k * k)]), want, rtol: 1e-10, atol: 1e-12))
        }
    }

    @Test("Chunked Jacobian equals the unchunked one exactly", arguments: [1, 2, 3, 4, 11, 1000])
    func chunking(_ chunk: Int) {
        let s = PairShape.sweep[4]
        let (model, x) = randomModel(s, seed: 41)
        let whole = model.forward(x, point: .trueInput, chunk: x.rows).jacobian!
        let chunked = model.forward(x, point: .trueInput, chunk: chunk).jacobian!
        // Each token's block is the same small gemm on the same data: bitwise equal.
        #expect(chunked == whole)
    }

    @Test("Float path agrees with Double path", arguments: PairShape.sweep, EvaluationPoint.allCases)
    func floatVsDouble(_ s: PairShape, _ point: EvaluationPoint) throws {
        let (model, x) = randomModel(s, seed: 51)
        let rd = model.forward(x, point: point)
        let rf = model.converted(to: Float.self).forward(x.converted(to: Float.self), point: point)
        // Index sets must agree for the comparison to mean anything; the seed
        // is chosen so that no kth/(k+1)th gap is within Float rounding.
        try #require(rf.codesIn.indices == rd.codesIn.indices)
        try #require(rf.codesOut!.indices == rd.codesOut!.indices)
        // Float has ε ≈ 6e-8; every quantity is a sum of at most d·d_mlp ≈ 240
        // products of O(1) terms, so accumulated error stays below ~1e-5.
        #expect(allClose(rf.codesIn.values, rd.codesIn.values, rtol: 1e-4, atol: 1e-5))
        #expect(allClose(rf.xHat.data, rd.xHat.data, rtol: 1e-4, atol: 1e-5))
        #expect(allClose(rf.y!.data, rd.y!.data, rtol: 1e-4, atol: 1e-5))
        #expect(allClose(rf.yHat!.data, rd.yHat!.data, rtol: 1e-4, atol: 1e-5))
        #expect(allClose(rf.jacobian!, rd.jacobian!, rtol: 1e-4, atol: 1e-5))
        let cd = rd.sums.components(lambda: 0.7), cf = rf.sums.components(lambda: 0.7)
        #expect(allClose([cf.mseIn, cf.mseOut, cf.jacobianL1, cf.loss], [cd.mseIn, cd.mseOut, cd.jacobianL1, cd.loss], rtol: 1e-4, atol: 1e-6))
    }

    @Test("Loss components follow the reference normalisation")
    func lossNormalisation() {
        let s = PairShape.sweep[0]
        let (model, x) = randomModel(s, seed: 61)
        let r = model.forward(x, point: .trueInput)
        var sqIn = 0.0, sqOut = 0.0
        for i in 0..<x.count { sqIn += (r.xHat.data[i] - x.data[i]) * (r.xHat.data[i] - x.data[i]) }
        for i in 0..<x.count { sqOut += (r.yHat!.data[i] - r.y!.data[i]) * (r.yHat!.data[i] - r.y!.data[i]) }
        let jac = r.jacobian!.map { abs($0) }.reduce(0, +)
        let n = Double(x.rows)
        let c = r.sums.components(lambda: 0.25)
        #expect(allClose([c.mseIn, c.mseOut, c.jacobianL1],
                         [sqIn / (n * Double(s.d)), sqOut / (n * Double(s.d)), jac / (n * Double(s.k * s.k))], rtol: 1e-13, atol: 0))
        #expect(abs(c.loss - (c.mseIn + c.mseOut + 0.25 * c.jacobianL1)) <= 1e-15 * c.loss)
        // Summing per-chunk sums reproduces the whole-batch components.
        var acc = LossSums()
        for range in [0..<4, 4..<9] {
            acc.add(model.forward(x.rows(range), point: .trueInput).sums)
        }
        let ca = acc.components(lambda: 0.25)
        #expect(allClose([ca.mseIn, ca.mseOut, ca.jacobianL1], [c.mseIn, c.mseOut, c.jacobianL1], rtol: 1e-13, atol: 0))
    }
}
