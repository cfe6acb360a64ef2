import Foundation
import Testing
@testable import JSAECore
import _JSAETestSupport

@Suite("Workspace and fused kernels")
struct WorkspaceTests {
    /// A Float pair whose batch spans several Jacobian chunks.
    static func fixture() -> (state: TrainState<Float>, x: Matrix<Float>, config: TrainConfig) {
        let s = PairShape(d: 16, dMlp: 40, mIn: 96, mOut: 80, k: 5, tokens: 48)
        let (model, x) = randomModel(s, seed: 91)
        var c = TrainConfig()
        c.batch = s.tokens; c.totalSteps = 50; c.lambda = 0.7; c.jacobianChunk = 7
        c.lrWarmupFraction = 0; c.lambdaWarmupFraction = 0
        return (TrainState(model: model.converted(to: Float.self)), x.converted(to: Float.self), c)
    }

    @Test("The fused Jacobian forward+backward equals its plain-loop definition, in either token order",
          arguments: [1, 3, 100], JacobianOrder.allCases)
    func fusedJacobian(_ chunk: Int, _ order: JacobianOrder) {
        let (state, x, _) = Self.fixture()
        let model = state.model.converted(to: Double.self)
        let ws = Workspace<Double>(model.workspaceShape(tokens: x.rows, jacobianChunk: chunk),
                                   purpose: [.training, .storeJacobian], threads: 2)
        ws.jacobianOrder = order
        ws.load(x.converted(to: Double.self), yTarget: nil)
        model.forwardPass(ws, point: .trueInput)
        model.computeJacobianFactors(ws)
        let coef = 0.37
        ws.dwd1.p.update(repeating: 0, count: ws.dwd1.count)
        ws.dw2eT.p.update(repeating: 0, count: ws.dw2eT.count)
        let inputs = model.jacobianInputs(ws)
        #expect((inputs.order != nil) == (order == .sharedLatents))
        let stats = jacobianPass(store: ws.jacobian.p, backward: (ws.dwd1.p, ws.dw2eT.p, coef),
                                 tokenAbs: ws.jacobianAbs.p, tokenCounts: ws.jacobianCounts.p, scratch: ws.arena.p,
                                 inputs, chunk: chunk, threads: 2)
        let want = jacobianPassReference(model.jacobianInputs(ws), coef: coef)
        // The same Double sums in another association order (BLAS blocks vs
        // one running sum over d_mlp = 40 terms): rounding only, ≲ 1e-14 relative.
        let J = ws.jacobian.array(want.J.count)
        #expect(allClose(J, want.J, rtol: 1e-12, atol: 1e-14))
        #expect(allClose(ws.dwd1.array(want.dwd1.count), want.dwd1, rtol: 1e-12, atol: 1e-14))
        #expect(allClose(ws.dw2eT.array(want.dw2eT.count), want.dw2eT, rtol: 1e-12, atol: 1e-14))
        #expect(want.dwd1.contains { $0 != 0 } && want.dw2eT.contains { $0 != 0 })
        #expect(abs(stats.absSum - want.J.reduce(0) { $0 + abs($1) }) <= 1e-12 * stats.absSum)
        #expect(stats.entries == J.count && stats.above[1] == J.filter { abs($0) > 0.01 }.count)
    }

