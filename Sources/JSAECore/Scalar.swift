import CBLAS
import CJSAEKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The floating-point types the harness computes in: `Float` (what users train
/// in) and `Double` (what the checks run in). Each conformance routes to the
/// matching BLAS routine and libm function, so generic code keeps the big
/// products in sgemm/dgemm. BitwiseCopyable: the workspace zeroes its buffers
/// of them with a memset.
public protocol JSAEScalar: BinaryFloatingPoint, Sendable, BitwiseCopyable where Self.RawSignificand: FixedWidthInteger {
    /// C = alpha · op(A) · op(B) + beta · C, all row-major.
    /// - A: [m, k] after op, B: [k, n] after op, C: [m, n]
    static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                     alpha: Self, a: UnsafePointer<Self>, lda: Int,
                     b: UnsafePointer<Self>, ldb: Int,
                     beta: Self, c: UnsafeMutablePointer<Self>, ldc: Int)
    /// Σ a[i]·b[i] over n contiguous entries (BLAS sdot/ddot: vectorised, a
    /// fixed summation order for a given build).
    static func dot(_ n: Int, _ a: UnsafePointer<Self>, _ b: UnsafePointer<Self>) -> Self
    static func erf(_ x: Self) -> Self
    static func exp(_ x: Self) -> Self
    static func tanh(_ x: Self) -> Self
    static func sqrt(_ x: Self) -> Self
    /// A short name for messages and file attributes ("float", "double").
    static var precisionName: String { get }
    /// Whether any of the 8 values at `p` is strictly greater than `t` (NaN
    /// never is): one vector comparison. Written per type because SIMD
    /// operators reached through a generic parameter compile to an
    /// element-by-element loop even after specialisation.
    static func anyOfEight(_ p: UnsafePointer<Self>, greaterThan t: Self) -> Bool
    /// The least of the maxima of `blocks` equal runs of 8·⌊count / (8 ·
    /// blocks)⌋ entries from `p` (`topKRow`'s floor), or nil where there is
    /// none to take: a NaN among the `count` entries, or no floor for the
    /// type. Written per type for the reason `anyOfEight` is.
    static func minOfBlockMaxima(_ p: UnsafePointer<Self>, count: Int, blocks: Int) -> Self?
    /// Offset of the first NaN or ±Inf in `p`, if any. Written per type: the
    /// generic `firstIndex(where:)` that Matrix used ran unspecialised when
    /// reached from another module's generic reader, through a protocol
    /// witness per entry, and took about a tenth of a reproduction's wall time.
    static func firstNonFinite(in p: UnsafeBufferPointer<Self>) -> Int?
    /// One Adam update of `count` entries (`adamStep`), vectorised: written
    /// per type for the reason `anyOfEight` is.
    static func adamUpdate(_ count: Int, params: UnsafeMutablePointer<Self>, grads: UnsafePointer<Self>,
                           expAvg: UnsafeMutablePointer<Self>, expAvgSq: UnsafeMutablePointer<Self>, _ c: AdamCoefficients<Self>)
    /// Whether `jacobianToken` runs for this type: Float has the C kernel
    /// (CJSAEKernels); Double runs the Jacobian's products on BLAS, as it
    /// runs the golden and reference checks, whose speed does not matter.
    static var hasJacobianKernel: Bool { get }
    /// One token's J [k, k], and with dL and dR [k, h] its backward
    /// (`jsae_jacobian_token_f32`, which says what each argument is), on the
    /// widest kernel path this CPU runs. Only where `hasJacobianKernel`.
    static func jacobianToken(J: UnsafeMutablePointer<Self>, dL: UnsafeMutablePointer<Self>?, dR: UnsafeMutablePointer<Self>?,
                              workspace: UnsafeMutablePointer<Self>, wd1: UnsafePointer<Self>, w2eT: UnsafePointer<Self>,
                              phi: UnsafePointer<Self>, k1: UnsafePointer<Int>, k2: UnsafePointer<Int>, coef: Self,
                              next: (k1: UnsafePointer<Int>, k2: UnsafePointer<Int>, phi: UnsafePointer<Self>)?,
                              k: Int, h: Int, forwardEnd: UnsafeMutablePointer<Double>?)
    /// `Activation.gelu`'s value in place over `count` entries of `z` and,
    /// with `derivative`, its derivative there, through the vectorised C
    /// loop (`jsae_gelu_f32`: the same expressions, erf and exp within 1 ulp
    /// by polynomials, where libm is one call per entry); false, having done
    /// nothing, where the type has none (Double, which runs the checks).
    static func geluInPlace(_ z: UnsafeMutablePointer<Self>, derivative: UnsafeMutablePointer<Self>?, count: Int) -> Bool
}

