/// The four trainable tensors of one SAE, used for gradients and for Adam's
/// moments. Names and shapes follow the file format.
/// - wEnc: [d, m], bEnc: [m], wDec: [m, d], bDec: [d]
public struct SAETensors<T: JSAEScalar>: Sendable, Equatable {
    public var wEnc: Matrix<T>
    public var bEnc: [T]
    public var wDec: Matrix<T>
    public var bDec: [T]

    public init(d: Int, m: Int) {
        wEnc = Matrix(rows: d, cols: m); bEnc = [T](repeating: 0, count: m)
        wDec = Matrix(rows: m, cols: d); bDec = [T](repeating: 0, count: d)
    }

    public init(wEnc: Matrix<T>, bEnc: [T], wDec: Matrix<T>, bDec: [T]) {
        self.wEnc = wEnc; self.bEnc = bEnc; self.wDec = wDec; self.bDec = bDec
    }

    /// File-format names and the flat storage of each tensor, in a fixed order.
    public static var paths: [(name: String, path: WritableKeyPath<SAETensors<T>, [T]>)] {
        [("W_enc", \.wEnc.data), ("b_enc", \.bEnc), ("W_dec", \.wDec.data), ("b_dec", \.bDec)]
    }

    /// Shapes in the order of `paths`: [d, m], [m], [m, d], [d].
    public var shapes: [[Int]] { [wEnc.shape, [bEnc.count], wDec.shape, [bDec.count]] }

    /// Σ of squares of every entry, in Double. Summed in fixed blocks whose
    /// partial sums are added in block order, so the value does not depend
    /// on the thread count.
    public var squaredNorm: Double {
        Self.paths.reduce(0.0) { acc, p in acc + blockedSquaredSum(self[keyPath: p.path]) }
    }

    /// self += s · other, tensor by tensor.
    public mutating func add(_ other: SAETensors<T>, scaledBy s: T) {
        for p in Self.paths {
            other[keyPath: p.path].withUnsafeBufferPointer { o in
                self[keyPath: p.path].withUnsafeMutableBufferPointer { b in for i in 0..<b.count { b[i] += s * o[i] } }
            }
        }
    }

    public mutating func scale(by s: T) {
        for p in Self.paths {
            self[keyPath: p.path].withUnsafeMutableBufferPointer { b in
                Parallel.forRanges(b.count) { _, r in for i in r { b[i] *= s } }
            }
        }
    }

    public func converted<U: JSAEScalar>(to: U.Type = U.self) -> SAETensors<U> {
        SAETensors<U>(wEnc: wEnc.converted(), bEnc: bEnc.map { U($0) }, wDec: wDec.converted(), bDec: bDec.map { U($0) })
    }
}

extension TopKSAE {
    /// The same tensor order as `SAETensors.paths`.
    public static var parameterPaths: [(name: String, path: WritableKeyPath<TopKSAE<T>, [T]>)] {
        [("W_enc", \.wEnc.data), ("b_enc", \.bEnc), ("W_dec", \.wDec.data), ("b_dec", \.bDec)]
    }

    public var tensors: SAETensors<T> { SAETensors(wEnc: wEnc, bEnc: bEnc, wDec: wDec, bDec: bDec) }

