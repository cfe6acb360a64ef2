/// The MLP nonlinearity. `gelu` is the exact erf form (Pythia, GPT-NeoX,
/// BERT-style models); `geluTanh` is the tanh approximation. Stored in files
/// under the names "gelu" and "gelu_tanh".
public enum Activation: String, Sendable, CaseIterable {
    case gelu = "gelu"
    case geluTanh = "gelu_tanh"

    /// gelu(z) = z·Φ(z) = 0.5·z·(1 + erf(z/√2));
    /// gelu_tanh(z) = 0.5·z·(1 + tanh(√(2/π)·(z + 0.044715·z³))).
    @inlinable
    public func value<T: JSAEScalar>(_ z: T) -> T {
        switch self {
        case .gelu:
            return 0.5 * z * (1 + T.erf(z * T(0.70710678118654752440)))
        case .geluTanh:
            let u = T(0.79788456080286535588) * (z + T(0.044715) * z * z * z)
            return 0.5 * z * (1 + T.tanh(u))
        }
    }

    /// The exact derivative of `value`:
    /// gelu'(z) = Φ(z) + z·φ(z); gelu_tanh'(z) = 0.5(1+t) + 0.5·z·(1−t²)·√(2/π)(1 + 3·0.044715·z²).
    @inlinable
    public func derivative<T: JSAEScalar>(_ z: T) -> T {
        switch self {
        case .gelu:
            let cdf = 0.5 * (1 + T.erf(z * T(0.70710678118654752440)))
            let pdf = T(0.39894228040143267794) * T.exp(-0.5 * z * z)
            return cdf + z * pdf
        case .geluTanh:
            let c = T(0.79788456080286535588)
            let u = c * (z + T(0.044715) * z * z * z)
            let t = T.tanh(u)
            return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * c * (1 + 3 * T(0.044715) * z * z)
        }
    }
}

/// The frozen transformer MLP: y = act(x @ W_in + b_in) @ W_out + b_out.
/// - W_in: [d, d_mlp], b_in: [d_mlp], W_out: [d_mlp, d], b_out: [d]
public struct MLP<T: JSAEScalar>: Sendable, Equatable {
    public var wIn: Matrix<T>
    public var bIn: [T]
    public var wOut: Matrix<T>
    public var bOut: [T]
    public var activation: Activation

    public var d: Int { wIn.rows }
    public var dMlp: Int { wIn.cols }

    public init(wIn: Matrix<T>, bIn: [T], wOut: Matrix<T>, bOut: [T], activation: Activation) throws {
        let d = wIn.rows, h = wIn.cols
        guard bIn.count == h else { throw JSAEError("b_in has \(bIn.count) entries, expected d_mlp = \(h) (from W_in [\(d), \(h)])") }
        guard wOut.rows == h && wOut.cols == d else { throw JSAEError("W_out has shape [\(wOut.rows), \(wOut.cols)], expected [\(h), \(d)] (from W_in [\(d), \(h)])") }
        guard bOut.count == d else { throw JSAEError("b_out has \(bOut.count) entries, expected d = \(d)") }
        self.wIn = wIn; self.bIn = bIn; self.wOut = wOut; self.bOut = bOut; self.activation = activation
    }

    public func converted<U: JSAEScalar>(to: U.Type = U.self) -> MLP<U> {
        try! MLP<U>(wIn: wIn.converted(), bIn: bIn.map { U($0) }, wOut: wOut.converted(),
                    bOut: bOut.map { U($0) }, activation: activation)
    }

    /// y = f(x) and φ' = act'(x @ W_in + b_in) (allocates; training uses `mlpForward`).
    /// - x: [B, d]; returns y: [B, d], phiPrime: [B, d_mlp]
    public func forward(_ x: Matrix<T>, threads: Int = Parallel.onlineCores) -> (y: Matrix<T>, phiPrime: Matrix<T>) {
        precondition(x.cols == d, "MLP: x has \(x.cols) columns, MLP has d = \(d)")
        var y = Matrix<T>(rows: x.rows, cols: d)
        var phi = Matrix<T>(rows: x.rows, cols: dMlp)
        var act = Matrix<T>(rows: x.rows, cols: dMlp)
        x.data.withUnsafeBufferPointer { px in
            withPointers { w in
                y.data.withUnsafeMutableBufferPointer { py in
                    phi.data.withUnsafeMutableBufferPointer { pp in
                        act.data.withUnsafeMutableBufferPointer { pa in
                            mlpForward(y: py.baseAddress!, act: pa.baseAddress!, phi: pp.baseAddress!, x: px.baseAddress!,
                                       w, activation: activation, tokens: x.rows, d: d, dMlp: dMlp, threads: threads)
                        }
                    }
                }
            }
        }
        return (y, phi)
    }

    /// The four weight pointers, valid inside `body`.
    func withPointers<R>(_ body: (MLPPointers<T>) throws -> R) rethrows -> R {
        try wIn.data.withUnsafeBufferPointer { a in
            try bIn.withUnsafeBufferPointer { b in
                try wOut.data.withUnsafeBufferPointer { c in
                    try bOut.withUnsafeBufferPointer { e in
                        try body(MLPPointers(wIn: a.baseAddress!, bIn: b.baseAddress!, wOut: c.baseAddress!, bOut: e.baseAddress!))
                    }
                }
            }
        }
    }
}

struct MLPPointers<T> {
    let wIn: UnsafePointer<T>, bIn: UnsafePointer<T>, wOut: UnsafePointer<T>, bOut: UnsafePointer<T>
}

/// y = act(x @ W_in + b_in) @ W_out + b_out, keeping the hidden activations
/// and φ' = act'(x @ W_in + b_in) (the Jacobian's middle factor).
/// - y: [B, d]; act, phi: [B, d_mlp]; x: [B, d]
func mlpForward<T: JSAEScalar>(y: UnsafeMutablePointer<T>, act: UnsafeMutablePointer<T>, phi: UnsafeMutablePointer<T>,
                               x: UnsafePointer<T>, _ w: MLPPointers<T>, activation: Activation,
                               tokens B: Int, d: Int, dMlp h: Int, threads: Int) {
    T.gemm(transA: false, transB: false, m: B, n: h, k: d, alpha: 1, a: x, lda: d, b: w.wIn, ldb: h, beta: 0, c: act, ldc: h)
    addRowBias(act, w.bIn, rows: B, cols: h)
    let z = SharedPointer(act), pp = SharedPointer(phi)
    Parallel.forRanges(B * h, threads: threads) { _, range in
        for i in range {
            let v = z.p[i]
            pp.p[i] = activation.derivative(v)
            z.p[i] = activation.value(v)
        }
    }
    T.gemm(transA: false, transB: false, m: B, n: d, k: h, alpha: 1, a: act, lda: h, b: w.wOut, ldb: d, beta: 0, c: y, ldc: d)
    addRowBias(y, w.bOut, rows: B, cols: d)
}
