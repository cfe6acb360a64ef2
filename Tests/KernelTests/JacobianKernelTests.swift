import Testing
#if canImport(Glibc)
import Glibc
#endif
import CJSAEKernels
import KernelReference

// Dimension letters as in CJSAEKernels.h: k latents per token, h = d_mlp,
// mIn / mOut rows of wd1 / w2eT; q indexes K2 (rows of J), p indexes K1.

/// SplitMix64: a fixed stream of test data, the same on every run.
private struct SplitMix {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    mutating func float() -> Float { Float(Double(next() >> 11) / Double(1 << 52) - 1) }
    mutating func index(_ n: Int) -> Int64 { Int64(next() % UInt64(n)) }
}

/// One token's inputs at a given shape.
private struct Case {
    let k: Int, h: Int, mIn: Int, mOut: Int
    var wd1: [Float], w2eT: [Float], phi: [Float], K1: [Int64], K2: [Int64]
    let coef: Float = 0.75

    init(k: Int, h: Int, seed: UInt64, zeroPhi: Bool = false) {
        var g = SplitMix(state: seed)
        self.k = k; self.h = h
        // Different row counts, so a swapped wd1/w2eT or K1/K2 reads out of range or wrong rows.
        mIn = 2 * k + 3; mOut = 3 * k + 5
        wd1 = (0..<(mIn * h)).map { _ in g.float() }
        w2eT = (0..<(mOut * h)).map { _ in g.float() }
        phi = (0..<h).map { _ in zeroPhi ? 0 : g.float() }
        K1 = (0..<k).map { _ in g.index(2 * k + 3) }
        K2 = (0..<k).map { _ in g.index(3 * k + 5) }
    }
}

/// The kernel's outputs for one token on one path.
private struct Outputs { var J: [Float], dL: [Float], dR: [Float] }

private func runKernel(_ c: Case, path: jsae_kernel_path, backward: Bool = true) -> Outputs {
    var out = Outputs(J: [Float](repeating: .nan, count: c.k * c.k),
                      dL: [Float](repeating: .nan, count: c.k * c.h), dR: [Float](repeating: .nan, count: c.k * c.h))
    // NaN-filled workspace: a result that read anything it did not first write would show it.
    var ws = [Float](repeating: .nan, count: jsae_jacobian_workspace_floats(Int64(c.k), Int64(c.h)))
    out.J.withUnsafeMutableBufferPointer { J in out.dL.withUnsafeMutableBufferPointer { dL in
    out.dR.withUnsafeMutableBufferPointer { dR in ws.withUnsafeMutableBufferPointer { w in
        jsae_jacobian_token_f32(J.baseAddress, backward ? dL.baseAddress : nil, backward ? dR.baseAddress : nil,
                                w.baseAddress, c.wd1, c.w2eT, c.phi, c.K1, c.K2, c.coef, nil, nil, nil,
                                Int64(c.k), Int64(c.h), nil, path)
    } } } }
    return out
}

private let u = Double(Float.ulpOfOne) / 2  // unit roundoff of Float, 2⁻²⁴

/// Checks the kernel's J, dL, dR against a Double reference. Returns the
/// number of entries outside their bound (0 = pass), and the worst error
/// as a share of its bound.
///
/// Tolerances (Higham, "Accuracy and Stability of Numerical Algorithms", §3.1):
/// a sum of n products, each input rounded to Float at most once before the
/// product and each product-and-add an FMA or a multiply then an add, in any
/// order, is within γ_{n+2} · Σ|terms| of the exact sum, with γ_n ≈ n·u. The
/// forward J sums h terms, whose R factor wd1·φ' is rounded once
/// (n = h + 1); the backward sums k terms with G = ±coef exact and R rounded
/// once. So each entry gets tol = (n + 2)·u·Σ|terms|: an upper bound for every
/// path and summation order (random data sit near √n·u, well inside), and
/// still a tight one against real bugs: dropping φ', a wrong row or a missed
/// block changes entries by O(Σ|terms|), ~10⁵ times the bound.
/// The backward's G = coef·sign(J) is taken from the kernel's own J: where
/// |J| is within its rounding bound of 0 the two signs may legitimately
/// differ, and the J check above already bounds how far J may be off.
/// The Double reference of one case: J once, and the backward for the last
/// G asked for (every path usually gives the same G, so it is computed once).
private final class Reference {
    let c: Case
    var Jref: [Double], Jabs: [Double]
    var G: [Double] = [], dLref: [Double] = [], dLabs: [Double] = [], dRref: [Double] = [], dRabs: [Double] = []
    init(_ c: Case) {
        self.c = c
        Jref = [Double](repeating: 0, count: c.k * c.k); Jabs = Jref
        jsae_reference_forward(&Jref, &Jabs, c.wd1, c.w2eT, c.phi, c.K1, c.K2, Int64(c.k), Int64(c.h))
    }
    func backward(_ G: [Double]) {
        if G == self.G { return }
        self.G = G
        dLref = [Double](repeating: 0, count: c.k * c.h); dLabs = dLref; dRref = dLref; dRabs = dLref
        jsae_reference_backward(&dLref, &dLabs, &dRref, &dRabs, G, c.wd1, c.w2eT, c.phi, c.K1, c.K2, Int64(c.k), Int64(c.h))
    }
}

