import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The package's own loops on several cores, the tiles of its large products
/// included (`parallelGemm`). The thread count is always a value handed in
/// (a `Workspace` carries the run's), never global state; results never
/// depend on it (see `forRanges`).
public enum Parallel {
    /// The online cores: the default thread count of a run.
    public static let onlineCores: Int = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    /// The CPU's "model name" from /proc/cpuinfo, for reports ("unknown" without it).
    package static var cpuModel: String {
        (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { String($0.split(separator: ":", maxSplits: 1).last ?? "").trimmingCharacters(in: .whitespaces) } ?? "unknown"
    }

    /// Runs body(part, range) for `threads` contiguous ranges covering 0..<n,
    /// concurrently. Results must not depend on how 0..<n is split: callers
    /// write disjoint outputs or combine per-item partials in item order.
    @inline(__always)
    package static func forRanges(_ n: Int, threads: Int, _ body: (Int, Range<Int>) -> Void) {
        let p = max(1, min(threads, n))
        if p == 1 { if n > 0 { body(0, 0..<n) }; return }
        WorkerPool.shared.run(parts: p) { i in body(i, (n * i / p)..<(n * (i + 1) / p)) }
    }
}

/// Persistent worker threads for `Parallel.forRanges`. Unlike
/// DispatchQueue.concurrentPerform, which copies its block to the heap on
/// every call, a run allocates nothing, so a training step allocates nothing
/// (jsae-bench counts it). One run at a time: a caller that finds the pool
/// busy (another thread's run, or a nested call from inside a part) runs its
/// parts itself, one after another; results never depend on the split.
final class WorkerPool: @unchecked Sendable {
    // @unchecked: every mutable field is guarded by `lock`.
    static let shared = WorkerPool()

    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let done = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let runLock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var workers = 0
    private var generation = 0
    // Not an Optional: storing a closure in one reabstracts it, which allocates.
    private var task: (Int) -> Void = WorkerPool.idle
    private static let idle: @Sendable (Int) -> Void = { _ in }
    private var parts = 0, nextPart = 0, unfinished = 0

    private init() {
        pthread_mutex_init(lock, nil); pthread_mutex_init(runLock, nil)
        pthread_cond_init(wake, nil); pthread_cond_init(done, nil)
    }

    /// Runs body(0..<parts) on the caller and the workers; returns when all are done.
    func run(parts p: Int, _ body: (Int) -> Void) {
        guard pthread_mutex_trylock(runLock) == 0 else { for i in 0..<p { body(i) }; return }
        defer { pthread_mutex_unlock(runLock) }
        startWorkers(p - 1)
        withoutActuallyEscaping(body) { body in
            pthread_mutex_lock(lock)
            task = body; parts = p; nextPart = 1; unfinished = p - 1
            generation &+= 1
            pthread_cond_broadcast(wake)
            pthread_mutex_unlock(lock)
            body(0)
            pthread_mutex_lock(lock)
            // Help with parts no worker has claimed yet, then wait for the rest.
            while nextPart < parts {
                let i = nextPart
                nextPart += 1
                pthread_mutex_unlock(lock)
                body(i)
                pthread_mutex_lock(lock)
                unfinished -= 1
            }
            while unfinished > 0 { pthread_cond_wait(done, lock) }
            task = WorkerPool.idle   // the last reference to the non-escaping closure goes before it ends
            pthread_mutex_unlock(lock)
        }
    }

    /// Grows the pool to at least `n` workers (thread creation allocates, once).
    private func startWorkers(_ n: Int) {
        while workers < n {
            workers += 1
            let t = Thread { [unowned self] in self.workerLoop() }
            t.stackSize = 1 << 22
            t.start()
        }
    }

    private func workerLoop() {
        pthread_mutex_lock(lock)
        var seen = generation
        while true {
            while generation == seen { pthread_cond_wait(wake, lock) }
            seen = generation
            while nextPart < parts {
                let i = nextPart
                nextPart += 1
                do {
                    let work = task
                    pthread_mutex_unlock(lock)
                    work(i)
                }
                pthread_mutex_lock(lock)
                unfinished -= 1
                if unfinished == 0 { pthread_cond_signal(done) }
            }
        }
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
// runForward, runTraining, the report's f_s reader outputLatentValues with
// moveAlongInputLatent, and TrainState.initial, whose draws and transpose
// ran 13x as long unspecialised) carry `@_specialize(exported: true)` for Float and
// Double and immediately call an internal implementation; code inside a module
// calls the implementation, which the optimiser specialises from the
// specialised entry. A prespecialised function must not itself be called from
// inside its module: the optimiser may inline it away and leave its exported
// symbol undefined at link time (seen with Swift 6.3). The alternative,
// -cross-module-optimization, is an unsafe flag that would stop the package
// being used as a dependency.
