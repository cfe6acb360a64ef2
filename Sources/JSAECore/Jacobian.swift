/// The per-token k×k Jacobian (docs/jsae-spec.md, "The Jacobian") and the
/// backward of the λ·Σ|J| term (docs/jsae-spec.md, "Gradients"):
///
///     wd1  = W_dec_x @ W_in            # [m_in, d_mlp]
///     w2eᵀ = (W_out @ W_enc_y)ᵀ        # [m_out, d_mlp], transposed so a token's K2 block is k contiguous rows
///     J[b, q, p] = Σ_r wd1[K1[b,p], r] · φ'[b, r] · w2e[r, K2[b,q]]
///
/// Rows follow K2 order, columns K1 order. Neither the dense m×m Jacobian nor
/// all B gathered blocks ever exist: tokens go in chunks.
///
/// Everything of the Jacobian lives here: the factors, the chunked forward,
/// the fused backward and the scatter of its gradients, the chain from the
/// factors' gradients to the weights, and the statistics. The pair's forward
/// pass (Pair.swift), the loss (Loss.swift) and the step (Step.swift) call
/// the entries on `JSAEModel` below.

import CJSAEKernels

/// Default tokens per Jacobian chunk. Per chunk only the backward's dL and
/// dR are held: at k = 32, d_mlp = 2048
/// in Float that is 2 × 32 × 256 KiB = 16 MiB, the size of the encoder's and
/// the MLP's chunks. Any chunk gives the same bits; 32 and 64 tokens ran
/// the Jacobian phases at the same speed (docs/performance.md).
public let defaultJacobianChunk = 32

/// Summaries of a Jacobian pass, accumulated in Double in token order.
public struct JacobianStats: Sendable, Equatable {
    /// Σ |J| over all tokens and entries.
    public var absSum = 0.0
    /// Entries with |J| > t, for each t of `thresholds`.
    public var above = SIMD4<Int>()
    public var entries = 0
    /// Wall seconds of the pass, split between J's forward and the backward
    /// (the split of the fused region is worker 0's; for jsae-bench's phases).
    public var forwardSeconds = 0.0, backwardSeconds = 0.0
    /// The paper's sparsity thresholds.
    public static let thresholds: [Double] = [0.005, 0.01, 0.015, 0.02]
    public init() {}
    /// Share of entries with |J| > thresholds[i].
    public func share(_ i: Int) -> Double { entries == 0 ? 0 : Double(above[i]) / Double(entries) }
    /// All four shares.
    public var shares: SIMD4<Double> { SIMD4(share(0), share(1), share(2), share(3)) }
}

/// What the Jacobian kernels read.
struct JacobianInputs<T: JSAEScalar> {
    /// wd1 [m_in, d_mlp] and w2eᵀ [m_out, d_mlp].
    var wd1: UnsafePointer<T>, w2eT: UnsafePointer<T>
    /// φ' [B, d_mlp]; K1, K2 [B, k].
    var phi: UnsafePointer<T>, k1: UnsafePointer<Int>, k2: UnsafePointer<Int>
    var tokens: Int, k: Int, dMlp: Int, mIn: Int, mOut: Int
    /// The tokens in the order the pass visits them ([B], a permutation), or
    /// nil for batch order.
    var order: UnsafePointer<Int>? = nil
    /// The token at position i of the visiting order.
    func token(_ i: Int) -> Int { order.map { $0[i] } ?? i }
}

/// The order in which the Jacobian pass visits a batch's tokens. It decides
/// which tokens share a chunk and a worker, and so whether the rows of wd1
/// and w2eᵀ that one token gathers are still in cache for the next; and the
/// order in which the backward's scatter sums into dwd1 and dw2eᵀ. Either
/// order comes from the batch alone, never from the thread count, so the
/// bits stay the same for any `--threads`.
package enum JacobianOrder: String, Sendable, CaseIterable {
    /// Batch order.
    case batch
    /// Sorted by the leading latents of the index sets, K1[0], K2[0], K1[1],
    /// K2[1], …, as many as fit beside the token's position in 64 bits
    /// (`sharedLatentOrder`): tokens whose strongest latents agree, which in
    /// a trained pair share many of their 2k rows, become neighbours.
    case sharedLatents = "shared-latents"
}

