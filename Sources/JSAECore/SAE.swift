/// A TopK sparse autoencoder, exactly as the JSAE reference code defines it
/// (docs/jsae-spec.md, "Forward pass"):
///
///     h = x @ W_enc + b_enc;  K = topk(h);  s[K] = relu(h[K]);  x̂ = s @ W_dec + b_dec
///
/// TopK runs on the raw pre-activations (no b_dec subtraction, no input
/// scaling) and the ReLU comes after the selection.
/// - W_enc: [d, m], b_enc: [m], W_dec: [m, d], b_dec: [d]
public struct TopKSAE<T: JSAEScalar>: Sendable, Equatable {
    /// The four tensors, one allocation (see `SAETensors`).
    public var tensors: SAETensors<T>
    public var k: Int

    public var d: Int { tensors.d }
    public var m: Int { tensors.m }

    /// Checks every shape against `W_enc` and 1 <= k <= m.
    public init(wEnc: Matrix<T>, bEnc: [T], wDec: Matrix<T>, bDec: [T], k: Int) throws {
        let d = wEnc.rows, m = wEnc.cols
        guard bEnc.count == m else { throw JSAEError("b_enc has \(bEnc.count) entries, expected m = \(m) (from W_enc [\(d), \(m)])") }
        guard wDec.rows == m && wDec.cols == d else { throw JSAEError("W_dec has shape [\(wDec.rows), \(wDec.cols)], expected [\(m), \(d)] (from W_enc [\(d), \(m)])") }
        guard bDec.count == d else { throw JSAEError("b_dec has \(bDec.count) entries, expected d = \(d)") }
        var t = SAETensors<T>(d: d, m: m)
        t.wEnc = wEnc; t.bEnc = bEnc; t.wDec = wDec; t.bDec = bDec
        try self.init(tensors: t, k: k)
    }

    public init(tensors: SAETensors<T>, k: Int) throws {
        guard k >= 1 else { throw JSAEError("k = \(k) must be at least 1") }
        guard k <= tensors.m else { throw JSAEError("k = \(k) exceeds the number of latents m = \(tensors.m)") }
        self.tensors = tensors; self.k = k
    }

    public var wEnc: Matrix<T> { get { tensors.wEnc } set { tensors.wEnc = newValue } }
    public var bEnc: [T] { get { tensors.bEnc } set { tensors.bEnc = newValue } }
    public var wDec: Matrix<T> { get { tensors.wDec } set { tensors.wDec = newValue } }
    public var bDec: [T] { get { tensors.bDec } set { tensors.bDec = newValue } }

    /// Row i of W_dec, [d].
    public func decoderRow(_ i: Int) -> [T] { Array(UnsafeBufferPointer(start: tensors.pointer(.wDec) + i * d, count: d)) }

    public func converted<U: JSAEScalar>(to: U.Type = U.self) -> TopKSAE<U> {
        // k was checked when self was made.
        try! TopKSAE<U>(tensors: tensors.converted(), k: k)
    }

    /// TopK codes of each token of x [B, d] (allocates; training uses `encode(into:)`).
    public func encode(_ x: Matrix<T>, threads: Int = Parallel.onlineCores) -> SparseCodes<T> {
        precondition(x.cols == d, "encode: x has \(x.cols) columns, SAE has d = \(d)")
        let codes = CodesBuffer<T>(tokens: x.rows, k: k)
        let scratch = Buffer<T>(encodeScratchCount(tokens: x.rows, m: m))
        encode(into: codes, x: x.data, tokens: x.rows, scratch: scratch.p, threads: threads)
        return codes.codes(x.rows)
    }

    /// x̂ = s @ W_dec + b_dec from sparse codes, [B, d] (allocates). The
    /// codes' latents must lie in 0..<m, as `encode`'s do (checked: an index
    /// outside would make the latent sort write out of bounds).
    public func decode(_ codes: SparseCodes<T>, threads: Int = Parallel.onlineCores) -> Matrix<T> {
        precondition(codes.indices.allSatisfy { $0 >= 0 && $0 < m }, "decode: a latent index outside 0..<\(m)")
        var out = Matrix<T>(rows: codes.tokens, cols: d)
        let order = Buffer<Int>(codes.tokens * codes.k), starts = Buffer<Int>(m + 1)
        out.data.withUnsafeMutableBufferPointer { o in
            sparseDecode(out: o.baseAddress!, order: order.p, starts: starts.p, indices: codes.indices, values: codes.values,
                         wDec: tensors.pointer(.wDec), bDec: tensors.pointer(.bDec), tokens: codes.tokens, d: d, k: codes.k, m: m,
                         threads: threads)
        }
        return out
    }

