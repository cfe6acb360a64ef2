import Dispatch
import CBLAS
#if canImport(Glibc)
import Glibc
#endif

/// The package's own (non-BLAS) loops on several cores. The thread count is
/// always a value handed in (a `Workspace` carries the run's), never global
/// state; results never depend on it (see `forRanges`).
public enum Parallel {
    /// The online cores: the default thread count of a run.
    public static let onlineCores: Int = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))

    /// Runs body(part, range) for `threads` contiguous ranges covering 0..<n,
    /// concurrently. Results must not depend on how 0..<n is split: callers
    /// write disjoint outputs or combine per-item partials in item order.
    @inline(__always)
    public static func forRanges(_ n: Int, threads: Int, _ body: (Int, Range<Int>) -> Void) {
        let p = max(1, min(threads, n))
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
    public static func withSerialBLAS<R>(threads: Int, _ body: () throws -> R) rethrows -> R {
        let before = openblas_get_num_threads()
        if threads <= 1 || before == 1 { return try body() }
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(before) }
        return try body()
    }
}

/// A pointer handed to parallel workers that write disjoint parts of it.
struct SharedPointer<T>: @unchecked Sendable {
    let p: UnsafeMutablePointer<T>
    init(_ p: UnsafeMutablePointer<T>) { self.p = p }
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