/// The `sharedLatents` visiting order of B tokens from their index sets:
/// each token's key is its leading latents (alternating K1 and K2, in
/// descending pre-activation order, as many of ⌈log2 m⌉ bits as fit) above
/// its position, so keys are distinct and ties keep batch order. Heapsort in
/// place: no allocation and no scratch beyond `keys`.
/// - k1, k2: [B, k]; order: [B] out; keys: [B] scratch
public func sharedLatentOrder(k1: UnsafePointer<Int>, k2: UnsafePointer<Int>, tokens B: Int, k: Int, m: Int,
                              order: UnsafeMutablePointer<Int>, keys: UnsafeMutablePointer<UInt64>) {
    guard B > 0 else { return }
    let tokenBits = max(1, Int.bitWidth - (B - 1).leadingZeroBitCount)
    let latentBits = max(1, Int.bitWidth - (max(m, 2) - 1).leadingZeroBitCount)
    let levels = min(2 * k, (64 - tokenBits) / latentBits)
    for b in 0..<B {
        var key: UInt64 = 0
        for level in 0..<levels {
            let latent = (level % 2 == 0 ? k1 : k2)[b * k + level / 2]
            key = key << UInt64(latentBits) | UInt64(latent)
        }
        keys[b] = key << UInt64(tokenBits) | UInt64(b)
    }
    func swap(_ i: Int, _ j: Int) { let t = keys[i]; keys[i] = keys[j]; keys[j] = t }
    func siftDown(_ start: Int, _ end: Int) {
        var root = start
        while 2 * root + 1 < end {
            var child = 2 * root + 1
            if child + 1 < end && keys[child] < keys[child + 1] { child += 1 }
            guard keys[root] < keys[child] else { return }
            swap(root, child)
            root = child
        }
    }
    for start in stride(from: B / 2 - 1, through: 0, by: -1) { siftDown(start, B) }
    for end in stride(from: B - 1, to: 0, by: -1) { swap(0, end); siftDown(0, end) }
    let mask = (UInt64(1) << UInt64(tokenBits)) - 1
    for i in 0..<B { order[i] = Int(keys[i] & mask) }
}

// MARK: The entries: what the pair, the loss and the step call

extension JSAEModel {
    /// Recomputes wd1 and w2eᵀ in `ws` for the current weights: call once
    /// before `evaluate` and after any change of the weights. Other modules'
    /// entry; code in this module calls `computeJacobianFactors` (see
    /// "Specialisation" in Parallel.swift).
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public func updateJacobianFactors(_ ws: Workspace<T>) { computeJacobianFactors(ws) }

    /// wd1 = W_dec_x @ W_in and w2eᵀ = W_enc_yᵀ @ W_outᵀ into the workspace
    /// (once per weight update: every step in training, once per file in
    /// evaluation): two gemms, the second with both operands transposed in
    /// place (no transposed copies).
    func computeJacobianFactors(_ ws: Workspace<T>) {
        guard let saeOut, let mlp else { return }
        let mIn = saeIn.m, mOut = saeOut.m, dMlp = mlp.dMlp, w = mlp.pointers
        parallelGemm(transA: false, transB: false, m: mIn, n: dMlp, k: d, alpha: 1, a: saeIn.tensors.pointer(.wDec), lda: d,
                     b: w.wIn, ldb: dMlp, beta: 0, c: ws.wd1.p, ldc: dMlp, threads: ws.threads)
        parallelGemm(transA: true, transB: true, m: mOut, n: dMlp, k: d, alpha: 1, a: saeOut.tensors.pointer(.wEnc), lda: mOut,
                     b: w.wOut, ldb: d, beta: 0, c: ws.w2eT.p, ldc: dMlp, threads: ws.threads)
    }

    /// J's forward on the cached batch (factors current): statistics,
    /// per-token sums, and J itself when the workspace keeps it.
    func jacobianStats(_ ws: Workspace<T>) -> JacobianStats {
        jacobianPass(store: ws.jacobian.count > 0 ? ws.jacobian.p : nil, backward: nil, tokenAbs: ws.jacobianAbs.p,
                     tokenCounts: ws.jacobianCounts.p, scratch: ws.arena.p, jacobianInputs(ws),
                     chunk: ws.shape.jacobianChunk, threads: ws.threads)
    }

