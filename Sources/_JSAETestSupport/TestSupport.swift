import Foundation
import JSAECore
import JSAEIO

extension SeededGenerator {
    public mutating func normals(_ n: Int, scale: Double = 1) -> [Double] {
        (0..<n).map { _ in scale * normal() }
    }
    public mutating func matrix(_ rows: Int, _ cols: Int, scale: Double = 1) -> Matrix<Double> {
        Matrix(rows: rows, cols: cols, data: normals(rows * cols, scale: scale))
    }
}

/// Shapes of a small random JSAE pair.
public struct PairShape: Sendable, CustomStringConvertible {
    public var d, dMlp, mIn, mOut, k, tokens: Int
    public var activation: Activation
    public init(d: Int, dMlp: Int, mIn: Int, mOut: Int, k: Int, tokens: Int, activation: Activation = .gelu) {
        self.d = d; self.dMlp = dMlp; self.mIn = mIn; self.mOut = mOut; self.k = k; self.tokens = tokens
        self.activation = activation
    }
    public var description: String { "d=\(d) d_mlp=\(dMlp) m_in=\(mIn) m_out=\(mOut) k=\(k) T=\(tokens) \(activation.rawValue)" }

    /// The shapes the checks sweep: d ≠ d_mlp ≠ m, k = 1, k = m, both GELUs.
    public static let sweep: [PairShape] = [
        PairShape(d: 6, dMlp: 10, mIn: 16, mOut: 12, k: 3, tokens: 9),
        PairShape(d: 5, dMlp: 7, mIn: 9, mOut: 11, k: 1, tokens: 6, activation: .geluTanh),
        PairShape(d: 4, dMlp: 9, mIn: 6, mOut: 6, k: 6, tokens: 5),
        PairShape(d: 8, dMlp: 3, mIn: 5, mOut: 7, k: 5, tokens: 4, activation: .geluTanh),
        PairShape(d: 12, dMlp: 20, mIn: 40, mOut: 33, k: 7, tokens: 11),
    ]
}

/// A random pair with scales that keep pre-activations O(1) and the MLP in
/// its curved region.
public func randomModel(_ s: PairShape, seed: UInt64) -> (model: JSAEModel<Double>, x: Matrix<Double>) {
    var g = SeededGenerator(seed: seed)
    func sae(_ m: Int) -> TopKSAE<Double> {
        let sc = 1 / Double(s.d).squareRoot()
        return try! TopKSAE(wEnc: g.matrix(s.d, m, scale: sc), bEnc: g.normals(m, scale: 0.1),
                            wDec: g.matrix(m, s.d, scale: sc), bDec: g.normals(s.d, scale: 0.1), k: s.k)
    }
    let saeIn = sae(s.mIn), saeOut = sae(s.mOut)
    let mlp = try! MLP(wIn: g.matrix(s.d, s.dMlp, scale: 1 / Double(s.d).squareRoot()), bIn: g.normals(s.dMlp, scale: 0.1),
                       wOut: g.matrix(s.dMlp, s.d, scale: 1 / Double(s.dMlp).squareRoot()), bOut: g.normals(s.d, scale: 0.1),
                       activation: s.activation)
    let model = try! JSAEModel(saeIn: saeIn, saeOut: saeOut, mlp: mlp)
    return (model, g.matrix(s.tokens, s.d))
}

/// |a − b| ≤ atol + rtol·|b|, elementwise; returns the worst violation
/// ratio (≤ 1 passes) and where it happened, for a readable failure.
public func closeness<A: BinaryFloatingPoint, B: BinaryFloatingPoint>(
    _ a: [A], _ b: [B], rtol: Double, atol: Double) -> (ratio: Double, index: Int, a: Double, b: Double) {
    precondition(a.count == b.count, "closeness: \(a.count) vs \(b.count) values")
    var worst = (ratio: 0.0, index: -1, a: 0.0, b: 0.0)
    for i in 0..<a.count {
        let x = Double(a[i]), y = Double(b[i])
        let r = abs(x - y) / (atol + rtol * abs(y))
        if !(r <= worst.ratio) { worst = (r, i, x, y) }  // also catches NaN
    }
    return worst
}

public func allClose<A: BinaryFloatingPoint, B: BinaryFloatingPoint>(
    _ a: [A], _ b: [B], rtol: Double, atol: Double) -> Bool {
    a.count == b.count && closeness(a, b, rtol: rtol, atol: atol).ratio <= 1
}

/// A fresh empty folder under the system temp dir, removed when the test
/// process exits (a `swift test` run made ~350 MB of them, and they were
/// never removed). JSAE_KEEP_TEST_DIRS=1 keeps them, to look at a failure.
public func temporaryDirectory(_ tag: String = "jsae-test") -> String {
    let path = NSTemporaryDirectory() + "\(tag)-\(UUID().uuidString)"
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    TemporaryDirectories.shared.add(path)
    return path
}

