/// A TopK sparse autoencoder, exactly as the JSAE reference code defines it:
///
///     h = x @ W_enc + b_enc;  K = topk(h);  s[K] = relu(h[K]);  x̂ = s @ W_dec + b_dec
///
/// TopK runs on the raw pre-activations (no b_dec subtraction, no input
/// scaling) and the ReLU comes after the selection.
/// - W_enc: [d, m], b_enc: [m], W_dec: [m, d], b_dec: [d]
public struct TopKSAE<T: JSAEScalar>: Sendable, Equatable {
    public var wEnc: Matrix<T>
    public var bEnc: [T]
    public var wDec: Matrix<T>
    public var bDec: [T]
    public var k: Int

    public var d: Int { wEnc.rows }
    public var m: Int { wEnc.cols }

    /// Checks every shape against `W_enc` and 1 <= k <= m.
    public init(wEnc: Matrix<T>, bEnc: [T], wDec: Matrix<T>, bDec: [T], k: Int) throws {
        let d = wEnc.rows, m = wEnc.cols
        guard bEnc.count == m else { throw JSAEError("b_enc has \(bEnc.count) entries, expected m = \(m) (from W_enc [\(d), \(m)])") }
        guard wDec.rows == m && wDec.cols == d else { throw JSAEError("W_dec has shape [\(wDec.rows), \(wDec.cols)], expected [\(m), \(d)] (from W_enc [\(d), \(m)])") }
        guard bDec.count == d else { throw JSAEError("b_dec has \(bDec.count) entries, expected d = \(d)") }
        guard k >= 1 else { throw JSAEError("k = \(k) must be at least 1") }
        guard k <= m else { throw JSAEError("k = \(k) exceeds the number of latents m = \(m)") }
        self.wEnc = wEnc; self.bEnc = bEnc; self.wDec = wDec; self.bDec = bDec; self.k = k
    }

    public func converted<U: JSAEScalar>(to: U.Type = U.self) -> TopKSAE<U> {
        // Shapes were checked when self was made.
        try! TopKSAE<U>(wEnc: wEnc.converted(), bEnc: bEnc.map { U($0) },
                        wDec: wDec.converted(), bDec: bDec.map { U($0) }, k: k)
    }

    /// Dense pre-activations h = x @ W_enc + b_enc.
    /// - x: [B, d]; returns [B, m]
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public func preactivations(_ x: Matrix<T>) -> Matrix<T> {
        var h = matmul(x, wEnc)
        addRowBias(&h, bEnc)
        return h
    }

    /// TopK codes of each token: the encoder's dense product, then the sparse
    /// selection.
    /// - x: [B, d]
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public func encode(_ x: Matrix<T>) -> SparseCodes<T> {
        precondition(x.cols == d, "encode: x has \(x.cols) columns, SAE has d = \(d)")
        let h = preactivations(x)
        return select(h)
    }

    /// TopK and ReLU applied to precomputed pre-activations.
    /// - h: [B, m]
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public func select(_ h: Matrix<T>) -> SparseCodes<T> {
        let B = h.rows, m = self.m, k = self.k
        var codes = SparseCodes<T>(tokens: B, k: k)
        h.data.withUnsafeBufferPointer { ph in
            codes.indices.withUnsafeMutableBufferPointer { pi in
                codes.preacts.withUnsafeMutableBufferPointer { pv in
                    for b in 0..<B {
                        topKRow(ph.baseAddress! + b * m, m: m, k: k,
                                outIndices: pi.baseAddress! + b * k, outValues: pv.baseAddress! + b * k)
                    }
                }
            }
        }
        codes.values = codes.preacts.map { $0 > 0 ? $0 : 0 }
        return codes
    }

    /// Sparse decode: x̂[b] = b_dec + Σ_j s[b, j] · W_dec[K[b, j]], O(B·k·d).
    /// - returns [B, d]
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public func decode(_ codes: SparseCodes<T>) -> Matrix<T> {
        let B = codes.tokens, k = codes.k, d = self.d
        var out = Matrix<T>(rows: B, cols: d)
        out.data.withUnsafeMutableBufferPointer { po in
            wDec.data.withUnsafeBufferPointer { pw in
                for b in 0..<B {
                    let row = po.baseAddress! + b * d
                    for j in 0..<d { row[j] = bDec[j] }
                    for j in 0..<k {
                        let s = codes.values[b * k + j]
                        if s == 0 { continue }
                        let w = pw.baseAddress! + codes.indices[b * k + j] * d
                        for c in 0..<d { row[c] += s * w[c] }
                    }
                }
            }
        }
        return out
    }
}