    /// The Jacobian term on the cached batch: the factors wd1 and w2eᵀ for the
    /// current weights, then J fused with the backward of λ·Σ|J|/(B·k²) into
    /// dwd1/dw2eᵀ when λ > 0, or J alone when only its statistics are asked
    /// for (`report`). nil when nothing needed J (or there is no pair).
    func jacobianTerm(_ ws: Workspace<T>, lambda: Double, report: Bool, timer: PhaseTimer?) -> JacobianStats? {
        guard saeOut != nil && mlp != nil && (lambda > 0 || report) else { return nil }
        timed(timer, .precompute) { computeJacobianFactors(ws) }
        guard lambda > 0 else {
            let stats = jacobianStats(ws)
            timer?.add(.jacobianForward, stats.forwardSeconds)
            return stats
        }
        timed(timer, .jacobianBackward) {
            ws.dwd1.p.update(repeating: 0, count: ws.dwd1.count)
            ws.dw2eT.p.update(repeating: 0, count: ws.dw2eT.count)
        }
        let stats = jacobianPass(store: ws.jacobian.count > 0 ? ws.jacobian.p : nil,
                                 backward: (ws.dwd1.p, ws.dw2eT.p, T(lambda / Double(ws.tokens * k * k))),
                                 tokenAbs: ws.jacobianAbs.p, tokenCounts: ws.jacobianCounts.p, scratch: ws.arena.p,
                                 jacobianInputs(ws), chunk: ws.shape.jacobianChunk, threads: ws.threads)
        timer?.add(.jacobianForward, stats.forwardSeconds)
        timer?.add(.jacobianBackward, stats.backwardSeconds)
        return stats
    }

    /// The Jacobian term's gradient from the factors to the weights, after
    /// `jacobianTerm` with λ > 0 and after the reconstruction backward (it
    /// accumulates into their gradients):
    ///
    ///     dW_dec_x += dwd1 · W_inᵀ ;  dW_enc_y += W_outᵀ · dw2eᵀᵀ     (no transposed copies)
    func jacobianFactorsBackward(_ ws: Workspace<T>) {
        guard let saeOut, let mlp else { return }
        let w = mlp.pointers
        parallelGemm(transA: false, transB: true, m: saeIn.m, n: d, k: mlp.dMlp, alpha: 1, a: ws.dwd1.p, lda: mlp.dMlp,
                     b: w.wIn, ldb: mlp.dMlp, beta: 1, c: ws.gradIn.mutablePointer(.wDec), ldc: d, threads: ws.threads)
        parallelGemm(transA: true, transB: true, m: d, n: saeOut.m, k: mlp.dMlp, alpha: 1, a: w.wOut, lda: d,
                     b: ws.dw2eT.p, ldb: mlp.dMlp, beta: 1, c: ws.gradOut.mutablePointer(.wEnc), ldc: saeOut.m, threads: ws.threads)
    }

    /// Shares of |J| above the thresholds on the batch in `ws` with J at
    /// `point` (factors current). Overwrites the activation cache.
    func jacobianShares(_ ws: Workspace<T>, point: EvaluationPoint) -> SIMD4<Double> {
        ws.hasYTarget = false   // the output SAE reads f at the point, as in evaluation
        forwardPass(ws, point: point)
        return jacobianStats(ws).shares
    }

    /// What the Jacobian kernels read from the workspace's cache.
    /// What the Jacobian kernels read from the workspace's cache, and the
    /// token order of `ws.jacobianOrder` computed from the cached index sets.
    func jacobianInputs(_ ws: Workspace<T>) -> JacobianInputs<T> {
        var inputs = JacobianInputs(wd1: ws.wd1.p, w2eT: ws.w2eT.p, phi: ws.phi.p, k1: ws.codesIn.indices.p, k2: ws.codesOut.indices.p,
                                    tokens: ws.tokens, k: k, dMlp: mlp!.dMlp, mIn: saeIn.m, mOut: saeOut!.m)
        if ws.jacobianOrder == .sharedLatents {
            sharedLatentOrder(k1: inputs.k1, k2: inputs.k2, tokens: ws.tokens, k: k, m: max(saeIn.m, saeOut!.m),
                              order: ws.jacobianTokens.p, keys: ws.jacobianSortKeys.p)
            inputs.order = UnsafePointer(ws.jacobianTokens.p)
        }
        return inputs
    }
}

// MARK: The kernels