private final class TemporaryDirectories: @unchecked Sendable {
    // @unchecked: `paths` is guarded by `lock`.
    static let shared = TemporaryDirectories()
    private let lock = NSLock()
    private var paths: [String] = []
    private init() {
        if ProcessInfo.processInfo.environment["JSAE_KEEP_TEST_DIRS"] != "1" {
            atexit { TemporaryDirectories.shared.removeAll() }
        }
    }
    func add(_ path: String) { lock.withLock { paths.append(path) } }
    func removeAll() { for p in lock.withLock({ paths }) { try? FileManager.default.removeItem(atPath: p) } }
}

/// A built executable of this package, found beside the test bundle (the
/// test targets depend on the executables, so `swift test` builds them).
public func builtExecutable(_ name: String) -> String {
    let candidates = [Bundle.main.bundleURL.path, URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path]
    for dir in candidates {
        var url = URL(fileURLWithPath: dir)
        for _ in 0..<3 {
            let p = url.appendingPathComponent(name).path
            if FileManager.default.isExecutableFile(atPath: p) { return p }
            url.deleteLastPathComponent()
        }
    }
    return packageRoot + "/.build/debug/" + name
}

/// The package root, found from this source file's location.
public let packageRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

// MARK: Naive reference maths (plain loops, no BLAS), for cross-checks

/// y = act(x @ W_in + b_in) @ W_out + b_out for one token, in plain loops.
public func naiveMLP(_ x: [Double], _ mlp: MLP<Double>) -> (y: [Double], phiPrime: [Double]) {
    let d = mlp.d, h = mlp.dMlp
    var a = [Double](repeating: 0, count: h), phi = a
    for r in 0..<h {
        var z = mlp.bIn[r]
        for i in 0..<d { z += x[i] * mlp.wIn[i, r] }
        a[r] = mlp.activation.value(z)
        phi[r] = mlp.activation.derivative(z)
    }
    var y = mlp.bOut
    for j in 0..<d { for r in 0..<h { y[j] += a[r] * mlp.wOut[r, j] } }
    return (y, phi)
}

/// Pre-activations h = x @ W_enc + b_enc for one token, in plain loops.
public func naivePreacts(_ x: [Double], _ sae: TopKSAE<Double>) -> [Double] {
    var h = sae.bEnc
    for j in 0..<sae.m { for i in 0..<sae.d { h[j] += x[i] * sae.wEnc[i, j] } }
    return h
}

/// The reference TopK rule by sorting: descending value, ties by lower index.
public func naiveTopK(_ h: [Double], k: Int) -> [Int] {
    Array(h.indices.sorted { h[$0] != h[$1] ? h[$0] > h[$1] : $0 < $1 }.prefix(k))
}

/// Writes an `activations` file: /x (float32 on disk), optionally the MLP and /y.
public func writeActivations(_ x: Matrix<Double>, to path: String, mlp: MLP<Double>? = nil, y: Matrix<Double>? = nil) throws {
    let f = try HDF5File.create(path)
    try FileFormat.writeHeader(f, kind: .activations)
    try f.setAttribute("tokens", .int(x.rows))
    try f.write("/x", x, stored: .float32)
    if let y { try f.write("/y", y, stored: .float32) }
    if let mlp {
        try f.setAttribute("activation", .string(mlp.activation.rawValue))
        try f.write("/mlp/W_in", mlp.wIn)
        try f.write("/mlp/b_in", shape: [mlp.dMlp], mlp.bIn)
        try f.write("/mlp/W_out", mlp.wOut)
        try f.write("/mlp/b_out", shape: [mlp.d], mlp.bOut)
    }
    f.close()
}

// MARK: Dense products for reference paths in tests

/// C = A · B (or with transposes), through BLAS.
/// - a: [m, k] after op, b: [k, n] after op; returns [m, n]
public func matmul<T: JSAEScalar>(_ a: Matrix<T>, _ b: Matrix<T>,
                                  transA: Bool = false, transB: Bool = false) -> Matrix<T> {
    let m = transA ? a.cols : a.rows
    let k = transA ? a.rows : a.cols
    let kb = transB ? b.cols : b.rows
    let n = transB ? b.rows : b.cols
    precondition(k == kb, "matmul: inner dimensions \(k) and \(kb) differ")
    if k == 0 { return Matrix<T>(rows: m, cols: n) }
    var c = Matrix<T>.uninitialised(rows: m, cols: n)  // beta = 0 writes every entry
    c.data.withUnsafeMutableBufferPointer { pc in
        T.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 1, a: a.data, lda: a.cols, b: b.data, ldb: b.cols,
               beta: 0, c: pc.baseAddress!, ldc: n)
    }
    return c
}

/// Adds the vector `bias` ([cols]) to every row of `m`.
public func addRowBias<T: JSAEScalar>(_ m: inout Matrix<T>, _ bias: [T]) {
    precondition(bias.count == m.cols)
    let (rows, cols) = (m.rows, m.cols)
    for r in 0..<rows { for c in 0..<cols { m.data[r * cols + c] += bias[c] } }
}
