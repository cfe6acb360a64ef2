import Testing
@testable import JSAECore
import _JSAETestSupport

/// The encoder and the MLP work through a batch in token chunks, so that
/// their scratch is one chunk's. A batch of two chunks and a partial third,
/// against the same quantities computed token by token with plain loops.
@Suite("Token chunks of the encoder and the MLP")
struct ChunkingTests {
    /// Small-integer weights and inputs: every pre-activation is an exact
    /// integer in Double, so the TopK choice has one right answer whatever
    /// the gemm's order of additions, ties (decided by index) included. The
    /// batch is a chunk of tokens and a partial one; the latents are a part
    /// of columns and a partial one, so rows are selected across parts.
    @Test("Encoding in chunks of tokens and parts of columns selects what one scan of each whole row selects")
    func encoderChunks() throws {
        let B = encodeChunkTokens + 5, d = 2, m = encodePartColumns + 40, k = 4
        var g = SeededGenerator(seed: 17)
        let small = { (n: Int) in (0..<n).map { _ in Double(Int.random(in: -3...3, using: &g)) } }
        let x = Matrix(rows: B, cols: d, data: small(B * d))
        // The last part's latents get larger biases, so that tokens select
        // latents of both parts (checked below), mixed within a row.
        var bias = small(m)
        for i in encodePartColumns..<m { bias[i] += Double(Int.random(in: 0...16, using: &g)) }
        let sae = try TopKSAE<Double>(wEnc: Matrix(rows: d, cols: m, data: small(d * m)), bEnc: bias,
                                      wDec: Matrix(rows: m, cols: d, data: small(m * d)), bDec: small(d), k: k)
        let wEnc = sae.wEnc.data, bEnc = sae.bEnc
        var want: [[Int]] = []
        var h = [Double](repeating: 0, count: m)
        for b in 0..<B {
            for i in 0..<m {
                var z = bEnc[i]
                for c in 0..<d { z += x.data[b * d + c] * wEnc[c * m + i] }
                h[i] = z
            }
            want.append(scalarTopK(h, k: k).indices)
        }
        let mixed = want.filter { row in row.contains { $0 >= encodePartColumns } && row.contains { $0 < encodePartColumns } }.count
        #expect(mixed > B / 10, "only \(mixed) tokens select latents of both parts")
        for threads in [1, 2] {
            let codes = sae.encode(x, threads: threads)
            var wrong = 0
            for b in 0..<B where Array(codes.indices(ofToken: b)) != want[b] { wrong += 1 }
            #expect(wrong == 0, "\(wrong) of \(B) tokens, \(threads) threads")
        }
    }

    /// Tolerance 1e-12: each entry is a sum of at most 6 Double products of
    /// O(1) values plus an erf, so the gemm's order of additions moves it by
    /// a few ulps (~1e-15); a chunk written to the wrong rows is off by O(1).
    @Test("The MLP in chunks equals a plain loop over each token (y and φ')")
    func mlpChunks() throws {
        let B = 2 * mlpChunkTokens + 37, d = 3, dMlp = 5
        var g = SeededGenerator(seed: 19)
        let x = Matrix(rows: B, cols: d, data: g.normals(B * d))
        let mlp = try MLP<Double>(wIn: Matrix(rows: d, cols: dMlp, data: g.normals(d * dMlp)), bIn: g.normals(dMlp),
                                  wOut: Matrix(rows: dMlp, cols: d, data: g.normals(dMlp * d)), bOut: g.normals(d),
                                  activation: .gelu)
        let (y, phi) = mlp.forward(x, threads: 2)
        let wIn = mlp.wIn.data, bIn = mlp.bIn, wOut = mlp.wOut.data, bOut = mlp.bOut
        var worst = 0.0
        for b in 0..<B {
            var act = [Double](repeating: 0, count: dMlp)
            for r in 0..<dMlp {
                let z = bIn[r] + (0..<d).reduce(0.0) { $0 + x.data[b * d + $1] * wIn[$1 * dMlp + r] }
                act[r] = Activation.gelu.value(z)
                worst = max(worst, abs(phi.data[b * dMlp + r] - Activation.gelu.derivative(z)))
            }
            for c in 0..<d {
                let want = bOut[c] + (0..<dMlp).reduce(0.0) { $0 + act[$1] * wOut[$1 * d + c] }
                worst = max(worst, abs(y.data[b * d + c] - want))
            }
        }
        #expect(worst < 1e-12, "largest difference \(worst)")
    }
}