/// Scratch the Jacobian kernels need (elements of T), for `Workspace`.
enum JacobianScratch {
    static func workers(tokens: Int, chunk: Int, threads: Int) -> Int { max(1, min(threads, min(chunk, max(tokens, 1)))) }
    /// Entries per worker: the C kernel's workspace and J, or (BLAS path)
    /// the gathered L and R and J and G; rounded to 16 so that every
    /// worker's part starts 64-byte aligned in Float, as the kernel wants.
    static func perWorker(k: Int, dMlp: Int, kernel: Bool) -> Int {
        let kernelFloats = Int(jsae_jacobian_workspace_floats(Int64(k), Int64(dMlp)))
        let n: Int = kernel ? kernelFloats + k * k : 2 * k * dMlp + 2 * k * k
        return (n + 15) / 16 * 16
    }
    static func count(tokens: Int, k: Int, dMlp: Int, chunk: Int, threads: Int, backward: Bool, kernel: Bool) -> Int {
        let c = min(chunk, max(tokens, 1))
        return workers(tokens: tokens, chunk: chunk, threads: threads) * perWorker(k: k, dMlp: dMlp, kernel: kernel)
            + (backward ? 2 * c * k * dMlp : 0)
    }
}

/// The plain-loop definition of `jacobianPass` with its backward (Double
/// accumulation, no BLAS, no chunks): J [B, k, k] and the gradients at wd1
/// and w2eᵀ of coef·Σ|J|, starting from zero.
func jacobianPassReference<T: JSAEScalar>(_ in_: JacobianInputs<T>, coef: Double) -> (J: [Double], dwd1: [Double], dw2eT: [Double]) {
    let B = in_.tokens, k = in_.k, dMlp = in_.dMlp
    var J = [Double](repeating: 0, count: B * k * k)
    var dwd1 = [Double](repeating: 0, count: in_.mIn * dMlp), dw2eT = [Double](repeating: 0, count: in_.mOut * dMlp)
    for b in 0..<B {
        let phi = in_.phi + b * dMlp
        for q in 0..<k {
            for p in 0..<k {
                let l = in_.w2eT + in_.k2[b * k + q] * dMlp, r = in_.wd1 + in_.k1[b * k + p] * dMlp
                var s = 0.0
                for i in 0..<dMlp { s += Double(l[i]) * Double(r[i]) * Double(phi[i]) }
                J[(b * k + q) * k + p] = s
            }
        }
        for q in 0..<k {
            for p in 0..<k {
                let j = J[(b * k + q) * k + p]
                let g = j > 0 ? coef : (j < 0 ? -coef : 0)
                let i1 = in_.k1[b * k + p], i2 = in_.k2[b * k + q]
                for i in 0..<dMlp {
                    dw2eT[i2 * dMlp + i] += g * Double(in_.wd1[i1 * dMlp + i]) * Double(phi[i])
                    dwd1[i1 * dMlp + i] += g * Double(in_.w2eT[i2 * dMlp + i]) * Double(phi[i])
                }
            }
        }
    }
    return (J, dwd1, dw2eT)
}