    /// Backward of the reconstruction term for this SAE, accumulating (+=)
    /// into `g`. Only the k selected latents with positive pre-activation
    /// carry gradient, so the work is O(B·k·d), never O(B·m·d).
    /// - x: [B, d] the SAE's input; dOut: [B, d] = dL/dx̂
    public func reconstructionBackward(x: Matrix<T>, codes: SparseCodes<T>, dOut: Matrix<T>, into g: inout SAETensors<T>) {
        let B = x.rows, d = self.d, m = self.m, k = codes.k
        // dW_enc is [d, m]: a latent's column is strided by m. Accumulate the
        // transposed gradient [m, d] row by row (contiguous), then add it
        // back with one cache-blocked transpose.
        var gEncT = [T](repeating: 0, count: m * d)
        dOut.data.withUnsafeBufferPointer { pd in
        x.data.withUnsafeBufferPointer { px in
        wDec.data.withUnsafeBufferPointer { pw in
        g.wDec.data.withUnsafeMutableBufferPointer { gwd in
        gEncT.withUnsafeMutableBufferPointer { gwe in
        g.bEnc.withUnsafeMutableBufferPointer { gbe in
        g.bDec.withUnsafeMutableBufferPointer { gbd in
            // b_dec: the sum of dL/dx̂ over tokens, in token order.
            for b in 0..<B { let dx = pd.baseAddress! + b * d; for c in 0..<d { gbd[c] += dx[c] } }
            // Latent-partitioned: worker w owns latents in its range, scans every
            // (token, slot) in token order and updates only its own rows, so no
            // two workers write the same row and the order per row is fixed.
            Parallel.forRanges(m) { _, own in
                for b in 0..<B {
                    let dx = pd.baseAddress! + b * d, xb = px.baseAddress! + b * d
                    for j in 0..<k {
                        let i = codes.indices[b * k + j]
                        guard own.contains(i) else { continue }
                        let pre = codes.preacts[b * k + j]
                        // ReLU after TopK: no gradient where h <= 0 (torch's relu' at 0 is 0).
                        guard pre > 0 else { continue }
                        let s = codes.values[b * k + j]
                        let wrow = pw.baseAddress! + i * d, grow = gwd.baseAddress! + i * d
                        // A Float reduction is not vectorised without fast-math
                        // (reassociation); BLAS dot is, in a fixed order.
                        let ds = T.dot(d, dx, wrow)
                        for c in 0..<d { grow[c] += s * dx[c] }
                        gbe[i] += ds
                        let erow = gwe.baseAddress! + i * d
                        for c in 0..<d { erow[c] += ds * xb[c] }
                    }
                }
            }
        } } } } } } }
        addTransposed(&g.wEnc, gEncT, rows: m, cols: d)
    }
}

extension TopKSAE {
    /// Decodes `codes` and accumulates the gradient of scale/2 · Σ(x̂ − input)²
    /// into `g`. Returns x̂.
    /// - input: [B, d], the SAE's input and reconstruction target
    func reconstruct(_ input: Matrix<T>, codes: SparseCodes<T>, gradientScale scale: T, into g: inout SAETensors<T>) -> Matrix<T> {
        let out = decode(codes)
        reconstructionBackward(x: input, codes: codes, dOut: residualGradient(out, input, scale), into: &g)
        return out
    }
}

/// dst [cols, rows] += srcᵀ where src is [rows, cols], in 64×64 tiles.
func addTransposed<T: JSAEScalar>(_ dst: inout Matrix<T>, _ src: [T], rows: Int, cols: Int) {
    precondition(dst.rows == cols && dst.cols == rows && src.count == rows * cols)
    let tile = 64
    src.withUnsafeBufferPointer { s in
        dst.data.withUnsafeMutableBufferPointer { o in
            // Workers own disjoint tile rows of src (= columns of dst).
            Parallel.forRanges((rows + tile - 1) / tile) { _, tiles in
            for i0 in tiles.map({ $0 * tile }) {
                for j0 in stride(from: 0, to: cols, by: tile) {
                    for i in i0..<min(i0 + tile, rows) {
                        for j in j0..<min(j0 + tile, cols) { o[j * rows + i] += s[i * cols + j] }
                    }
                }
            }
            }
        }
    }
}

/// Σ v² in Double over 64Ki-element blocks, the blocks summed in order.
func blockedSquaredSum<T: JSAEScalar>(_ v: [T]) -> Double {
    let block = 1 << 16
    let nBlocks = (v.count + block - 1) / block
    var partial = [Double](repeating: 0, count: nBlocks)
    v.withUnsafeBufferPointer { p in
        partial.withUnsafeMutableBufferPointer { out in
            Parallel.forRanges(nBlocks) { _, blocks in
                for bl in blocks {
                    // Four independent accumulators break the add-latency chain;
                    // the order is fixed, so the value is reproducible.
                    var s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
                    let lo = bl * block, hi = min((bl + 1) * block, p.count)
                    var i = lo
                    while i + 4 <= hi {
                        let a = Double(p[i]), b = Double(p[i + 1]), c = Double(p[i + 2]), e = Double(p[i + 3])
                        s0 += a * a; s1 += b * b; s2 += c * c; s3 += e * e
                        i += 4
                    }
                    while i < hi { let a = Double(p[i]); s0 += a * a; i += 1 }
                    out[bl] = (s0 + s1) + (s2 + s3)
                }
            }
        }
    }
    return partial.reduce(0, +)
}

