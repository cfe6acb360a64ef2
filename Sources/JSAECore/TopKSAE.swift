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

    /// Tokens whose dense pre-activations are held at once while encoding
    /// (1024 × m in T: 64 MiB at m = 16384 in Float).
    public static var encodeChunk: Int { 1024 }

    /// TopK codes of each token: the encoder's dense product (BLAS), then the
    /// sparse selection (both cores), chunk by chunk so the dense [B, m]
    /// pre-activations never exist whole.
    /// - x: [B, d]
    public func encode(_ x: Matrix<T>, timer: PhaseTimer? = nil) -> SparseCodes<T> {
        precondition(x.cols == d, "encode: x has \(x.cols) columns, SAE has d = \(d)")
        let B = x.rows, m = self.m, k = self.k, d = self.d
        var codes = SparseCodes<T>(tokens: B, k: k)
        let chunk = min(Self.encodeChunk, max(B, 1))
        var h = Matrix<T>.uninitialised(rows: chunk, cols: m)
        var start = 0
        while start < B {
            let n = min(chunk, B - start)
            timed(timer, .encoderGemm) {
                h.data.withUnsafeMutableBufferPointer { ph in
                    bEnc.withUnsafeBufferPointer { pb in
                        // h = b_enc (row-broadcast), then h += x · W_enc (beta = 1).
                        for r in 0..<n { (ph.baseAddress! + r * m).update(from: pb.baseAddress!, count: m) }
                    }
                    x.data.withUnsafeBufferPointer { px in
                        wEnc.data.withUnsafeBufferPointer { pw in
                            T.gemm(transA: false, transB: false, m: n, n: m, k: d, alpha: 1,
                                   a: px.baseAddress! + start * d, lda: d, b: pw.baseAddress!, ldb: m,
                                   beta: 1, c: ph.baseAddress!, ldc: m)
                        }
                    }
                }
            }
            timed(timer, .topK) { selectRows(h, rows: n, into: &codes, at: start) }
            start += n
        }
        return codes
    }

    /// TopK of the first `rows` rows of h into codes rows at..<at+rows, on both cores.
    func selectRows(_ h: Matrix<T>, rows: Int, into codes: inout SparseCodes<T>, at: Int) {
        let m = self.m, k = self.k
        h.data.withUnsafeBufferPointer { ph in
        codes.indices.withUnsafeMutableBufferPointer { pi in
        codes.preacts.withUnsafeMutableBufferPointer { pp in
        codes.values.withUnsafeMutableBufferPointer { pv in
            Parallel.forRanges(rows) { _, range in
                for r in range {
                    let b = at + r
                    topKRow(ph.baseAddress! + r * m, m: m, k: k,
                            outIndices: pi.baseAddress! + b * k, outValues: pp.baseAddress! + b * k)
                    for j in 0..<k { let v = pp[b * k + j]; pv[b * k + j] = v > 0 ? v : 0 }
                }
            }
        } } } }
    }

    /// Sparse decode: x̂[b] = b_dec + Σ_j s[b, j] · W_dec[K[b, j]], O(B·k·d), both cores.
    /// - returns [B, d]
    public func decode(_ codes: SparseCodes<T>) -> Matrix<T> {
        let B = codes.tokens, k = codes.k, d = self.d
        var out = Matrix<T>.uninitialised(rows: B, cols: d)
        out.data.withUnsafeMutableBufferPointer { po in
        wDec.data.withUnsafeBufferPointer { pw in
        bDec.withUnsafeBufferPointer { pb in
        codes.values.withUnsafeBufferPointer { pv in
        codes.indices.withUnsafeBufferPointer { pidx in
            Parallel.forRanges(B) { _, range in
                for b in range {
                    let row = po.baseAddress! + b * d
                    row.update(from: pb.baseAddress!, count: d)
                    for j in 0..<k {
                        let s = pv[b * k + j]
                        if s == 0 { continue }
                        let w = pw.baseAddress! + pidx[b * k + j] * d
                        for c in 0..<d { row[c] += s * w[c] }
                    }
                }
            }
        } } } } }
        return out
    }
}