/// One pass over the tokens in chunks. Per token: J = L·Rᵀ with L the K2
/// rows of w2eᵀ and R the K1 rows of wd1 scaled by φ', its statistics,
/// optionally J itself stored ([B, k, k]), and with `backward` the backward
/// of coef·Σ|J| while the rows are in cache:
///
///     G = coef · sign(J);  dw2eᵀ[K2] += G·R;  dwd1[K1] += (Gᵀ·L) ⊙ φ'
///
/// accumulating (+=) into dwd1 [m_in, d_mlp] and dw2eT [m_out, d_mlp].
/// `jacobianPassReference` is its plain-loop definition.
///
/// Per token, where the type has the C kernel (`JSAEScalar.hasJacobianKernel`:
/// Float), one call reads the 2k rows in place and writes J and the token's
/// dL = G·R and dR = Gᵀ·L, prefetching the next token's rows during its
/// backward; otherwise (Double) the rows are gathered into L and R and three
/// small BLAS gemms do the same. The kernel moves each gathered row through
/// the core once, where the gemms' packing copies L and R again and their
/// outputs are read back (beta = 1); on Zen 4 the two Jacobian phases ran
/// 0.80× as long on the kernel (docs/performance.md).
///
/// Chunks are runs of consecutive tokens in the visiting order (`in_.order`).
/// A chunk's tokens are split across workers; each token is computed by one
/// call whatever the split, and the per-token row updates are then
/// scattered by workers that own disjoint latent ranges, in the visiting
/// order. So the result is the same for any thread count and chunk size; the
/// visiting order decides only the order of the scatter's sums.
func jacobianPass<T: JSAEScalar>(store: UnsafeMutablePointer<T>?,
                                 backward: (dwd1: UnsafeMutablePointer<T>, dw2eT: UnsafeMutablePointer<T>, coef: T)?,
                                 tokenAbs: UnsafeMutablePointer<Double>, tokenCounts: UnsafeMutablePointer<Int32>,
                                 scratch: UnsafeMutablePointer<T>, _ in_: JacobianInputs<T>,
                                 chunk: Int, threads: Int) -> JacobianStats {
    let B = in_.tokens, k = in_.k, dMlp = in_.dMlp, kk = k * k
    precondition(chunk >= 1)
    let c = min(chunk, max(B, 1))
    let workers = JacobianScratch.workers(tokens: B, chunk: chunk, threads: threads)
    let kernel = T.hasJacobianKernel
    // Scratch: per worker the kernel's workspace and J, or L, R [k, d_mlp]
    // and J, G [k, k]; then the chunk's backward outputs dL = G·R and
    // dR = Gᵀ·L (⊙ φ' is applied in the scatter). The kernel overwrites
    // them; the BLAS gemms add into zeros (beta = 1), zeroed here once per
    // pass and by the scatter as it reads each row: with beta = 0 OpenBLAS
    // would zero C in a pass of its own before adding into it. 0 + x is x
    // for every x but -0, which becomes +0; the gradients start at +0, so no
    // sum there is -0, and adding +0 or -0 to them gives the same bits.
    let perWorker = JacobianScratch.perWorker(k: k, dMlp: dMlp, kernel: kernel)
    let dL = SharedPointer(scratch + workers * perWorker), dR = SharedPointer(dL.p + c * k * dMlp)
    if backward != nil && !kernel { dL.p.update(repeating: 0, count: 2 * c * k * dMlp) }
    let sc = SharedPointer(scratch), st = store.map(SharedPointer.init)
    let abs_ = SharedPointer(tokenAbs), cnt = SharedPointer(tokenCounts)
    let th = JacobianStats.thresholds
    let t0 = T(th[0]), t1 = T(th[1]), t2 = T(th[2]), t3 = T(th[3])
    var stats = JacobianStats()
    for start in stride(from: 0, to: B, by: c) {
        let n = min(c, B - start)
        let clock0 = PhaseTimer.now()
        // Worker 0's own split between the forward part (J, statistics) and
        // the backward part (G, dL, dR; the kernel reports when its J was done).
        var w0Forward = 0.0, w0Backward = 0.0
        Parallel.forRanges(n, threads: workers) { w, slots in
            let part = sc.p + w * perWorker
            var end = 0.0
            withUnsafeMutablePointer(to: &end) { forwardEnd in
            for slot in slots {
                let b = in_.token(start + slot)
                let f0 = w == 0 ? PhaseTimer.now() : 0
                let phi = in_.phi + b * dMlp
                let J = st.map { $0.p + b * kk } ?? (kernel ? part + (perWorker - kk) : part + 2 * k * dMlp)
                let outL = dL.p + slot * k * dMlp, outR = dR.p + slot * k * dMlp
                if kernel {
                    let nextB = slot + 1 < slots.upperBound ? in_.token(start + slot + 1) : nil
                    T.jacobianToken(J: J, dL: backward == nil ? nil : outL, dR: backward == nil ? nil : outR, workspace: part,
                                    wd1: in_.wd1, w2eT: in_.w2eT, phi: phi, k1: in_.k1 + b * k, k2: in_.k2 + b * k,
                                    coef: backward?.coef ?? 0,
                                    next: nextB.map { (in_.k1 + $0 * k, in_.k2 + $0 * k, in_.phi + $0 * dMlp) }, k: k, h: dMlp,
                                    forwardEnd: w == 0 ? forwardEnd : nil)
                } else {
                    let L = part, R = L + k * dMlp
                    for j in 0..<k {
                        (L + j * dMlp).update(from: in_.w2eT + in_.k2[b * k + j] * dMlp, count: dMlp)
                        let src = in_.wd1 + in_.k1[b * k + j] * dMlp, dst = R + j * dMlp
                        for r in 0..<dMlp { dst[r] = src[r] * phi[r] }
                    }
                    // J_b = L · Rᵀ : [k, d_mlp] × [d_mlp, k]
                    T.gemm(transA: false, transB: true, m: k, n: k, k: dMlp, alpha: 1, a: L, lda: dMlp, b: R, ldb: dMlp, beta: 0, c: J, ldc: k)
                    if w == 0 { forwardEnd.pointee = PhaseTimer.now() }
                    if let bw = backward {
                        // d|J|/dJ = sign(J), with sign(0) = 0 as torch.sign.
                        let G = part + 2 * k * dMlp + kk
                        for e in 0..<kk { G[e] = J[e] > 0 ? bw.coef : (J[e] < 0 ? -bw.coef : 0) }
                        T.gemm(transA: false, transB: false, m: k, n: dMlp, k: k, alpha: 1, a: G, lda: k, b: R, ldb: dMlp, beta: 1, c: outL, ldc: dMlp)
                        T.gemm(transA: true, transB: false, m: k, n: dMlp, k: k, alpha: 1, a: G, lda: k, b: L, ldb: dMlp, beta: 1, c: outR, ldc: dMlp)
                    }
                }
                let f1 = w == 0 ? PhaseTimer.now() : 0
                var a = 0.0
                var c0: Int32 = 0, c1: Int32 = 0, c2: Int32 = 0, c3: Int32 = 0
                for e in 0..<kk {
                    let v = abs(J[e])
                    a += Double(v)
                    if v > t0 { c0 += 1 }
                    if v > t1 { c1 += 1 }
                    if v > t2 { c2 += 1 }
                    if v > t3 { c3 += 1 }
                }
                abs_.p[b] = a
                cnt.p[b * 4] = c0; cnt.p[b * 4 + 1] = c1; cnt.p[b * 4 + 2] = c2; cnt.p[b * 4 + 3] = c3
                if w == 0 {
                    w0Forward += (forwardEnd.pointee - f0) + (PhaseTimer.now() - f1)
                    w0Backward += f1 - forwardEnd.pointee
                }
            }
            }
        }
        let clock1 = PhaseTimer.now()
        let share = w0Forward + w0Backward > 0 ? w0Forward / (w0Forward + w0Backward) : 1
        stats.forwardSeconds += (clock1 - clock0) * share
        stats.backwardSeconds += (clock1 - clock0) * (1 - share)
        guard let bw = backward else { continue }
        scatterJacobianGradients(dwd1: bw.dwd1, dw2eT: bw.dw2eT, dL: dL.p, dR: dR.p, in_, start: start, count: n,
                                 zeroRead: !kernel, threads: threads)
        stats.backwardSeconds += PhaseTimer.now() - clock1
    }
    stats.entries = B * kk
    for b in 0..<B {
        stats.absSum += tokenAbs[b]
        for i in 0..<4 { stats.above[i] += Int(tokenCounts[b * 4 + i]) }
    }
    return stats
}