    /// The Float pass runs the C kernel (`JSAEScalar.hasJacobianKernel`);
    /// against the Double plain-loop definition on the same Float inputs,
    /// every entry of J, dwd1 and dw2eᵀ is within (n + 2)·u·Σ|terms|, where
    /// n bounds the roundings on its way (Higham §3.1, as the kernel's own
    /// tests): J sums d_mlp products of a rounded φ'-scaled factor; a
    /// gradient entry sums k products per token, is scaled by φ' once and
    /// summed over at most B tokens. Σ|terms| is the same definition run on
    /// |inputs|, where every G is +coef. A sign of J within its bound of 0
    /// could legitimately differ from the reference's, so the fixture is
    /// checked to have none.
    @Test("The Float pass (C kernel) is within its rounding bound of the plain-loop definition",
          arguments: [1, 3, 100], JacobianOrder.allCases)
    func kernelJacobian(_ chunk: Int, _ order: JacobianOrder) {
        let (state, x, _) = Self.fixture()
        let model = state.model
        #expect(Float.hasJacobianKernel)
        let ws = Workspace<Float>(model.workspaceShape(tokens: x.rows, jacobianChunk: chunk),
                                  purpose: [.training, .storeJacobian], threads: 2)
        ws.jacobianOrder = order
        ws.load(x, yTarget: nil)
        model.forwardPass(ws, point: .trueInput)
        model.computeJacobianFactors(ws)
        let coef: Float = 0.37
        ws.dwd1.p.update(repeating: 0, count: ws.dwd1.count)
        ws.dw2eT.p.update(repeating: 0, count: ws.dw2eT.count)
        let inputs = model.jacobianInputs(ws)
        let stats = jacobianPass(store: ws.jacobian.p, backward: (ws.dwd1.p, ws.dw2eT.p, coef),
                                 tokenAbs: ws.jacobianAbs.p, tokenCounts: ws.jacobianCounts.p, scratch: ws.arena.p,
                                 inputs, chunk: chunk, threads: 2)
        let want = jacobianPassReference(inputs, coef: Double(coef))
        // The same definition on |wd1|, |w2eᵀ|, |φ'|: Σ|terms| per entry.
        let (B, k, h) = (inputs.tokens, inputs.k, inputs.dMlp)
        let absWd1 = UnsafeBufferPointer(start: inputs.wd1, count: inputs.mIn * h).map { abs($0) }
        let absW2eT = UnsafeBufferPointer(start: inputs.w2eT, count: inputs.mOut * h).map { abs($0) }
        let absPhi = UnsafeBufferPointer(start: inputs.phi, count: B * h).map { abs($0) }
        let mags = absWd1.withUnsafeBufferPointer { w1 in absW2eT.withUnsafeBufferPointer { w2 in absPhi.withUnsafeBufferPointer { ph in
            var a = inputs
            a.wd1 = w1.baseAddress!; a.w2eT = w2.baseAddress!; a.phi = ph.baseAddress!
            return jacobianPassReference(a, coef: Double(coef))
        } } }
        let u = Double(Float.ulpOfOne) / 2
        func outside(_ got: [Float], _ exact: [Double], _ absSum: [Double], _ n: Int) -> Int {
            zip(zip(got, exact), absSum).filter { pair, m in
                let (g, e) = pair
                return !(abs(Double(g) - e) <= Double(n + 2) * u * m)
            }.count
        }
        #expect(zip(want.J, mags.J).allSatisfy { abs($0) > Double(h + 2) * u * $1 }, "a J entry lies within its bound of 0: pick another seed")
        #expect(outside(ws.jacobian.array(want.J.count), want.J, mags.J, h) == 0)
        #expect(outside(ws.dwd1.array(want.dwd1.count), want.dwd1, mags.dwd1, k + 1 + B) == 0)
        #expect(outside(ws.dw2eT.array(want.dw2eT.count), want.dw2eT, mags.dw2eT, k + B) == 0)
        #expect(want.dwd1.contains { $0 != 0 } && want.dw2eT.contains { $0 != 0 })
        let absSum = want.J.reduce(0) { $0 + abs($1) }
        #expect(abs(stats.absSum - absSum) <= Double(h + 2) * u * mags.J.reduce(0, +))
    }
}

@Suite("Latent-sorted reconstruction backward")
struct LatentSortedBackwardTests {
    /// The token-scan definition the latent-sorted kernel replaced: every
    /// (token, slot) pair in token order, straight into the gradient rows.
    static func tokenScan<T: JSAEScalar>(grad: inout SAETensors<T>, dOut: [T], input: [T], codes: CodesBuffer<T>, wDec: [T], B: Int) {
        let d = grad.d, m = grad.m, k = codes.k
        var gEncT = [T](repeating: 0, count: m * d)
        var gwd = grad.wDec.data, gbe = grad.bEnc, gbd = grad.bDec
        for b in 0..<B { for c in 0..<d { gbd[c] += dOut[b * d + c] } }
        for b in 0..<B {
            for j in 0..<k where codes.preacts.p[b * k + j] > 0 {
                let i = codes.indices.p[b * k + j], s = codes.values.p[b * k + j]
                let ds = dOut.withUnsafeBufferPointer { dx in wDec.withUnsafeBufferPointer { w in T.dot(d, dx.baseAddress! + b * d, w.baseAddress! + i * d) } }
                for c in 0..<d { gwd[i * d + c] += s * dOut[b * d + c] }
                gbe[i] += ds
                for c in 0..<d { gEncT[i * d + c] += ds * input[b * d + c] }
            }
        }
        var wEnc = grad.wEnc
        for i in 0..<m { for c in 0..<d { wEnc.data[c * m + i] += gEncT[i * d + c] } }
        grad.wDec = Matrix(rows: m, cols: d, data: gwd); grad.bEnc = gbe; grad.bDec = gbd; grad.wEnc = wEnc
    }

