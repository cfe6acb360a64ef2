/// The two precomputed products of the efficient Jacobian:
///
///     wd1  = W_dec_x @ W_in            # [m_in, d_mlp]
///     w2eT = (W_out @ W_enc_y)ᵀ        # [m_out, d_mlp], stored transposed so a
///                                      # token's K2 block is k contiguous rows
///
/// Both are 2·m·d·d_mlp FLOPs and must be recomputed whenever the SAE
/// weights change (every training step).
public struct JacobianFactors<T: JSAEScalar>: Sendable {
    public var wd1: Matrix<T>
    public var w2eT: Matrix<T>

    public init(saeIn: TopKSAE<T>, mlp: MLP<T>, saeOut: TopKSAE<T>) {
        wd1 = matmul(saeIn.wDec, mlp.wIn)
        // (W_out @ W_enc_y)ᵀ = W_enc_yᵀ @ W_outᵀ: one gemm with both operands
        // transposed in place, no transposed copies.
        w2eT = matmul(saeOut.wEnc, mlp.wOut, transA: true, transB: true)
    }

    public var dMlp: Int { wd1.cols }
}

/// Default tokens per Jacobian chunk. Gathers are per worker ([k, d_mlp] ×2);
/// per chunk only the backward's dL and dR are held: at k = 32, d_mlp = 2048
/// in Float that is 2 × 64 × 256 KiB = 32 MiB.
public let defaultJacobianChunk = 64

/// The per-token k×k Jacobians of the output SAE's pre-activations on K2 with
/// respect to the input latents on K1:
///
///     J[b, q, p] = Σ_r wd1[K1[b,p], r] · φ'[b, r] · w2e[r, K2[b,q]]
///
/// Rows follow K2 order, columns K1 order. Tokens are processed in chunks of
/// `chunk`, so memory is O(chunk · k · d_mlp) whatever B is; each token's block
/// is one small gemm, so the result does not depend on the chunk size.
/// - k1, k2: [B, k] index sets; phiPrime: [B, d_mlp]; returns [B, k, k] flat
public func jacobian<T: JSAEScalar>(factors: JacobianFactors<T>, k1: [Int], k2: [Int],
                                    phiPrime: Matrix<T>, k: Int,
                                    chunk: Int = defaultJacobianChunk) -> [T] {
    var out = [T](repeating: 0, count: phiPrime.rows * k * k)
    out.withUnsafeMutableBufferPointer { po in
        _ = jacobianPass(factors: factors, k1: k1, k2: k2, phiPrime: phiPrime, k: k, chunk: chunk,
                         store: po.baseAddress!, backward: nil)
    }
    return out
}

/// Summaries of a Jacobian pass, accumulated in Double.
public struct JacobianStats: Sendable, Equatable {
    /// Σ |J| over all tokens and entries.
    public var absSum = 0.0
    /// Number of entries with |J| > t, for each t of `JacobianStats.thresholds`.
    public var above: [Int] = [0, 0, 0, 0]
    public var entries = 0
    /// The paper's sparsity thresholds.
    public static let thresholds: [Double] = [0.005, 0.01, 0.015, 0.02]
    public init() {}
    /// Share of entries with |J| > thresholds[i].
    public func share(_ i: Int) -> Double { entries == 0 ? 0 : Double(above[i]) / Double(entries) }
}

/// Share of the entries of J (any number of tokens) with |J| > t, for each t
/// of `JacobianStats.thresholds`.
public func jacobianShares<T: JSAEScalar>(_ J: [T]) -> [Double] {
    JacobianStats.thresholds.map { t in Double(J.reduce(0) { $0 + (Double(abs($1)) > t ? 1 : 0) }) / Double(max(J.count, 1)) }
}

/// Where the Jacobian term's gradient goes: coef · sign(J) is pushed back to
/// `dwd1` ([m_in, d_mlp]) and `dw2eT` ([m_out, d_mlp]), accumulating (+=).
public struct JacobianBackward<T: JSAEScalar> {
    public var coef: T
    public var dwd1: UnsafeMutablePointer<T>
    public var dw2eT: UnsafeMutablePointer<T>
    public init(coef: T, dwd1: UnsafeMutablePointer<T>, dw2eT: UnsafeMutablePointer<T>) {
        self.coef = coef; self.dwd1 = dwd1; self.dw2eT = dw2eT
    }
}