/// dw2eᵀ[K2[b, j]] += dL[slot, j] and dwd1[K1[b, j]] += dR[slot, j] ⊙ φ'[b]
/// for the chunk's tokens: worker w owns a range of latent rows of each, and
/// visits tokens in the pass's order, so the sums do not depend on the
/// thread count. Each row of dL and dR is read by the one worker that owns
/// its latent, which with `zeroRead` zeroes it for the next chunk's gemms
/// (they add into it; the C kernel overwrites it).
private func scatterJacobianGradients<T: JSAEScalar>(dwd1: UnsafeMutablePointer<T>, dw2eT: UnsafeMutablePointer<T>,
                                                     dL: UnsafeMutablePointer<T>, dR: UnsafeMutablePointer<T>, _ in_: JacobianInputs<T>,
                                                     start: Int, count n: Int, zeroRead: Bool, threads: Int) {
    let k = in_.k, dMlp = in_.dMlp, mIn = in_.mIn, mOut = in_.mOut, mMax = max(mIn, mOut)
    let d1 = SharedPointer(dwd1), d2 = SharedPointer(dw2eT)
    Parallel.forRanges(mMax, threads: threads) { _, own in
        let ownIn = (own.lowerBound * mIn / mMax)..<(own.upperBound * mIn / mMax)
        let ownOut = (own.lowerBound * mOut / mMax)..<(own.upperBound * mOut / mMax)
        for slot in 0..<n {
            let b = in_.token(start + slot)
            for j in 0..<k {
                let i2 = in_.k2[b * k + j]
                if ownOut.contains(i2) {
                    let dst = d2.p + i2 * dMlp, src = dL + (slot * k + j) * dMlp
                    for r in 0..<dMlp { dst[r] += src[r] }
                    if zeroRead { src.update(repeating: 0, count: dMlp) }
                }
                let i1 = in_.k1[b * k + j]
                if ownIn.contains(i1) {
                    let dst = d1.p + i1 * dMlp, src = dR + (slot * k + j) * dMlp, phi = in_.phi + b * dMlp
                    for r in 0..<dMlp { dst[r] += src[r] * phi[r] }
                    if zeroRead { src.update(repeating: 0, count: dMlp) }
                }
            }
        }
    }
}
