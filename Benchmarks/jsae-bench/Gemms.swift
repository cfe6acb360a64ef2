import CBLAS
import Foundation
import JSAECore
import _JSAETestSupport

/// `--gemms`: each dense product of a training step at `shape` (Float),
/// timed two ways in turn, `pairs` times: as the step runs it (tiles on the
/// package's `threads` workers, OpenBLAS on one thread) and as one call on
/// OpenBLAS's own `threads` threads. Returns a table of the medians (wall,
/// and CPU time of the process: OpenBLAS's spinning threads count there)
/// and the medians of the per-pair ratios tiled / OpenBLAS.
func gemmComparison(_ shape: Shape, threads: Int, pairs: Int, log: (String) -> Void) -> String {
    let B = shape.batch, d = shape.d, h = shape.dMlp, m = shape.m
    // (name, transA, transB, M, N, K, beta, calls per step); the encoder runs
    // on chunks of tokens and parts of columns (JSAECore's encodeChunkTokens,
    // encodePartColumns), for both SAEs; the MLP on chunks of tokens
    // (mlpChunkTokens). Here each product's operands are contiguous, where
    // the step's encoder reads a part of W_enc's columns (ldb = m).
    let chunk = min(encodeChunkTokens, B), part = min(encodePartColumns, m), mlpChunk = min(mlpChunkTokens, B)
    let encoderCalls = 2 * ((B + chunk - 1) / chunk) * ((m + part - 1) / part), mlpCalls = (B + mlpChunk - 1) / mlpChunk
    let products: [(String, Bool, Bool, Int, Int, Int, Float, Int)] = [
        ("encoder part x·W_enc", false, false, chunk, part, d, 1, encoderCalls),
        ("MLP x·W_in", false, false, mlpChunk, h, d, 0, mlpCalls),
        ("MLP act·W_out", false, false, mlpChunk, d, h, 0, mlpCalls),
        ("wd1 = W_dec_x·W_in", false, false, m, h, d, 0, 1),
        ("w2eᵀ = W_enc_yᵀ·W_outᵀ", true, true, m, h, d, 0, 1),
        ("dW_dec_x += dwd1·W_inᵀ", false, true, m, d, h, 1, 1),
        ("dW_enc_y += W_outᵀ·dw2eᵀᵀ", true, true, d, m, h, 1, 1),
    ]
    var rows: [[String]] = []
    var stepTiled = 0.0, stepBLAS = 0.0, stepTiledCPU = 0.0, stepBLASCPU = 0.0
    for (name, tA, tB, M, N, K, beta, calls) in products {
        log("gemm \(name): \(M)×\(N)×\(K), \(pairs) pairs …")
        var g = SeededGenerator(seed: 3)
        let a = (0..<(M * K)).map { _ in Float(g.normal()) }, b = (0..<(K * N)).map { _ in Float(g.normal()) }
        var c = [Float](repeating: 0, count: M * N)
        let lda = tA ? M : K, ldb = tB ? K : N
        func time(_ openBLASThreads: Bool) -> (wall: Double, cpu: Double) {
            // Both sides start from the same state: OpenBLAS's idle threads,
            // which spin for a while after a threaded call, asleep, and the
            // process just woken.
            usleep(300_000)
            if openBLASThreads { openblas_set_num_threads(Int32(threads)) }
            let t0 = Clock.now(), c0 = Clock.cpu()
            a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in c.withUnsafeMutableBufferPointer { pc in
                if openBLASThreads {
                    Float.gemm(transA: tA, transB: tB, m: M, n: N, k: K, alpha: 1, a: pa.baseAddress!, lda: lda,
                               b: pb.baseAddress!, ldb: ldb, beta: beta, c: pc.baseAddress!, ldc: N)
                } else {
                    Parallel.gemm(transA: tA, transB: tB, m: M, n: N, k: K, alpha: 1, a: pa.baseAddress!, lda: lda,
                                  b: pb.baseAddress!, ldb: ldb, beta: beta, c: pc.baseAddress!, ldc: N, threads: threads)
                }
            } } }
            let t = (wall: Clock.now() - t0, cpu: Clock.cpu() - c0)
            if openBLASThreads { openblas_set_num_threads(1) }
            return t
        }
        _ = time(false); _ = time(true)
        var tiled: [(wall: Double, cpu: Double)] = [], blas: [(wall: Double, cpu: Double)] = []
        // A B B A: neither side always goes first.
        for i in 0..<pairs {
            if i % 2 == 0 { tiled.append(time(false)); blas.append(time(true)) } else { blas.append(time(true)); tiled.append(time(false)) }
        }
        let ratio = median(zip(tiled, blas).map { $0.wall / $1.wall }), cpuRatio = median(zip(tiled, blas).map { $0.cpu / $1.cpu })
        let tw = median(tiled.map(\.wall)), bw = median(blas.map(\.wall))
        stepTiled += Double(calls) * tw; stepBLAS += Double(calls) * bw
        stepTiledCPU += Double(calls) * median(tiled.map(\.cpu)); stepBLASCPU += Double(calls) * median(blas.map(\.cpu))
        rows.append([name, "\(M)×\(N)×\(K)", "\(calls)", String(format: "%.1f", 1000 * tw), String(format: "%.1f", 1000 * bw),
                     String(format: "%.3f", ratio), String(format: "%.1f", 1000 * median(tiled.map(\.cpu))),
                     String(format: "%.1f", 1000 * median(blas.map(\.cpu))), String(format: "%.3f", cpuRatio)])
    }
    rows.append(["all per step (calls × median)", "", "", String(format: "%.1f", 1000 * stepTiled),
                 String(format: "%.1f", 1000 * stepBLAS), String(format: "%.3f", stepTiled / stepBLAS),
                 String(format: "%.1f", 1000 * stepTiledCPU), String(format: "%.1f", 1000 * stepBLASCPU),
                 String(format: "%.3f", stepTiledCPU / stepBLASCPU)])
    let header = ["product", "M×N×K", "calls/step", "tiled ms", "OpenBLAS ms", "tiled/OpenBLAS wall (median of pairs)",
                  "tiled CPU ms", "OpenBLAS CPU ms", "tiled/OpenBLAS CPU"]
    return "dense products of a step, \(threads) threads: tiled on the package's workers vs one call on OpenBLAS's threads, \(pairs) pairs\n"
        + markdownTable([header] + rows)
}