    /// Encoder gemm then TopK, in chunks of tokens and within a chunk in
    /// parts of columns, so the dense [B, m] pre-activations never exist
    /// whole (`scratch`: `encodeScratchCount(tokens:m:)`). TopK scans a
    /// row's parts in column order, carrying its k held values from one
    /// part to the next, which is the one-by-one scan of the whole row.
    func encode(into codes: CodesBuffer<T>, x: UnsafePointer<T>, tokens B: Int, scratch h: UnsafeMutablePointer<T>,
                threads: Int, timer: PhaseTimer? = nil) {
        let chunk = min(encodeChunkTokens, max(B, 1))
        for start in stride(from: 0, to: B, by: chunk) {
            let n = min(chunk, B - start)
            for first in stride(from: 0, to: m, by: encodePartColumns) {
                let columns = first..<min(first + encodePartColumns, m)
                timed(timer, .encoderGemm) {
                    encoderPreactivations(out: h, x: x + start * d, wEnc: tensors.pointer(.wEnc), bEnc: tensors.pointer(.bEnc),
                                          tokens: n, d: d, m: m, columns: columns, threads: threads)
                }
                timed(timer, .topK) { selectTopK(codes, at: start, h: h, tokens: n, columns: columns, k: k, threads: threads) }
            }
        }
    }
}

/// Tokens per encoder chunk: 512 rows keep the encoder gemm at its FLOP
/// limit (256-row chunks ran it 1.05× slower: each chunk repacks all of
/// W_enc; 1024 rows were no faster than 512; docs/performance.md).
package let encodeChunkTokens = 512

/// Columns of a chunk's pre-activations held at once: [512, 8192] in T is
/// 16 MiB in Float, the size of the MLP's and the Jacobian's chunks, so
/// none of them sets the workspace's shared scratch alone. A part repacks
/// only the chunk's x (512 × d), not W_enc.
package let encodePartColumns = 8192

/// Scratch entries `encode` needs for a batch of B tokens and m latents.
func encodeScratchCount(tokens B: Int, m: Int) -> Int { min(encodeChunkTokens, max(B, 1)) * min(encodePartColumns, m) }

// MARK: Kernels (outputs, inputs, sizes)

/// h = x @ W_enc[:, columns] + b_enc[columns]: the bias broadcast, then one
/// gemm with beta = 1.
/// - out: [n, columns.count]; x: [n, d]; wEnc: [d, m]; bEnc: [m]
func encoderPreactivations<T: JSAEScalar>(out h: UnsafeMutablePointer<T>, x: UnsafePointer<T>,
                                          wEnc: UnsafePointer<T>, bEnc: UnsafePointer<T>, tokens n: Int, d: Int, m: Int,
                                          columns: Range<Int>, threads: Int) {
    let w = columns.count
    for r in 0..<n { (h + r * w).update(from: bEnc + columns.lowerBound, count: w) }
    parallelGemm(transA: false, transB: false, m: n, n: w, k: d, alpha: 1, a: x, lda: d, b: wEnc + columns.lowerBound, ldb: m,
                 beta: 1, c: h, ldc: w, threads: threads)
}

/// TopK of n rows of h (the pre-activations of `columns`) continued into
/// token rows at..<at+n of `codes`; values = ReLU(preacts).
func selectTopK<T: JSAEScalar>(_ codes: CodesBuffer<T>, at: Int, h: UnsafePointer<T>, tokens n: Int, columns: Range<Int>, k: Int,
                               threads: Int) {
    let idx = SharedPointer(codes.indices.p), pre = SharedPointer(codes.preacts.p), val = SharedPointer(codes.values.p)
    let w = columns.count
    Parallel.forRanges(n, threads: threads) { _, rows in
        for r in rows {
            let b = at + r
            topKRow(h + r * w, count: w, firstIndex: columns.lowerBound, k: k, outIndices: idx.p + b * k, outValues: pre.p + b * k)
            for j in 0..<k { let v = pre.p[b * k + j]; val.p[b * k + j] = v > 0 ? v : 0 }
        }
    }
}

