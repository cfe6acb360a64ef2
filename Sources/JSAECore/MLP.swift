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

    /// (`value(z)`, `derivative(z)`) with one erf or tanh call between them
    /// instead of two: the same expressions on the same call's result, so
    /// the same bits. The compiler does not merge the two libm calls itself
    /// (two `erff` per entry in the release build's MLP loop).
    @inlinable @inline(__always)
    public func valueAndDerivative<T: JSAEScalar>(_ z: T) -> (value: T, derivative: T) {
        switch self {
        case .gelu:
            let e = T.erf(z * T(0.70710678118654752440))
            let cdf = 0.5 * (1 + e)
            let pdf = T(0.39894228040143267794) * T.exp(-0.5 * z * z)
            return (0.5 * z * (1 + e), cdf + z * pdf)
        case .geluTanh:
            let c = T(0.79788456080286535588)
            let u = c * (z + T(0.044715) * z * z * z)
            let t = T.tanh(u)
            return (0.5 * z * (1 + t), 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * c * (1 + 3 * T(0.044715) * z * z))
        }
    }
}

/// The frozen transformer MLP: y = act(x @ W_in + b_in) @ W_out + b_out.
/// - W_in: [d, d_mlp], b_in: [d_mlp], W_out: [d_mlp, d], b_out: [d]
public struct MLP<T: JSAEScalar>: Sendable, Equatable {
    public let d: Int
    public let dMlp: Int
    public var activation: Activation
    /// W_in | b_in | W_out | b_out in one allocation, read through pointers in the hot path.
    private var storage: FlatStorage<T>

    public init(wIn: Matrix<T>, bIn: [T], wOut: Matrix<T>, bOut: [T], activation: Activation) throws {
        let d = wIn.rows, dMlp = wIn.cols
        guard bIn.count == dMlp else { throw JSAEError("b_in has \(bIn.count) entries, expected d_mlp = \(dMlp) (from W_in [\(d), \(dMlp)])") }
        guard wOut.rows == dMlp && wOut.cols == d else { throw JSAEError("W_out has shape [\(wOut.rows), \(wOut.cols)], expected [\(dMlp), \(d)] (from W_in [\(d), \(dMlp)])") }
        guard bOut.count == d else { throw JSAEError("b_out has \(bOut.count) entries, expected d = \(d)") }
        self.d = d; self.dMlp = dMlp; self.activation = activation
        storage = FlatStorage(count: 2 * d * dMlp + dMlp + d)
        for (values, offset) in [(wIn.data, 0), (bIn, d * dMlp), (wOut.data, d * dMlp + dMlp), (bOut, 2 * d * dMlp + dMlp)] {
            (storage.p + offset).update(from: values, count: values.count)
        }
    }

    /// The four weights, valid while this MLP is alive (it is never mutated in place).
    var pointers: MLPPointers<T> {
        MLPPointers(wIn: storage.p, bIn: storage.p + d * dMlp, wOut: storage.p + d * dMlp + dMlp, bOut: storage.p + 2 * d * dMlp + dMlp)
    }

    private func copy(_ p: UnsafePointer<T>, _ n: Int) -> [T] { Array(UnsafeBufferPointer(start: p, count: n)) }
    public var wIn: Matrix<T> { Matrix(rows: d, cols: dMlp, data: copy(pointers.wIn, d * dMlp)) }
    public var bIn: [T] { copy(pointers.bIn, dMlp) }
    public var wOut: Matrix<T> { Matrix(rows: dMlp, cols: d, data: copy(pointers.wOut, d * dMlp)) }
    public var bOut: [T] { copy(pointers.bOut, d) }

    public static func == (a: MLP, b: MLP) -> Bool {
        a.d == b.d && a.dMlp == b.dMlp && a.activation == b.activation
            && (a.storage === b.storage || (0..<a.storage.count).allSatisfy { a.storage.p[$0] == b.storage.p[$0] })
    }

    public func converted<U: JSAEScalar>(to: U.Type = U.self) -> MLP<U> {
        try! MLP<U>(wIn: wIn.converted(), bIn: bIn.map { U($0) }, wOut: wOut.converted(),
                    bOut: bOut.map { U($0) }, activation: activation)
    }

