import Testing
@testable import JSAECore
import _JSAETestSupport

@Suite("Thread-count independence")
struct ThreadingTests {
    /// Above OpenBLAS's threading threshold (m·n·k > 4 · 65536) in every
    /// dense product of a step, and no dimension a multiple of 64, so tiles
    /// at the edges are exercised.
    static let shape = PairShape(d: 72, dMlp: 200, mIn: 520, mOut: 456, k: 8, tokens: 300)

    /// Every parameter after `steps` training steps on `threads` threads
    /// (the workspace's, as `--threads` sets them; OpenBLAS stays on one).
    static func trainedParameters<T: JSAEScalar>(_: T.Type, threads: Int, steps: Int = 3, order: JacobianOrder = .batch) throws -> [T] {
        let (model, x) = randomModel(shape, seed: 211)
        var state = TrainState(model: model.converted(to: T.self))
        var c = TrainConfig()
        c.batch = shape.tokens; c.totalSteps = 100; c.lambda = 0.5; c.lr = 1e-3
        c.lrWarmupFraction = 0; c.lambdaWarmupFraction = 0
        let ws = state.workspace(config: c, threads: threads)
        ws.jacobianOrder = order
        let xt = x.converted(to: T.self)
        for _ in 0..<steps { _ = try state.step(xt, config: c, workspace: ws, report: true) }
        let sae = state.model.saeIn.tensors, out = state.model.saeOut!.tensors
        return SAETensors<T>.Name.allCases.flatMap { sae[$0] + out[$0] }
    }

    /// The bit patterns of two arrays agree (== would let -0 equal +0).
    static func sameBits<T>(_ a: [T], _ b: [T]) -> Bool {
        a.count == b.count && a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in pa.elementsEqual(pb) } }
    }

    static func differing<T: JSAEScalar>(_ a: [T], _ b: [T]) -> Int { zip(a, b).filter { $0 != $1 }.count }

    @Test("Training steps give the same bits on 1, 2 and 3 threads (Float)")
    func floatSteps() throws {
        let one = try Self.trainedParameters(Float.self, threads: 1)
        for t in [2, 3] {
            let other = try Self.trainedParameters(Float.self, threads: t)
            let same = Self.sameBits(one, other)
            #expect(same, "\(t) threads: \(Self.differing(one, other)) of \(one.count) parameters differ")
        }
    }

    @Test("With the shared-latents Jacobian order too, the same bits on 1, 2 and 3 threads (Float)")
    func sharedLatentOrderSteps() throws {
        let one = try Self.trainedParameters(Float.self, threads: 1, order: .sharedLatents)
        for t in [2, 3] {
            let other = try Self.trainedParameters(Float.self, threads: t, order: .sharedLatents)
            #expect(Self.sameBits(one, other), "\(t) threads: \(Self.differing(one, other)) of \(one.count) parameters differ")
        }
    }

    @Test("Training steps give the same bits on 1, 2 and 3 threads (Double)")
    func doubleSteps() throws {
        let one = try Self.trainedParameters(Double.self, threads: 1)
        for t in [2, 3] {
            let other = try Self.trainedParameters(Double.self, threads: t)
            let same = Self.sameBits(one, other)
            #expect(same, "\(t) threads: \(Self.differing(one, other)) of \(one.count) parameters differ")
        }
    }
}

@Suite("Tiled gemm")
struct TiledGemmTests {
    /// Shapes above the tiling threshold whose cut side is no multiple of
    /// 64 (row tiles with a 44-row edge; column tiles with a 60-column
    /// edge), and one product small enough to be a single call.
    static let shapes: [(m: Int, n: Int, k: Int)] = [(300, 130, 70), (90, 700, 40), (5, 7, 3)]