    /// Bit for bit, for Float and any thread count: the per-row order of
    /// the additions is token order in both. Codes are drawn with repeated
    /// latents across tokens, unused latents and non-positive pre-activations.
    @Test("equals the token scan bit for bit", arguments: [1, 2, 3])
    func bitIdentical(threads: Int) {
        // Two full groups of latents and a partial one, so the write-back
        // into dW_enc meets group boundaries and a short last group.
        let B = 37, d = 12, m = 2 * decoderBackwardGroup + 5, k = 6
        var g = SeededGenerator(seed: 5)
        let r = { (n: Int) in (0..<n).map { _ in Float(g.normal()) } }
        let dOut = r(B * d), input = r(B * d), wDec = r(m * d)
        let codes = CodesBuffer<Float>(tokens: B, k: k)
        for b in 0..<B {
            // Distinct latents per token from all but the last 10 (never used).
            var pool = Array(0..<(m - 10))
            for j in 0..<k {
                let i = pool.remove(at: Int(g.next() % UInt64(pool.count)))
                let h = Float(g.normal())
                codes.indices.p[b * k + j] = i; codes.preacts.p[b * k + j] = j == 0 ? 0 : h; codes.values.p[b * k + j] = max(h, 0)
            }
        }
        var start = SAETensors<Float>(d: d, m: m)
        start.wEnc = Matrix(rows: d, cols: m, data: r(d * m)); start.wDec = Matrix(rows: m, cols: d, data: r(m * d))
        start.bEnc = r(m); start.bDec = r(d)
        var expected = start
        Self.tokenScan(grad: &expected, dOut: dOut, input: input, codes: codes, wDec: wDec, B: B)

        var got = start
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: decoderBackwardScratchCount(m: m, d: d, threads: threads))
        let order = UnsafeMutablePointer<Int>.allocate(capacity: B * k)
        let starts = UnsafeMutablePointer<Int>.allocate(capacity: m + 1)
        defer { scratch.deallocate(); order.deallocate(); starts.deallocate() }
        dOut.withUnsafeBufferPointer { dx in input.withUnsafeBufferPointer { x in wDec.withUnsafeBufferPointer { w in
            sparseDecoderBackward(grad: &got, scratch: scratch, order: order, starts: starts, dOut: dx.baseAddress!, input: x.baseAddress!,
                                  codes: codes, wDec: w.baseAddress!, tokens: B, threads: threads)
        } } }
        #expect(got.wDec.data == expected.wDec.data && got.wEnc.data == expected.wEnc.data)
        #expect(got.bEnc == expected.bEnc && got.bDec == expected.bDec)
        #expect(got.wEnc.data != start.wEnc.data)
    }
}