/// x̂[b] = b_dec + Σ_i s[b, i] · W_dec[i] over the token's latents with a
/// nonzero value, in ascending latent order: O(B·k·d).
///
/// The (token, slot) pairs are first counting-sorted by latent
/// (`latentOrder`; `order`: [B·k], `starts`: [m + 1]), and W_dec is then
/// read once, in row order, each row added into the x̂ rows of its tokens.
/// Scanning tokens instead gathered a row of W_dec per pair at random from
/// all of [m, d] (DRAM at large m); now the random accesses fall on x̂
/// ([B, d], which a worker's share keeps in L2 or L3). Workers own
/// contiguous token ranges and each walks every latent's pairs within its
/// range (found by binary search in the latent's ascending pair list), so
/// every row's additions run in latent order whatever the thread count.
/// - out: [B, d]; indices, values: [B, k] (indices in [0, m)); wDec: [m, d]; bDec: [d]
/// - order: [B·k], starts: [m + 1], overwritten
func sparseDecode<T: JSAEScalar>(out: UnsafeMutablePointer<T>, order: UnsafeMutablePointer<Int>, starts: UnsafeMutablePointer<Int>,
                                 indices: UnsafePointer<Int>, values: UnsafePointer<T>,
                                 wDec: UnsafePointer<T>, bDec: UnsafePointer<T>, tokens B: Int, d: Int, k: Int, m: Int, threads: Int) {
    latentOrder(order: order, starts: starts, indices: indices, carries: { values[$0] != 0 }, pairs: B * k, m: m)
    let o = SharedPointer(out), ord = UnsafePointer(order), st = UnsafePointer(starts)
    Parallel.forRanges(B, threads: threads) { _, range in
        for b in range { (o.p + b * d).update(from: bDec, count: d) }
        let lo = range.lowerBound * k, hi = range.upperBound * k
        for i in 0..<m {
            var q = st[i], end = st[i + 1]
            if q == end || ord[q] >= hi || ord[end - 1] < lo { continue }
            // The first of latent i's pairs at or after `lo`.
            while q < end {
                let mid = (q + end) / 2
                if ord[mid] < lo { q = mid + 1 } else { end = mid }
            }
            let w = wDec + i * d
            end = st[i + 1]
            while q < end {
                let pair = ord[q]
                if pair >= hi { break }
                let s = values[pair], row = o.p + (pair / k) * d
                for c in 0..<d { row[c] += s * w[c] }
                q += 1
            }
        }
    }
}