/// Gradients of both SAEs (`saeOut` nil for a single SAE).
public struct PairGradients<T: JSAEScalar>: Sendable, Equatable {
    public var saeIn: SAETensors<T>
    public var saeOut: SAETensors<T>?

    public init(saeIn: SAETensors<T>, saeOut: SAETensors<T>?) { self.saeIn = saeIn; self.saeOut = saeOut }

    public var squaredNorm: Double { saeIn.squaredNorm + (saeOut?.squaredNorm ?? 0) }
}

/// What one evaluation of the training objective produced.
public struct TrainingPass<T: JSAEScalar>: Sendable {
    public var sums: LossSums
    public var components: LossComponents
    public var gradients: PairGradients<T>
    public var forward: PairForward<T>
    public var jacobianStats: JacobianStats?
}

extension JSAEModel {
    /// The reference code's training objective at the true input and its
    /// analytic gradient:
    ///
    ///     loss = mse_in + mse_out + λ · Σ|J| / (B·k²)
    ///
    /// with y = f(x) (or `yTarget`, the MLP output as the model computed it),
    /// φ' = act'(x @ W_in + b_in), index sets constant. The Jacobian term
    /// reaches only W_dec_x (through wd1) and W_enc_y (through w2e); nothing
    /// reaches the MLP. Without `saeOut` the objective is mse_in alone.
    /// - x: [B, d]; yTarget: [B, d] or nil
    /// - factors: reuse precomputed wd1/w2e for these weights (else computed here)
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public func lossAndGradients(_ x: Matrix<T>, yTarget: Matrix<T>? = nil, lambda: Double,
                                 chunk: Int = defaultJacobianChunk, keepJacobian: Bool = false,
                                 factors: JacobianFactors<T>? = nil, timer: PhaseTimer? = nil) -> TrainingPass<T> {
        // Prespecialised entry for other modules; this module calls the
        // implementation directly (see `Specialisation` in Parallel.swift).
        lossAndGradientsImpl(x, yTarget: yTarget, lambda: lambda, chunk: chunk, keepJacobian: keepJacobian,
                             factors: factors, timer: timer, needJacobian: true)
    }