@Suite("Latent-sorted sparse decode")
struct LatentSortedDecodeTests {
    /// Bit for bit, for Float and any thread count, against its definition
    /// written as plain loops: each token's nonzero slots added into b_dec
    /// in ascending latent order (slot order among equal latents).
    /// Codes are drawn with latents repeated across tokens and within a
    /// token, latents no token uses, zero values and negative ones.
    @Test("equals b_dec plus each token's rows in latent order, bit for bit", arguments: [1, 2, 3])
    func bitIdentical(threads: Int) {
        let B = 37, d = 12, m = 300, k = 6
        var g = SeededGenerator(seed: 8)
        let r = { (n: Int) in (0..<n).map { _ in Float(g.normal()) } }
        let wDec = r(m * d), bDec = r(d)
        var indices = [Int](repeating: 0, count: B * k), values = [Float](repeating: 0, count: B * k)
        for p in 0..<(B * k) {
            // Latents from 0..<m-10 (the last ten never used); one token in
            // nine repeats a latent within itself.
            indices[p] = p % k == 1 && (p / k) % 9 == 0 ? indices[p - 1] : Int(g.next() % UInt64(m - 10))
            values[p] = p % 5 == 0 ? 0 : Float(g.normal())
        }
        var want = [Float](repeating: 0, count: B * d)
        for b in 0..<B {
            for c in 0..<d { want[b * d + c] = bDec[c] }
            let slots = (0..<k).filter { values[b * k + $0] != 0 }.sorted { (indices[b * k + $0], $0) < (indices[b * k + $1], $1) }
            for j in slots {
                let i = indices[b * k + j], s = values[b * k + j]
                for c in 0..<d { want[b * d + c] += s * wDec[i * d + c] }
            }
        }
        var got = [Float](repeating: .nan, count: B * d)
        let order = UnsafeMutablePointer<Int>.allocate(capacity: B * k), starts = UnsafeMutablePointer<Int>.allocate(capacity: m + 1)
        defer { order.deallocate(); starts.deallocate() }
        got.withUnsafeMutableBufferPointer { o in
            sparseDecode(out: o.baseAddress!, order: order, starts: starts, indices: indices, values: values, wDec: wDec, bDec: bDec,
                         tokens: B, d: d, k: k, m: m, threads: threads)
        }
        #expect(ThreadingTests.sameBits(got, want))
        #expect(want.contains { $0 != 0 })
    }
}

@Suite("Huge-page storage")
struct HugePageStorageTests {
    /// Buffers of a huge page or more start on a huge-page boundary (what
    /// MADV_HUGEPAGE needs to back them with whole huge pages), are zeroed
    /// to the last entry, and their copies (SAETensors' copy on write, from
    /// the same allocator) hold every value; small ones keep the plain
    /// allocator.
    @Test("huge-page-sized buffers: aligned to hugePageBytes, zeroed, copied whole")
    func hugePageBuffers() {
        let n = hugePageBytes / 4 + 5
        let big = Buffer<Float>(n)
        #expect(Int(bitPattern: big.p) % hugePageBytes == 0)
        #expect(UnsafeBufferPointer(start: big.p, count: n).allSatisfy { $0.bitPattern == 0 })
        let small = Buffer<Double>(3)
        #expect(small.count == 3 && (0..<3).allSatisfy { small.p[$0].bitPattern == 0 })
        var a = SAETensors<Float>(d: 16, m: 40_000)
        #expect(a.count * 4 >= hugePageBytes)
        var wDec = a[.wDec]
        wDec[wDec.count - 1] = 2.5
        a[.wDec] = wDec
        var b = a
        var bDec = b[.bDec]
        bDec[0] = -1
        b[.bDec] = bDec
        #expect(b[.wDec].last == 2.5 && a[.bDec][0] == 0 && b[.bDec][0] == -1)
    }
}

@Suite("Shared-latents token order")
struct SharedLatentOrderTests {
    @Test("is a permutation, sorted by the leading latents K1[0], K2[0], K1[1], … with ties in batch order")
    func sorted() {
        // 40 tokens, k 3, m 6: three bits per latent and six for the token,
        // so all six leading latents fit in the key.
        var g = SeededGenerator(seed: 5)
        let B = 40, k = 3, m = 6
        let k1 = (0..<(B * k)).map { _ in Int(g.next() % UInt64(m)) }, k2 = (0..<(B * k)).map { _ in Int(g.next() % UInt64(m)) }
        var order = [Int](repeating: -1, count: B), keys = [UInt64](repeating: 0, count: B)
        sharedLatentOrder(k1: k1, k2: k2, tokens: B, k: k, m: m, order: &order, keys: &keys)
        #expect(order.sorted() == Array(0..<B))
        func key(_ b: Int) -> [Int] { (0..<(2 * k)).map { ($0 % 2 == 0 ? k1 : k2)[b * k + $0 / 2] } + [b] }
        let want = (0..<B).sorted { key($0).lexicographicallyPrecedes(key($1)) }
        #expect(order == want)
    }