/// Backward of a reconstruction term through decode, ReLU and TopK,
/// accumulating (+=) into the four gradient tensors. Only the k selected
/// latents with positive pre-activation carry gradient: O(B·k·d).
///
/// The (token, slot) pairs that carry gradient are first counting-sorted by
/// latent, stably (`order`: [B·k], `starts`: [m + 1]), and each latent's
/// rows (W_dec, dW_dec, dW_enc, b_enc) are then updated from its own tokens
/// in token order while they sit in L1. Scanning tokens instead touched
/// three scattered latent rows per pair (from L3 or DRAM at large m); now
/// the latents' rows stream in order and only the tokens' rows (B × d each)
/// are read at random. The order of the additions into each row is token
/// order either way, so the result is bit-identical to the token scan and
/// independent of the thread count.
///
/// dW_enc is [d, m], where a latent's column is strided by m. Workers own
/// groups of `decoderBackwardGroup` latents; a group's columns are summed as
/// rows in the worker's slice of `scratch` (L2-sized) and then added into
/// dW_enc a row segment at a time, each segment contiguous (an [m, d]
/// buffer added back by a transpose would cost a write and a read of all of
/// it, the transpose's accesses strided by pages).
/// - grad: the SAE's gradient; dOut: [B, d] = dL/dx̂; input: [B, d] the SAE's input
/// - scratch: `decoderBackwardScratchCount(m:d:threads:)` entries
func sparseDecoderBackward<T: JSAEScalar>(grad: inout SAETensors<T>, scratch: UnsafeMutablePointer<T>,
                                          order: UnsafeMutablePointer<Int>, starts: UnsafeMutablePointer<Int>,
                                          dOut: UnsafePointer<T>, input: UnsafePointer<T>, codes: CodesBuffer<T>,
                                          wDec: UnsafePointer<T>, tokens B: Int, threads: Int) {
    let d = grad.d, m = grad.m, k = codes.k, group = decoderBackwardGroup
    let columns = SharedPointer(scratch)
    let gwd = SharedPointer(grad.mutablePointer(.wDec)), gbe = SharedPointer(grad.mutablePointer(.bEnc))
    let gwe = SharedPointer(grad.mutablePointer(.wEnc))
    let gbd = grad.mutablePointer(.bDec)
    let idx = codes.indices.p, pre = codes.preacts.p, val = codes.values.p
    // b_dec: the sum of dL/dx̂ over tokens, in token order.
    for b in 0..<B { let dx = dOut + b * d; for c in 0..<d { gbd[c] += dx[c] } }
    // ReLU after TopK: no gradient where h <= 0 (torch's relu' at 0 is 0).
    latentOrder(order: order, starts: starts, indices: idx, carries: { pre[$0] > 0 }, pairs: B * k, m: m)
    let ord = UnsafePointer(order), st = UnsafePointer(starts)
    Parallel.forRanges((m + group - 1) / group, threads: threads) { part, groups in
        let cols = columns.p + part * group * d
        for g in groups {
            let i0 = g * group, i1 = min(i0 + group, m)
            cols.update(repeating: 0, count: (i1 - i0) * d)
            for i in i0..<i1 {
                let erow = cols + (i - i0) * d
                let wrow = wDec + i * d, grow = gwd.p + i * d
                for q in st[i]..<st[i + 1] {
                    let pair = ord[q], b = pair / k
                    let dx = dOut + b * d, xb = input + b * d
                    let s = val[pair]
                    // A Float reduction is not vectorised without fast-math
                    // (reassociation); BLAS dot is, in a fixed order.
                    let ds = T.dot(d, dx, wrow)
                    for c in 0..<d { grow[c] += s * dx[c] }
                    gbe.p[i] += ds
                    for c in 0..<d { erow[c] += ds * xb[c] }
                }
            }
            for c in 0..<d {
                let dst = gwe.p + c * m + i0
                for ii in 0..<(i1 - i0) { dst[ii] += cols[ii * d + c] }
            }
        }
    }
}

/// Latents per group in `sparseDecoderBackward`: a group's segment of each
/// dW_enc row is 16 cache lines in Float, which the hardware prefetcher
/// streams (one-line segments would make each row a miss of its own), and
/// its [256, d] sums (512 KiB at d = 512) stay in L2. Measured against 16:
/// 0.91× the single SAE's decode and reconstruction backward
/// (docs/performance.md).
let decoderBackwardGroup = 256

/// Scratch entries `sparseDecoderBackward` needs: a group's sums per worker.
func decoderBackwardScratchCount(m: Int, d: Int, threads: Int) -> Int {
    min(threads, (m + decoderBackwardGroup - 1) / decoderBackwardGroup) * decoderBackwardGroup * d
}

/// Stable counting sort of the flat (token, slot) pairs `0..<pairs` that
/// `carries` by their latent `indices[pair]` in [0, m): afterwards latent i's
/// pairs are `order[starts[i]..<starts[i + 1]]`, in ascending pair (token)
/// order. O(pairs + m), single-threaded (a few hundred µs per step).
func latentOrder(order: UnsafeMutablePointer<Int>, starts: UnsafeMutablePointer<Int>, indices: UnsafePointer<Int>,
                 carries: (Int) -> Bool, pairs: Int, m: Int) {
    starts.update(repeating: 0, count: m + 1)
    for p in 0..<pairs where carries(p) { starts[indices[p] + 1] += 1 }
    for i in 0..<m { starts[i + 1] += starts[i] }
    // starts[i] is used as latent i's write cursor, which ends at the old
    // starts[i + 1]; one shift back restores the starts.
    for p in 0..<pairs where carries(p) { let i = indices[p]; order[starts[i]] = p; starts[i] += 1 }
    for i in stride(from: m, to: 0, by: -1) { starts[i] = starts[i - 1] }
    starts[0] = 0
}
