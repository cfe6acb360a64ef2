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

    /// y = f(x) and φ' = act'(x @ W_in + b_in).
    /// - x: [B, d]; returns y: [B, d], phiPrime: [B, d_mlp]
    public func forward(_ x: Matrix<T>) -> (y: Matrix<T>, phiPrime: Matrix<T>) {
        precondition(x.cols == d, "MLP: x has \(x.cols) columns, MLP has d = \(d)")
        var z = matmul(x, wIn)
        addRowBias(&z, bIn)
        var phi = Matrix<T>.uninitialised(rows: z.rows, cols: z.cols)
        let act = activation
        z.data.withUnsafeMutableBufferPointer { pz in
            phi.data.withUnsafeMutableBufferPointer { pp in
                Parallel.forRanges(pz.count) { _, range in
                    for i in range {
                        let v = pz[i]
                        pp[i] = act.derivative(v)
                        pz[i] = act.value(v)
                    }
                }
            }
        }
        var y = matmul(z, wOut)
        addRowBias(&y, bOut)
        return (y, phi)
    }
}
