import Dispatch
import CBLAS
#if canImport(Glibc)
import Glibc
#endif

/// Threads for the package's own (non-BLAS) loops. Defaults to the online
/// cores; jsae-bench's --threads sets it together with OpenBLAS's count.
public enum Parallel {
    nonisolated(unsafe) public static var threads: Int = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))

    /// Runs body(part, range) for `parts` contiguous ranges covering 0..<n,
    /// concurrently. Results must not depend on how 0..<n is split: callers
    /// write disjoint outputs or combine per-item partials in item order.
    @inline(__always)
    public static func forRanges(_ n: Int, parts: Int = threads, _ body: (Int, Range<Int>) -> Void) {
        let p = max(1, min(parts, n))
        if p == 1 { if n > 0 { body(0, 0..<n) }; return }
        withoutActuallyEscaping(body) { body in
            // Workers touch disjoint data by contract (see above).
            nonisolated(unsafe) let work = body
            DispatchQueue.concurrentPerform(iterations: p) { i in
                work(i, (n * i / p)..<(n * (i + 1) / p))
            }
        }
    }

    /// Runs `body` with OpenBLAS single-threaded, so that small products
    /// issued from our own parallel workers each run on their caller's core
    /// instead of fighting over OpenBLAS's thread pool.
    @inline(__always)
    public static func withSerialBLAS<R>(_ body: () throws -> R) rethrows -> R {
        let before = openblas_get_num_threads()
        if threads <= 1 || before == 1 { return try body() }
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(before) }
        return try body()
    }
}

/// A pointer that may be shared with parallel workers that write disjoint
/// parts of it.
public struct SharedPointer<T>: @unchecked Sendable {
    public let p: UnsafeMutablePointer<T>
    public init(_ p: UnsafeMutablePointer<T>) { self.p = p }
}

extension Matrix {
    /// A matrix whose storage is not zeroed: every entry must be written
    /// before it is read (e.g. by a gemm with beta = 0).
    public static func uninitialised(rows: Int, cols: Int) -> Matrix<T> {
        let data = [T](unsafeUninitializedCapacity: rows * cols) { _, n in n = rows * cols }
        return Matrix(rows: rows, cols: cols, data: data)
    }
}

// MARK: Specialisation
//
// Generic code called from another module runs unspecialised (protocol
// witnesses for every +=), 5–7× slower here. The entry points other modules
// call in hot paths (TrainState.step, JSAEModel.forward, lossAndGradients,
// runForward, runTraining) carry `@_specialize(exported: true)` for Float and
// Double and immediately call an internal implementation; code inside a module
// calls the implementation, which the optimiser specialises from the
// specialised entry. A prespecialised function must not itself be called from
// inside its module: the optimiser may inline it away and leave its exported
// symbol undefined at link time (seen with Swift 6.3). The alternative,
// -cross-module-optimization, is an unsafe flag that would stop the package
// being used as a dependency.
