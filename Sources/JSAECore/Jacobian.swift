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
public func jacobian<T: JSAEScalar>(factors: JacobianFactors<T>, k1: [Int], k2: [Int],
                                    phiPrime: Matrix<T>, k: Int,
                                    chunk: Int = defaultJacobianChunk) -> [T] {
    let B = phiPrime.rows, h = factors.dMlp
    precondition(phiPrime.cols == h && k1.count == B * k && k2.count == B * k)
    precondition(chunk >= 1)
    var out = [T](repeating: 0, count: B * k * k)
    let c = min(chunk, max(B, 1))
    var left = [T](repeating: 0, count: c * k * h)   // w2eT[K2] per token: [k, d_mlp]
    var right = [T](repeating: 0, count: c * k * h)  // wd1[K1] ⊙ φ' per token: [k, d_mlp]
    var start = 0
    while start < B {
        let n = min(c, B - start)
        gatherJacobianBlocks(factors: factors, k1: k1, k2: k2, phiPrime: phiPrime, k: k,
                             tokens: start..<(start + n), left: &left, right: &right)
        left.withUnsafeBufferPointer { pl in
            right.withUnsafeBufferPointer { pr in
                out.withUnsafeMutableBufferPointer { po in
                    for t in 0..<n {
                        // J_b = left_b · right_bᵀ : [k, d_mlp] × [d_mlp, k]
                        T.gemm(transA: false, transB: true, m: k, n: k, k: h, alpha: 1,
                               a: pl.baseAddress! + t * k * h, lda: h,
                               b: pr.baseAddress! + t * k * h, ldb: h,
                               beta: 0, c: po.baseAddress! + (start + t) * k * k, ldc: k)
                    }
                }
            }
        }
        start += n
    }
    return out
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