    /// - needJacobian: with λ = 0 and no J kept, the Jacobian only feeds the
    ///   reported jacobian_l1 and sparsity; false skips it (jacobianStats nil,
    ///   jacobian_l1 reported as 0).
    func lossAndGradientsImpl(_ x: Matrix<T>, yTarget: Matrix<T>?, lambda: Double, chunk: Int, keepJacobian: Bool,
                              factors: JacobianFactors<T>?, timer: PhaseTimer?, needJacobian: Bool) -> TrainingPass<T> {
        let B = x.rows, d = self.d, k = self.k
        let scale = T(2) / T(B * d)
        let codesIn = saeIn.encode(x, timer: timer)
        var gIn = SAETensors<T>(d: d, m: saeIn.m)
        let xHat = timed(timer, .sparseDecoder) { saeIn.reconstruct(x, codes: codesIn, gradientScale: scale, into: &gIn) }
        var fwd = PairForward(point: .trueInput, x: x, codesIn: codesIn, xHat: xHat,
                              y: nil, phiPrime: nil, codesOut: nil, yHat: nil, jacobian: nil)
        guard let saeOut, let mlp else {
            let sums = fwd.sums
            return TrainingPass(sums: sums, components: sums.components(lambda: 0),
                                gradients: PairGradients(saeIn: gIn, saeOut: nil), forward: fwd, jacobianStats: nil)
        }
        let (fx, phi) = timed(timer, .mlp) { mlp.forward(x) }
        let y = yTarget ?? fx
        let codesOut = saeOut.encode(y, timer: timer)
        var gOut = SAETensors<T>(d: d, m: saeOut.m)
        let yHat = timed(timer, .sparseDecoder) { saeOut.reconstruct(y, codes: codesOut, gradientScale: scale, into: &gOut) }
        fwd.y = y; fwd.phiPrime = phi; fwd.codesOut = codesOut; fwd.yHat = yHat
        guard lambda > 0 || keepJacobian || needJacobian else {
            let sums = fwd.sums
            return TrainingPass(sums: sums, components: sums.components(lambda: lambda),
                                gradients: PairGradients(saeIn: gIn, saeOut: gOut), forward: fwd, jacobianStats: nil)
        }

        // Jacobian term: coef = λ / (B·k²) per |J| entry.
        let factors = factors ?? timed(timer, .precompute) { JacobianFactors(saeIn: saeIn, mlp: mlp, saeOut: saeOut) }
        let h = mlp.dMlp
        var (dwd1, dw2eT) = timed(timer, .jacobianBackward) {
            (lambda > 0 ? Matrix<T>(rows: saeIn.m, cols: h) : Matrix<T>(rows: 0, cols: h),
             lambda > 0 ? Matrix<T>(rows: saeOut.m, cols: h) : Matrix<T>(rows: 0, cols: h))
        }
        var jStore = keepJacobian ? [T](repeating: 0, count: B * k * k) : []
        let coef = T(lambda / Double(B * k * k))
        let stats = dwd1.data.withUnsafeMutableBufferPointer { p1 in
            dw2eT.data.withUnsafeMutableBufferPointer { p2 in
                jStore.withUnsafeMutableBufferPointer { pj in
                    jacobianPass(factors: factors, k1: codesIn.indices, k2: codesOut.indices, phiPrime: phi, k: k,
                                 chunk: chunk, store: keepJacobian ? pj.baseAddress! : nil,
                                 backward: lambda > 0 ? JacobianBackward(coef: coef, dwd1: p1.baseAddress!, dw2eT: p2.baseAddress!) : nil,
                                 timer: timer)
                }
            }
        }
        if keepJacobian { fwd.jacobian = jStore }
        if lambda > 0 {
            // dW_dec_x += dwd1 · W_inᵀ ; dW_enc_y += W_outᵀ · dw2eTᵀ (no transposed copies)
            timed(timer, .weightGradients) {
                accumulateProduct(&gIn.wDec, dwd1, mlp.wIn, transA: false, transB: true)
                accumulateProduct(&gOut.wEnc, mlp.wOut, dw2eT, transA: true, transB: true)
            }
        }
        var sums = fwd.sums
        sums.jacAbs = stats.absSum
        return TrainingPass(sums: sums, components: sums.components(lambda: lambda),
                            gradients: PairGradients(saeIn: gIn, saeOut: gOut), forward: fwd, jacobianStats: stats)
    }
}

/// scale · (a − b): the gradient of scale/2 · Σ(a − b)² with respect to a.
func residualGradient<T: JSAEScalar>(_ a: Matrix<T>, _ b: Matrix<T>, _ scale: T) -> Matrix<T> {
    var g = a
    g.data.withUnsafeMutableBufferPointer { pg in
        b.data.withUnsafeBufferPointer { pb in
            for i in 0..<pg.count { pg[i] = scale * (pg[i] - pb[i]) }
        }
    }
    return g
}

/// c += op(a) · op(b) through BLAS (beta = 1).
func accumulateProduct<T: JSAEScalar>(_ c: inout Matrix<T>, _ a: Matrix<T>, _ b: Matrix<T>, transA: Bool, transB: Bool) {
    let m = transA ? a.cols : a.rows, kk = transA ? a.rows : a.cols
    let n = transB ? b.rows : b.cols
    precondition(c.rows == m && c.cols == n && (transB ? b.cols : b.rows) == kk)
    let ldc = c.cols
    a.data.withUnsafeBufferPointer { pa in
        b.data.withUnsafeBufferPointer { pb in
            c.data.withUnsafeMutableBufferPointer { pc in
                T.gemm(transA: transA, transB: transB, m: m, n: n, k: kk, alpha: 1,
                       a: pa.baseAddress!, lda: a.cols, b: pb.baseAddress!, ldb: b.cols,
                       beta: 1, c: pc.baseAddress!, ldc: ldc)
            }
        }
    }
}
