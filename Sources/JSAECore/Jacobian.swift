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

    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public init(saeIn: TopKSAE<T>, mlp: MLP<T>, saeOut: TopKSAE<T>) {
        wd1 = matmul(saeIn.wDec, mlp.wIn)
        // (W_out @ W_enc_y)ᵀ = W_enc_yᵀ @ W_outᵀ: one gemm with both operands
        // transposed in place, no transposed copies.
        w2eT = matmul(saeOut.wEnc, mlp.wOut, transA: true, transB: true)
    }

    public var dMlp: Int { wd1.cols }
}

/// Default number of tokens whose gathered [k, d_mlp] blocks are held at once.
/// At k = 32, d_mlp = 2048 in Float that is 2 × 64 × 256 KiB = 32 MiB.
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
@_specialize(exported: true, where T == Float)
@_specialize(exported: true, where T == Double)
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
/// run the backward of coef·Σ|J| while L and R are still in cache:
///
///     G = coef · sign(J);  dw2eT[K2] += G·R;  dwd1[K1] += (Gᵀ·L) ⊙ φ'
public func jacobianPass<T: JSAEScalar>(factors: JacobianFactors<T>, k1: [Int], k2: [Int],
                                        phiPrime: Matrix<T>, k: Int, chunk: Int,
                                        store: UnsafeMutablePointer<T>?,
                                        backward: JacobianBackward<T>?) -> JacobianStats {
    let B = phiPrime.rows, h = factors.dMlp
    precondition(phiPrime.cols == h && k1.count == B * k && k2.count == B * k)
    precondition(chunk >= 1)
    var stats = JacobianStats()
    stats.entries = B * k * k
    let c = min(chunk, max(B, 1))
    var left = [T](repeating: 0, count: c * k * h)   // L per token: [k, d_mlp]
    var right = [T](repeating: 0, count: c * k * h)  // R per token: [k, d_mlp]
    var jBlock = [T](repeating: 0, count: k * k)
    var g = [T](repeating: 0, count: k * k)
    var scratch = [T](repeating: 0, count: backward == nil ? 0 : k * h)
    let t0 = T(JacobianStats.thresholds[0]), t1 = T(JacobianStats.thresholds[1])
    let t2 = T(JacobianStats.thresholds[2]), t3 = T(JacobianStats.thresholds[3])
    var start = 0
    while start < B {
        let n = min(c, B - start)
        gatherJacobianBlocks(factors: factors, k1: k1, k2: k2, phiPrime: phiPrime, k: k,
                             tokens: start..<(start + n), left: &left, right: &right)
        left.withUnsafeBufferPointer { pl in
        right.withUnsafeBufferPointer { pr in
        jBlock.withUnsafeMutableBufferPointer { pj in
        g.withUnsafeMutableBufferPointer { pg in
        scratch.withUnsafeMutableBufferPointer { ps in
        phiPrime.data.withUnsafeBufferPointer { pphi in
            for t in 0..<n {
                let b = start + t
                let L = pl.baseAddress! + t * k * h, R = pr.baseAddress! + t * k * h
                let J = store.map { $0 + b * k * k } ?? pj.baseAddress!
                // J_b = L · Rᵀ : [k, d_mlp] × [d_mlp, k]
                T.gemm(transA: false, transB: true, m: k, n: k, k: h, alpha: 1,
                       a: L, lda: h, b: R, ldb: h, beta: 0, c: J, ldc: k)
                for e in 0..<(k * k) {
                    let a = abs(J[e])
                    stats.absSum += Double(a)
                    if a > t0 { stats.above[0] += 1 }
                    if a > t1 { stats.above[1] += 1 }
                    if a > t2 { stats.above[2] += 1 }
                    if a > t3 { stats.above[3] += 1 }
                }
                guard let bw = backward else { continue }
                for e in 0..<(k * k) {
                    // d|J|/dJ = sign(J), with sign(0) = 0 as torch.sign.
                    pg[e] = J[e] > 0 ? bw.coef : (J[e] < 0 ? -bw.coef : 0)
                }
                let S = ps.baseAddress!
                // dL = G · R → rows K2[q] of dw2eT
                T.gemm(transA: false, transB: false, m: k, n: h, k: k, alpha: 1,
                       a: pg.baseAddress!, lda: k, b: R, ldb: h, beta: 0, c: S, ldc: h)
                for q in 0..<k {
                    let dst = bw.dw2eT + k2[b * k + q] * h, src = S + q * h
                    for r in 0..<h { dst[r] += src[r] }
                }
                // dR = Gᵀ · L → ⊙ φ' → rows K1[p] of dwd1
                T.gemm(transA: true, transB: false, m: k, n: h, k: k, alpha: 1,
                       a: pg.baseAddress!, lda: k, b: L, ldb: h, beta: 0, c: S, ldc: h)
                let phi = pphi.baseAddress! + b * h
                for p in 0..<k {
                    let dst = bw.dwd1 + k1[b * k + p] * h, src = S + p * h
                    for r in 0..<h { dst[r] += src[r] * phi[r] }
                }
            }
        } } } } } }
        start += n
    }
    return stats
}

/// Fills, for each token t of `tokens` (at slot t − lowerBound), the K2 rows of
/// w2eT into `left` and the K1 rows of wd1 scaled by φ' into `right`.
@inlinable
func gatherJacobianBlocks<T: JSAEScalar>(factors: JacobianFactors<T>, k1: [Int], k2: [Int],
                                         phiPrime: Matrix<T>, k: Int, tokens: Range<Int>,
                                         left: inout [T], right: inout [T]) {
    let h = factors.dMlp
    factors.wd1.data.withUnsafeBufferPointer { pw1 in
        factors.w2eT.data.withUnsafeBufferPointer { pw2 in
            phiPrime.data.withUnsafeBufferPointer { pphi in
                left.withUnsafeMutableBufferPointer { pl in
                    right.withUnsafeMutableBufferPointer { pr in
                        for (slot, b) in tokens.enumerated() {
                            let phi = pphi.baseAddress! + b * h
                            for j in 0..<k {
                                let dstL = pl.baseAddress! + (slot * k + j) * h
                                let srcL = pw2.baseAddress! + k2[b * k + j] * h
                                dstL.update(from: srcL, count: h)
                                let dstR = pr.baseAddress! + (slot * k + j) * h
                                let srcR = pw1.baseAddress! + k1[b * k + j] * h
                                for r in 0..<h { dstR[r] = srcR[r] * phi[r] }
                            }
                        }
                    }
                }
            }
        }
    }
}
