import CBLAS
import Synchronization

/// The dense products of a step and of evaluation run on the package's pool,
/// never on OpenBLAS's threads: OpenBLAS's threaded gemm splits the output
/// by the thread count, and on some cores (Zen) an element computed in
/// another part of another split rounds differently in its last bits. Here
/// C is cut into tiles whose sizes follow from the product's shape alone,
/// each tile is one single-threaded BLAS call, and workers only choose which
/// tiles they run. An element of C is then always computed by the same call
/// shape at the same place in it, so the result is the same bits on any
/// thread count (edge tiles included: they are edge tiles for every count).
///
/// Tiles cut C along m (row blocks) or along n (column blocks), never along
/// k: a cut along k would add partial sums, in an order and grouping of its
/// own.
struct GemmTiles: Equatable {
    /// true: tiles are blocks of rows of C (ranges of m); false: blocks of columns (ranges of n).
    let alongRows: Bool
    /// Rows (columns) per tile; the last tile holds what is left.
    let size: Int
    /// Number of tiles (0 for an empty C).
    let count: Int

    /// Tile sizes are multiples of this, so that only the last tile meets a
    /// microkernel's edge case (OpenBLAS's sgemm/dgemm unrolls divide 64).
    static let alignment = 64
    /// Tiles a large product is cut into: enough for two or four workers to
    /// share evenly and for a worker slowed by a neighbour to be covered by
    /// the others (workers claim tiles one at a time), few enough that the
    /// operand every tile repacks (op(B) for row tiles, op(A) for column
    /// tiles) stays a small share of the work.
    static let targetCount = 8
    /// Below this m·n·k a product is one call: splitting it costs more in
    /// repacking and waking workers than it gains.
    static let minimumWork = 1 << 21

    /// - m, n: C's shape; k: the inner dimension. Never the thread count.
    init(m: Int, n: Int, k: Int) {
        // Cut the longer side: each tile repacks the whole operand along the
        // other, so the shorter other side repacks less.
        alongRows = m >= n
        let dim = alongRows ? m : n
        if m == 0 || n == 0 {
            size = max(dim, 1); count = 0
        } else if m * n * max(k, 1) < Self.minimumWork || dim <= Self.alignment {
            size = dim; count = 1
        } else {
            let perTile = (dim + Self.targetCount - 1) / Self.targetCount
            size = (perTile + Self.alignment - 1) / Self.alignment * Self.alignment
            count = (dim + size - 1) / size
        }
    }

    /// The rows (columns) of tile t.
    func range(_ t: Int, of dim: Int) -> Range<Int> { (t * size)..<min((t + 1) * size, dim) }
}

/// C = alpha · op(A) · op(B) + beta · C, all row-major (as `JSAEScalar.gemm`),
/// in `GemmTiles` on up to `threads` of the package's workers; the bits do
/// not depend on `threads`.
/// - A: [m, k] after op, B: [k, n] after op, C: [m, n]
func parallelGemm<T: JSAEScalar>(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                                 alpha: T, a: UnsafePointer<T>, lda: Int, b: UnsafePointer<T>, ldb: Int,
                                 beta: T, c: UnsafeMutablePointer<T>, ldc: Int, threads: Int) {
    BLASThreads.keepSerial()
    let tiles = GemmTiles(m: m, n: n, k: k)
    let cc = SharedPointer(c)
    // A nested function, not a closure in a variable: its context is never
    // heap-allocated, so a step still allocates nothing.
    func tile(_ t: Int) {
        if tiles.alongRows {
            let r = tiles.range(t, of: m)
            // Rows of op(A): rows of A, or columns of A when transposed.
            T.gemm(transA: transA, transB: transB, m: r.count, n: n, k: k, alpha: alpha,
                   a: transA ? a + r.lowerBound : a + r.lowerBound * lda, lda: lda, b: b, ldb: ldb,
                   beta: beta, c: cc.p + r.lowerBound * ldc, ldc: ldc)
        } else {
            let r = tiles.range(t, of: n)
            // Columns of op(B): columns of B, or rows of B when transposed.
            T.gemm(transA: transA, transB: transB, m: m, n: r.count, k: k, alpha: alpha, a: a, lda: lda,
                   b: transB ? b + r.lowerBound * ldb : b + r.lowerBound, ldb: ldb,
                   beta: beta, c: cc.p + r.lowerBound, ldc: ldc)
        }
    }
    let workers = max(1, min(threads, tiles.count))
    if workers == 1 { for t in 0..<tiles.count { tile(t) }; return }
    // Workers claim the next tile as they finish one: a core slowed by
    // another process takes fewer tiles. Which worker computes a tile never
    // changes its bits.
    let next = Atomic<Int>(0)
    WorkerPool.shared.run(parts: workers) { _ in
        while true {
            let t = next.wrappingAdd(1, ordering: .relaxed).oldValue
            if t >= tiles.count { break }
            tile(t)
        }
    }
}

extension Parallel {
    /// `parallelGemm` for other modules (jsae-bench's ceiling and its
    /// per-product timings). Prespecialised; see "Specialisation".
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    package static func gemm<T: JSAEScalar>(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                                           alpha: T, a: UnsafePointer<T>, lda: Int, b: UnsafePointer<T>, ldb: Int,
                                           beta: T, c: UnsafeMutablePointer<T>, ldc: Int, threads: Int) {
        parallelGemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                     beta: beta, c: c, ldc: ldc, threads: threads)
    }
}