/// One pass over the tokens in chunks: per token, gather the K2 rows of w2eT
/// (L, [k, d_mlp]) and the K1 rows of wd1 scaled by φ' (R, [k, d_mlp]), form
/// J = L·Rᵀ, accumulate its statistics, optionally store it, and optionally
/// run the backward of coef·Σ|J| while L and R are in cache:
///
///     G = coef · sign(J);  dw2eT[K2] += G·R;  dwd1[K1] += (Gᵀ·L) ⊙ φ'
///
/// Tokens of a chunk are split across the cores, each worker running its
/// small gemms on single-threaded BLAS; the per-token row updates are then
/// scattered by workers that own disjoint latent ranges, in token order. So
/// the result is the same for any thread count and chunk size, and memory is
/// O(chunk · k · d_mlp).
public func jacobianPass<T: JSAEScalar>(factors: JacobianFactors<T>, k1: [Int], k2: [Int],
                                        phiPrime: Matrix<T>, k: Int, chunk: Int,
                                        store: UnsafeMutablePointer<T>?,
                                        backward: JacobianBackward<T>?,
                                        timer: PhaseTimer? = nil) -> JacobianStats {
    let B = phiPrime.rows, h = factors.dMlp
    precondition(phiPrime.cols == h && k1.count == B * k && k2.count == B * k)
    precondition(chunk >= 1)
    let kk = k * k
    let c = min(chunk, max(B, 1))
    let workers = max(1, min(Parallel.threads, c))
    // Per-worker scratch: L, R [k, d_mlp], J and G [k, k].
    var scratch = [T](repeating: 0, count: workers * (2 * k * h + 2 * kk))
    // Per-chunk outputs of the backward: dL = G·R and dR = Gᵀ·L (⊙ φ' is applied in the scatter).
    // Every slot the scatter reads is first written by a gemm with beta = 0.
    var dL = Matrix<T>.uninitialised(rows: backward == nil ? 0 : c * k, cols: h).data
    var dR = Matrix<T>.uninitialised(rows: backward == nil ? 0 : c * k, cols: h).data
    // Per-token statistics, reduced in token order at the end.
    var absSums = [Double](repeating: 0, count: B)
    var counts = [Int32](repeating: 0, count: B * 4)
    let thresholds = JacobianStats.thresholds.map { T($0) }
    let mIn = factors.wd1.rows, mOut = factors.w2eT.rows
    // Worker 0's own split between the forward part (gather, J, statistics)
    // and the backward part (G, two gemms, ⊙φ'), used to apportion the
    // fused region's wall time between the two phases.
    var w0Forward = 0.0, w0Backward = 0.0
    var start = 0
    while start < B {
        let n = min(c, B - start)
        let t0 = timer == nil ? 0 : PhaseTimer.now()
        factors.wd1.data.withUnsafeBufferPointer { pw1 in
        factors.w2eT.data.withUnsafeBufferPointer { pw2 in
        phiPrime.data.withUnsafeBufferPointer { pphi in
        scratch.withUnsafeMutableBufferPointer { psc in
        dL.withUnsafeMutableBufferPointer { pdL in
        dR.withUnsafeMutableBufferPointer { pdR in
        absSums.withUnsafeMutableBufferPointer { pabs in
        counts.withUnsafeMutableBufferPointer { pcnt in
            Parallel.withSerialBLAS {
                Parallel.forRanges(n, parts: workers) { w, slots in
                    let base = psc.baseAddress! + w * (2 * k * h + 2 * kk)
                    let L = base, R = base + k * h, Jw = base + 2 * k * h, G = Jw + kk
                    let clock = timer != nil && w == 0
                    for slot in slots {
                        let b = start + slot
                        let f0 = clock ? PhaseTimer.now() : 0
                        let phi = pphi.baseAddress! + b * h
                        for j in 0..<k {
                            (L + j * h).update(from: pw2.baseAddress! + k2[b * k + j] * h, count: h)
                            let src = pw1.baseAddress! + k1[b * k + j] * h, dst = R + j * h
                            for r in 0..<h { dst[r] = src[r] * phi[r] }
                        }
                        let J = store.map { $0 + b * kk } ?? Jw
                        // J_b = L · Rᵀ : [k, d_mlp] × [d_mlp, k]
                        T.gemm(transA: false, transB: true, m: k, n: k, k: h, alpha: 1,
                               a: L, lda: h, b: R, ldb: h, beta: 0, c: J, ldc: k)
                        var a = 0.0
                        var c0: Int32 = 0, c1: Int32 = 0, c2: Int32 = 0, c3: Int32 = 0
                        for e in 0..<kk {
                            let v = abs(J[e])
                            a += Double(v)
                            if v > thresholds[0] { c0 += 1 }
                            if v > thresholds[1] { c1 += 1 }
                            if v > thresholds[2] { c2 += 1 }
                            if v > thresholds[3] { c3 += 1 }
                        }
                        pabs[b] = a
                        pcnt[b * 4] = c0; pcnt[b * 4 + 1] = c1; pcnt[b * 4 + 2] = c2; pcnt[b * 4 + 3] = c3
                        let f1 = clock ? PhaseTimer.now() : 0
                        if clock { w0Forward += f1 - f0 }
                        guard let bw = backward else { continue }
                        // d|J|/dJ = sign(J), with sign(0) = 0 as torch.sign.
                        for e in 0..<kk { G[e] = J[e] > 0 ? bw.coef : (J[e] < 0 ? -bw.coef : 0) }
                        let outL = pdL.baseAddress! + slot * k * h, outR = pdR.baseAddress! + slot * k * h
                        T.gemm(transA: false, transB: false, m: k, n: h, k: k, alpha: 1,
                               a: G, lda: k, b: R, ldb: h, beta: 0, c: outL, ldc: h)
                        T.gemm(transA: true, transB: false, m: k, n: h, k: k, alpha: 1,
                               a: G, lda: k, b: L, ldb: h, beta: 0, c: outR, ldc: h)
                        if clock { w0Backward += PhaseTimer.now() - f1 }
                    }
                }
            }
            let t1 = timer == nil ? 0 : PhaseTimer.now()
            let share = w0Forward + w0Backward > 0 ? w0Forward / (w0Forward + w0Backward) : 1
            timer?.add(.jacobianForward, (t1 - t0) * share)
            timer?.add(.jacobianBackward, (t1 - t0) * (1 - share))
            w0Forward = 0; w0Backward = 0
            guard let bw = backward else { return }
            // Scatter: worker w owns a range of latent rows of dwd1 and of dw2eT.
            let d1 = SharedPointer(bw.dwd1), d2 = SharedPointer(bw.dw2eT)
            Parallel.forRanges(max(mIn, mOut)) { _, own in
                let ownIn = (own.lowerBound * mIn / max(mIn, mOut))..<(own.upperBound * mIn / max(mIn, mOut))
                let ownOut = (own.lowerBound * mOut / max(mIn, mOut))..<(own.upperBound * mOut / max(mIn, mOut))
                for slot in 0..<n {
                    let b = start + slot
                    for j in 0..<k {
                        let i2 = k2[b * k + j]
                        if ownOut.contains(i2) {
                            let dst = d2.p + i2 * h, src = pdL.baseAddress! + (slot * k + j) * h
                            for r in 0..<h { dst[r] += src[r] }
                        }
                        let i1 = k1[b * k + j]
                        if ownIn.contains(i1) {
                            // dwd1 row += (Gᵀ·L)[p] ⊙ φ'[b], fused into the scatter.
                            let dst = d1.p + i1 * h, src = pdR.baseAddress! + (slot * k + j) * h
                            let phi = pphi.baseAddress! + b * h
                            for r in 0..<h { dst[r] += src[r] * phi[r] }
                        }
                    }
                }
            }
            timer?.add(.jacobianBackward, PhaseTimer.now() - t1)
        } } } } } } } }
        start += n
    }
    var stats = JacobianStats()
    stats.entries = B * kk
    for b in 0..<B {
        stats.absSum += absSums[b]
        for i in 0..<4 { stats.above[i] += Int(counts[b * 4 + i]) }
    }
    return stats
}