    @Test("Tiles cover C once, cut the longer side, and are 64-aligned except the last")
    func tileRule() {
        for (m, n, k) in Self.shapes + [(16384, 2048, 512), (512, 16384, 2048), (4096, 512, 2048), (0, 5, 5)] {
            let t = GemmTiles(m: m, n: n, k: k)
            let dim = t.alongRows ? m : n
            #expect(t.alongRows == (m >= n))
            let covered = (0..<t.count).map { t.range($0, of: dim) }
            #expect(covered.map(\.count).reduce(0, +) == (m == 0 || n == 0 ? 0 : dim))
            #expect(covered.dropLast().allSatisfy { $0.count == t.size } && covered.allSatisfy { !$0.isEmpty })
            if t.count > 1 { #expect(t.size % GemmTiles.alignment == 0) }
        }
        #expect(GemmTiles(m: 300, n: 130, k: 70).count == 5 && GemmTiles(m: 90, n: 700, k: 40).count == 6)
        #expect(GemmTiles(m: 5, n: 7, k: 3).count == 1)
    }

    /// Against a plain triple loop in Double, every transpose, beta 0 and 1,
    /// row strides wider than the rows. Tolerance: the standard bound for a
    /// sum of k products in precision u, |ĉ − c| ≤ γ(k+2) · (Σ|a||b| + |β c₀|)
    /// with γ(j) = j·u/(1 − j·u), doubled because the Double reference rounds
    /// too (for Double inputs its error is of the same order). Tiles change
    /// only which call computes an element, not how it is summed over k.
    func check<T: JSAEScalar>(_: T.Type) {
        var g = SeededGenerator(seed: 17)
        let u = Double(T.ulpOfOne) / 2
        for (m, n, k) in Self.shapes {
            for (transA, transB) in [(false, false), (true, false), (false, true), (true, true)] {
                for beta in [0.0, 1.0] {
                    let (ra, ca) = transA ? (k, m) : (m, k), (rb, cb) = transB ? (n, k) : (k, n)
                    let lda = ca + 3, ldb = cb + 5, ldc = n + 2
                    let a = (0..<(ra * lda)).map { _ in T(g.normal()) }, b = (0..<(rb * ldb)).map { _ in T(g.normal()) }
                    let c0 = (0..<(m * ldc)).map { _ in T(g.normal()) }
                    let alpha = 0.75
                    func run(threads: Int) -> [T] {
                        var c = c0
                        a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in c.withUnsafeMutableBufferPointer { pc in
                            parallelGemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: T(alpha), a: pa.baseAddress!, lda: lda,
                                         b: pb.baseAddress!, ldb: ldb, beta: T(beta), c: pc.baseAddress!, ldc: ldc, threads: threads)
                        } } }
                        return c
                    }
                    let got = run(threads: 3)
                    #expect(ThreadingTests.sameBits(got, run(threads: 1)), "\(m)×\(n)×\(k) \(transA) \(transB)")
                    var worst = 0.0
                    for i in 0..<m {
                        for j in 0..<n {
                            var s = 0.0, bound = 0.0
                            for l in 0..<k {
                                let x = Double(transA ? a[l * lda + i] : a[i * lda + l]), y = Double(transB ? b[j * ldb + l] : b[l * ldb + j])
                                s += x * y; bound += abs(x * y)
                            }
                            let want = alpha * s + beta * Double(c0[i * ldc + j])
                            let gamma = Double(k + 2) * u / (1 - Double(k + 2) * u)
                            let tol = 2 * gamma * (abs(alpha) * bound + abs(beta * Double(c0[i * ldc + j])))
                            worst = max(worst, abs(Double(got[i * ldc + j]) - want) / tol)
                        }
                        // The padding beyond n columns of each row is never written.
                        for j in n..<ldc where got[i * ldc + j] != c0[i * ldc + j] { worst = .infinity }
                    }
                    #expect(worst <= 1, "\(T.precisionName) \(m)×\(n)×\(k) transA \(transA) transB \(transB) beta \(beta): \(worst) × tolerance")
                }
            }
        }
    }

    @Test("equals a plain triple loop within rounding (Float), edge tiles included") func float() { check(Float.self) }
    @Test("equals a plain triple loop within rounding (Double), edge tiles included") func double() { check(Double.self) }
}