private func check(_ ref: Reference, _ o: Outputs) -> (bad: Int, worst: Double) {
    let c = ref.c, k = c.k, h = c.h
    var bad = 0, worst = 0.0
    func cmp(_ got: Float, _ exact: Double, _ absSum: Double, _ n: Int) {
        let tol = Double(n + 2) * u * absSum
        let err = abs(Double(got) - exact)
        // got != got: NaN. tol == 0 (all terms exactly 0) demands an exact 0.
        if got != got || err > tol { bad += 1 }
        if tol > 0 { worst = max(worst, err / tol) }
    }
    for e in 0..<(k * k) { cmp(o.J[e], ref.Jref[e], ref.Jabs[e], h) }
    ref.backward(o.J.map { Double($0 > 0 ? c.coef : ($0 < 0 ? -c.coef : 0)) })
    for e in 0..<(k * h) {
        cmp(o.dL[e], ref.dLref[e], ref.dLabs[e], k)
        cmp(o.dR[e], ref.dRref[e], ref.dRabs[e], k)
    }
    return (bad, worst)
}

/// Every path this CPU can run (AVX-512 is skipped where absent, and said so).
private let paths: [jsae_kernel_path] = [JSAE_KERNEL_PORTABLE, JSAE_KERNEL_AVX2, JSAE_KERNEL_AVX512]
    .filter { jsae_kernel_path_supported($0) != 0 }

private let shapes: [(k: Int, h: Int)] = [1, 3, 8, 32, 33, 64].flatMap { k in [1, 7, 64, 2048, 3072].map { (k, $0) } }
    // plus a ragged last block of r at the largest k
    + [(64, 2049)]

@Test(arguments: shapes.map { "\($0.k)x\($0.h)" })
func kernelMatchesDoubleReference(shape: String) {
    let kh = shape.split(separator: "x").map { Int($0)! }
    let c = Case(k: kh[0], h: kh[1], seed: UInt64(kh[0] * 10_007 + kh[1]))
    let ref = Reference(c)
    for path in paths {
        let (bad, worst) = check(ref, runKernel(c, path: path))
        #expect(bad == 0, "k=\(c.k) h=\(c.h) \(String(cString: jsae_kernel_path_name(path))): \(bad) entries outside tolerance, worst at \(worst) × its bound")
    }
}

@Test func pathsAvailable() {
    // The portable path always runs; on x86-64 with AVX2 so does AVX2. The
    // AVX-512 path compiles everywhere on x86-64 but is only exercised where
    // the CPU has AVX-512F.
    #expect(paths.contains(JSAE_KERNEL_PORTABLE))
    let selected = jsae_kernel_path_selected()
    #expect(selected != JSAE_KERNEL_AUTO && jsae_kernel_path_supported(selected) != 0)
    print("kernel paths tested: \(paths.map { String(cString: jsae_kernel_path_name($0)) }); auto = \(String(cString: jsae_kernel_path_name(selected)))")
}

/// sign(0) = 0: with φ' = 0 every J entry is exactly 0, so G = 0 and the
/// backward must return exact zeros (a kernel using sign(0) = +1 gives ±coef·rows).
@Test func zeroJacobianGivesZeroGradient() {
    let c = Case(k: 5, h: 37, seed: 9, zeroPhi: true)
    for path in paths {
        let o = runKernel(c, path: path)
        #expect(o.J.allSatisfy { $0 == 0 } && o.dL.allSatisfy { $0 == 0 } && o.dR.allSatisfy { $0 == 0 })
    }
}

/// Naming the next token (whose rows are then prefetched during this one's
/// backward) changes no bit, on any path, and forward-only calls give the
/// same J as forward + backward; the reported end of the forward lies
/// within the call.
@Test func nextTokenAndForwardOnlyChangeNoBit() {
    let k = 33, h = 200, n = 3
    let cases = (0..<n).map { Case(k: k, h: h, seed: 100 + UInt64($0)) }
    // Share the first case's matrices; vary phi and the indices per token.
    let base = cases[0]
    let phi = cases.flatMap { $0.phi }
    let K1 = cases.flatMap { $0.K1.map { $0 % Int64(base.mIn) } }, K2 = cases.flatMap { $0.K2.map { $0 % Int64(base.mOut) } }
    for path in paths {
        var ws = [Float](repeating: .nan, count: jsae_jacobian_workspace_floats(Int64(k), Int64(h)))
        for t in 0..<n {
            var J = [Float](repeating: .nan, count: k * k), dL = [Float](repeating: .nan, count: k * h), dR = dL
            let u = (t + 1) % n   // the next token, wrapping so every token names one
            var before = 0.0, end = -1.0, after = 0.0
            var ts = timespec()
            clock_gettime(CLOCK_MONOTONIC, &ts); before = Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
            phi.withUnsafeBufferPointer { p in K1.withUnsafeBufferPointer { k1 in K2.withUnsafeBufferPointer { k2 in
                jsae_jacobian_token_f32(&J, &dL, &dR, &ws, base.wd1, base.w2eT, p.baseAddress! + t * h,
                                        k1.baseAddress! + t * k, k2.baseAddress! + t * k, base.coef,
                                        k1.baseAddress! + u * k, k2.baseAddress! + u * k, p.baseAddress! + u * h,
                                        Int64(k), Int64(h), &end, path)
            } } }
            clock_gettime(CLOCK_MONOTONIC, &ts); after = Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
            #expect(before <= end && end <= after)
            var c = base
            c.phi = Array(phi[(t * h)..<((t + 1) * h)])
            c.K1 = Array(K1[(t * k)..<((t + 1) * k)]); c.K2 = Array(K2[(t * k)..<((t + 1) * k)])
            let one = runKernel(c, path: path), fwd = runKernel(c, path: path, backward: false)
            #expect(J == one.J)
            #expect(dL == one.dL)
            #expect(dR == one.dR)
            #expect(fwd.J == one.J)
        }
    }
}