/// Int is 64 bits on every platform the package builds for, as the C
/// kernel's int64_t indices.
@inline(__always)
func int64Pointer(_ p: UnsafePointer<Int>) -> UnsafePointer<Int64> {
    UnsafeRawPointer(p).assumingMemoryBound(to: Int64.self)
}

/// The scan behind `firstNonFinite(in:)`, instantiated for each concrete
/// type: `isFinite` is then a few bit operations per entry.
@inline(__always)
func firstNonFiniteScan<T: BinaryFloatingPoint>(_ p: UnsafeBufferPointer<T>) -> Int? {
    for i in p.indices where !p[i].isFinite { return i }
    return nil
}

@inline(__always)
private func cblasTrans(_ t: Bool) -> CBLAS_TRANSPOSE { t ? CblasTrans : CblasNoTrans }

extension Float: JSAEScalar {
    @inlinable
    public static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                            alpha: Float, a: UnsafePointer<Float>, lda: Int,
                            b: UnsafePointer<Float>, ldb: Int,
                            beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m == 0 || n == 0 { return }
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
    @inlinable
    public static func dot(_ n: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>) -> Float {
        cblas_sdot(Int32(n), a, 1, b, 1)
    }
    public static func erf(_ x: Float) -> Float { erff(x) }
    public static func exp(_ x: Float) -> Float { expf(x) }
    public static func tanh(_ x: Float) -> Float { tanhf(x) }
    public static func sqrt(_ x: Float) -> Float { sqrtf(x) }
    public static var precisionName: String { "float" }
    @inlinable @inline(__always)
    public static func anyOfEight(_ p: UnsafePointer<Float>, greaterThan t: Float) -> Bool {
        any(UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) .> SIMD8<Float>(repeating: t))
    }
    /// A NaN anywhere, in the blocks or in the entries after them, gives
    /// nil; so does an infinity in the blocks (v - v is NaN for both, one
    /// subtraction per vector where a NaN test per entry would need a mask
    /// reduction), which leaves such rows to the plain scan. The maxima are
    /// kept by compare-and-select: `pointwiseMax`, which orders NaN,
    /// compiled to a scan at a third of the speed, and the same code through
    /// a generic SIMD type to one at a twentieth.
    @inlinable
    public static func minOfBlockMaxima(_ p: UnsafePointer<Float>, count: Int, blocks: Int) -> Float? {
        let w = 8, length = count / (w * blocks) * w
        precondition(blocks >= 1 && length >= w)
        var least = Float.infinity
        var poison = SIMD8<Float>(repeating: 0)
        for b in 0..<blocks {
            var top = SIMD8<Float>(repeating: -.infinity)
            let q = p + b * length
            for o in stride(from: 0, to: length, by: w) {
                let v = UnsafeRawPointer(q + o).loadUnaligned(as: SIMD8<Float>.self)
                top.replace(with: v, where: v .> top)
                poison += v - v
            }
            least = Swift.min(least, top.max())
        }
        if poison.sum().isNaN { return nil }
        for i in (blocks * length)..<count where p[i].isNaN { return nil }
        return least
    }
    public static func firstNonFinite(in p: UnsafeBufferPointer<Float>) -> Int? { firstNonFiniteScan(p) }
    public static func adamUpdate(_ count: Int, params: UnsafeMutablePointer<Float>, grads: UnsafePointer<Float>,
                                  expAvg: UnsafeMutablePointer<Float>, expAvgSq: UnsafeMutablePointer<Float>, _ c: AdamCoefficients<Float>) {
        adamUpdateVectorised(SIMD8<Float>.self, count, params: params, grads: grads, expAvg: expAvg, expAvgSq: expAvgSq, c)
    }
    public static var hasJacobianKernel: Bool { true }
    public static func jacobianToken(J: UnsafeMutablePointer<Float>, dL: UnsafeMutablePointer<Float>?, dR: UnsafeMutablePointer<Float>?,
                                     workspace: UnsafeMutablePointer<Float>, wd1: UnsafePointer<Float>, w2eT: UnsafePointer<Float>,
                                     phi: UnsafePointer<Float>, k1: UnsafePointer<Int>, k2: UnsafePointer<Int>, coef: Float,
                                     next: (k1: UnsafePointer<Int>, k2: UnsafePointer<Int>, phi: UnsafePointer<Float>)?,
                                     k: Int, h: Int, forwardEnd: UnsafeMutablePointer<Double>?) {
        jsae_jacobian_token_f32(J, dL, dR, workspace, wd1, w2eT, phi, int64Pointer(k1), int64Pointer(k2), coef,
                                next.map { int64Pointer($0.k1) }, next.map { int64Pointer($0.k2) }, next?.phi,
                                Int64(k), Int64(h), forwardEnd, JSAE_KERNEL_AUTO)
    }
    public static func geluInPlace(_ z: UnsafeMutablePointer<Float>, derivative: UnsafeMutablePointer<Float>?, count: Int) -> Bool {
        jsae_gelu_f32(z, derivative, Int64(count), JSAE_KERNEL_AUTO)
        return true
    }
}