    @Test("keeps only the levels that fit beside the token's position")
    func truncated() {
        // m 2^20 takes 20 bits a level and B 5 three: three levels fit (K1[0], K2[0], K1[1]);
        // K2[1] differs between the tokens but must not reorder them.
        let B = 5, k = 2, m = 1 << 20
        let k1 = [7, 1, 7, 2, 7, 1, 7, 1, 3, 0], k2 = [9, 5, 9, 4, 9, 3, 9, 2, 9, 1]
        var order = [Int](repeating: -1, count: B), keys = [UInt64](repeating: 0, count: B)
        sharedLatentOrder(k1: k1, k2: k2, tokens: B, k: k, m: m, order: &order, keys: &keys)
        #expect(order == [4, 0, 2, 3, 1])
    }
}

@Suite("Vectorised Adam")
struct VectorisedAdamTests {
    /// PyTorch's single-tensor Adam (torch/optim/adam.py, `_single_tensor_adam`,
    /// default flags), one entry at a time in T, written out here so that the
    /// vector lanes are checked against the formula and not against themselves.
    static func pytorchAdam<T: JSAEScalar>(p: inout [T], g: [T], a: inout [T], s: inout [T], lr: Double, step: Int) {
        let t = Double(step + 1)
        let bc1 = 1 - pow(0.9, t), bc2 = 1 - pow(0.999, t)
        let stepSize = T(lr / bc1), bc2Sqrt = T(bc2.squareRoot()), b1 = T(0.9), b2 = T(0.999), eps = T(1e-8)
        for j in p.indices {
            a[j] += (1 - b1) * (g[j] - a[j])                 // exp_avg.lerp_(grad, 1 - beta1)
            s[j] = b2 * s[j] + (1 - b2) * g[j] * g[j]         // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
            p[j] -= stepSize * a[j] / (s[j].squareRoot() / bc2Sqrt + eps)   // addcdiv_(exp_avg, denom, -step_size)
        }
    }

    /// Bit for bit against the scalar formula, over 3 steps of an SAE whose
    /// entry count (2·d·m + m + d = 82) is no multiple of the vector width, so
    /// every thread's range ends in a scalar tail, for 1, 2 and 3 threads.
    func check<T: JSAEScalar>(_: T.Type, threads: Int) {
        var g = SeededGenerator(seed: 11)
        let d = 5, m = 7
        // One flat buffer in file order holds an SAE's four tensors, as PyTorch's
        // loop sees them one after another.
        func flat(_ t: SAETensors<T>) -> [T] { Array(UnsafeBufferPointer(start: t.base, count: t.count)) }
        func set(_ t: inout SAETensors<T>, _ v: [T]) { t.mutableBase().update(from: v, count: t.count) }
        var params = SAETensors<T>(d: d, m: m), grads = params
        var moments = AdamMoments<T>(d: d, dLatent: m)
        var p = [T](repeating: 0, count: params.count), a = p, s = p
        for j in 0..<params.count { p[j] = T(g.normal()) }
        let initial = p
        set(&params, p)
        for step in 0..<3 {
            // Gradients from 1e-6 to 1e2 in magnitude, with zeros.
            let gr = (0..<params.count).map { j in j % 9 == 0 ? T(0) : T(g.normal() * pow(10, Double(j % 9) - 6)) }
            set(&grads, gr)
            adamStep(&params, grads: grads, moments: &moments, lr: 4e-4, step: step, config: AdamConfig(), threads: threads)
            Self.pytorchAdam(p: &p, g: gr, a: &a, s: &s, lr: 4e-4, step: step)
        }
        let got = flat(params), gotA = flat(moments.expAvg), gotS = flat(moments.expAvgSq)
        #expect(got == p && gotA == a && gotS == s)
        #expect(got != initial)
    }

    @Test("equals the scalar formula bit for bit, Float and Double, any thread count", arguments: [1, 2, 3])
    func bitIdentical(threads: Int) {
        check(Float.self, threads: threads)
        check(Double.self, threads: threads)
    }
}