    /// y = f(x) and φ' = act'(x @ W_in + b_in) (allocates; training uses `mlpForward`).
    /// Prespecialised (see Parallel.swift): the report computes the held-out
    /// y with it, and unspecialised its GELU loop took ~30 s per 65,536 rows.
    /// Not called inside JSAECore.
    /// - x: [B, d]; returns y: [B, d], phiPrime: [B, d_mlp]
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public func forward(_ x: Matrix<T>, threads: Int = Parallel.onlineCores) -> (y: Matrix<T>, phiPrime: Matrix<T>) {
        precondition(x.cols == d, "MLP: x has \(x.cols) columns, MLP has d = \(d)")
        let B = x.rows
        let y = Buffer<T>(B * d), phi = Buffer<T>(B * dMlp), act = Buffer<T>(mlpScratchCount(tokens: B, dMlp: dMlp))
        mlpForward(y: y.p, act: act.p, phi: phi.p, x: x.data, pointers, activation: activation,
                   tokens: B, d: d, dMlp: dMlp, threads: threads)
        return (Matrix(rows: B, cols: d, data: y.array(B * d)), Matrix(rows: B, cols: dMlp, data: phi.array(B * dMlp)))
    }
}

struct MLPPointers<T> {
    let wIn: UnsafePointer<T>, bIn: UnsafePointer<T>, wOut: UnsafePointer<T>, bOut: UnsafePointer<T>
}

/// y = act(x @ W_in + b_in) @ W_out + b_out, keeping φ' = act'(x @ W_in + b_in)
/// (the Jacobian's middle factor) when `phi` is given, `mlpChunkTokens`
/// tokens at a time so that the hidden activations are held for one chunk
/// only. Without `phi` only the activation's value is computed (no exp per
/// entry); y is the same bits either way.
/// - y: [B, d]; act: `mlpScratchCount(tokens:dMlp:)` scratch; phi: [B, d_mlp] or nil; x: [B, d]
func mlpForward<T: JSAEScalar>(y: UnsafeMutablePointer<T>, act: UnsafeMutablePointer<T>, phi: UnsafeMutablePointer<T>?,
                               x: UnsafePointer<T>, _ w: MLPPointers<T>, activation: Activation,
                               tokens B: Int, d: Int, dMlp: Int, threads: Int) {
    for start in stride(from: 0, to: B, by: mlpChunkTokens) {
        let n = min(mlpChunkTokens, B - start)
        parallelGemm(transA: false, transB: false, m: n, n: dMlp, k: d, alpha: 1, a: x + start * d, lda: d, b: w.wIn, ldb: dMlp,
                     beta: 0, c: act, ldc: dMlp, threads: threads)
        addRowBias(act, w.bIn, rows: n, cols: dMlp)
        let z = SharedPointer(act)
        // In Float the exact GELU runs as one vectorised C loop per range
        // (`JSAEScalar.geluInPlace`): libm's erff and expf are a call per
        // entry, which no loop around them vectorises.
        if let phi {
            let pp = SharedPointer(phi + start * dMlp)
            Parallel.forRanges(n * dMlp, threads: threads) { _, range in
                if activation == .gelu && T.geluInPlace(z.p + range.lowerBound, derivative: pp.p + range.lowerBound,
                                                        count: range.count) { return }
                for i in range {
                    (z.p[i], pp.p[i]) = activation.valueAndDerivative(z.p[i])
                }
            }
        } else {
            Parallel.forRanges(n * dMlp, threads: threads) { _, range in
                if activation == .gelu && T.geluInPlace(z.p + range.lowerBound, derivative: nil, count: range.count) { return }
                for i in range { z.p[i] = activation.value(z.p[i]) }
            }
        }
        parallelGemm(transA: false, transB: false, m: n, n: d, k: dMlp, alpha: 1, a: act, lda: dMlp, b: w.wOut, ldb: d,
                     beta: 0, c: y + start * d, ldc: d, threads: threads)
        addRowBias(y + start * d, w.bOut, rows: n, cols: d)
    }
}

/// Tokens per chunk of `mlpForward`: [2048, d_mlp] in T is 16 MiB at
/// d_mlp = 2048 in Float, the size of the encoder's part and of the
/// Jacobian's chunk, so none of them sets the workspace's shared scratch
/// alone. The chunk's row tiles are multiples of 64 rows, as the whole
/// batch's would be.
package let mlpChunkTokens = 2048

/// Scratch entries `mlpForward` needs for a batch of B tokens.
func mlpScratchCount(tokens B: Int, dMlp: Int) -> Int { min(B, mlpChunkTokens) * dMlp }