extension Double: JSAEScalar {
    @inlinable
    public static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                            alpha: Double, a: UnsafePointer<Double>, lda: Int,
                            b: UnsafePointer<Double>, ldb: Int,
                            beta: Double, c: UnsafeMutablePointer<Double>, ldc: Int) {
        if m == 0 || n == 0 { return }
        cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
    @inlinable
    public static func dot(_ n: Int, _ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>) -> Double {
        cblas_ddot(Int32(n), a, 1, b, 1)
    }
    public static func erf(_ x: Double) -> Double { Glibc.erf(x) }
    public static func exp(_ x: Double) -> Double { Glibc.exp(x) }
    public static func tanh(_ x: Double) -> Double { Glibc.tanh(x) }
    public static func sqrt(_ x: Double) -> Double { Glibc.sqrt(x) }
    public static var precisionName: String { "double" }
    @inlinable @inline(__always)
    public static func anyOfEight(_ p: UnsafePointer<Double>, greaterThan t: Double) -> Bool {
        any(UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Double>.self) .> SIMD8<Double>(repeating: t))
    }
    /// No floor in Double: it runs the golden and reference checks, whose
    /// TopK time does not matter, and the floor changes no result.
    @inlinable
    public static func minOfBlockMaxima(_ p: UnsafePointer<Double>, count: Int, blocks: Int) -> Double? { nil }
    public static func firstNonFinite(in p: UnsafeBufferPointer<Double>) -> Int? { firstNonFiniteScan(p) }
    public static func adamUpdate(_ count: Int, params: UnsafeMutablePointer<Double>, grads: UnsafePointer<Double>,
                                  expAvg: UnsafeMutablePointer<Double>, expAvgSq: UnsafeMutablePointer<Double>, _ c: AdamCoefficients<Double>) {
        adamUpdateVectorised(SIMD4<Double>.self, count, params: params, grads: grads, expAvg: expAvg, expAvgSq: expAvgSq, c)
    }
    public static var hasJacobianKernel: Bool { false }
    public static func jacobianToken(J: UnsafeMutablePointer<Double>, dL: UnsafeMutablePointer<Double>?, dR: UnsafeMutablePointer<Double>?,
                                     workspace: UnsafeMutablePointer<Double>, wd1: UnsafePointer<Double>, w2eT: UnsafePointer<Double>,
                                     phi: UnsafePointer<Double>, k1: UnsafePointer<Int>, k2: UnsafePointer<Int>, coef: Double,
                                     next: (k1: UnsafePointer<Int>, k2: UnsafePointer<Int>, phi: UnsafePointer<Double>)?,
                                     k: Int, h: Int, forwardEnd: UnsafeMutablePointer<Double>?) {
        preconditionFailure("no Jacobian kernel in Double: jacobianPass checks hasJacobianKernel")
    }
    public static func geluInPlace(_ z: UnsafeMutablePointer<Double>, derivative: UnsafeMutablePointer<Double>?, count: Int) -> Bool { false }
}

/// OpenBLAS runs on one thread: the package splits its large products
/// into tiles on its own pool (`parallelGemm`), so that results do not
/// depend on the thread count and no OpenBLAS thread spins beside the pool.
package enum BLASThreads {
    /// OpenBLAS's thread count: 1 once the package has set up a workspace,
    /// a product or its executables' options.
    package static var count: Int { Int(openblas_get_num_threads()) }
    package static var coreName: String { String(cString: openblas_get_corename()) }

    private static let serial: Void = openblas_set_num_threads(1)
    /// Puts OpenBLAS on one thread, once per process (later calls cost one
    /// load and branch). A run's own thread count is its `Workspace`'s.
    @inline(__always)
    package static func keepSerial() { _ = serial }
}
