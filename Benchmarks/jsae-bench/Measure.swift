import CBLAS
import Foundation
import JSAECore
import _JSAETestSupport

/// Shapes of one benchmark configuration.
struct Shape: Codable {
    var d: Int, dMlp: Int, expansion: Int, k: Int, batch: Int
    var m: Int { expansion * d }

    /// FLOPs per optimizer step by the count in jsae-spec.md (2 per MAC).
    var saeFlops: Double { 2 * Double(batch) * Double(d) * Double(m) }
    var jsaeFlops: Double {
        let B = Double(batch), d = Double(d), h = Double(dMlp), m = Double(m), k2 = Double(k * k)
        return 2 * (2 * B * d * m)     // two encoders, dense
            + 4 * B * d * h             // MLP f
            + 4 * m * d * h             // wd1 and w2e precompute
            + 2 * B * k2 * h            // J forward
            + 4 * B * k2 * h            // J backward to wd1, w2e
            + 4 * m * d * h             // dwd1 -> dW_dec_x, dw2e -> dW_enc_y
    }
}

enum Clock {
    static func now() -> Double { PhaseTimer.now() }
}

func median(_ v: [Double]) -> Double {
    let s = v.sorted()
    return s.isEmpty ? .nan : (s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2)
}

/// Peak resident memory since the last reset, from /proc/self/status (VmHWM).
enum PeakMemory {
    static func reset() {
        // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux ≥ 4.0).
        try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
    }
    static func bytes() -> Int {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in s.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            let kb = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
            return kb * 1024
        }
        return 0
    }
}

/// sgemm GFLOP/s at [rows × inner] · [inner × cols], median of `reps` after one warm-up.
func sgemmCeiling(rows: Int, cols: Int, inner: Int, reps: Int) -> (gflops: Double, seconds: [Double]) {
    var g = SeededGenerator(seed: 1)
    let a = (0..<(rows * inner)).map { _ in Float(g.normal()) }
    let b = (0..<(inner * cols)).map { _ in Float(g.normal()) }
    var c = [Float](repeating: 0, count: rows * cols)
    var times: [Double] = []
    for rep in 0...reps {
        let t0 = Clock.now()
        a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in c.withUnsafeMutableBufferPointer { pc in
            Float.gemm(transA: false, transB: false, m: rows, n: cols, k: inner, alpha: 1,
                       a: pa.baseAddress!, lda: inner, b: pb.baseAddress!, ldb: cols, beta: 0, c: pc.baseAddress!, ldc: cols)
        } } }
        if rep > 0 { times.append(Clock.now() - t0) }
    }
    return (2 * Double(rows) * Double(cols) * Double(inner) / median(times) / 1e9, times)
}

/// What the machine and build are, for the JSON report.
struct Environment: Codable {
    var cpuModel: String
    var cores: Int
    var openblasCore: String
    var openblasThreads: Int
    var packageThreads: Int
    var swiftVersion: String
    var gitCommit: String

    static func current(threads: Int) -> Environment {
        let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { String($0.split(separator: ":", maxSplits: 1).last ?? "").trimmingCharacters(in: .whitespaces) } ?? "unknown"
        return Environment(cpuModel: cpu, cores: ProcessInfo.processInfo.activeProcessorCount,
                           openblasCore: BLASThreads.coreName, openblasThreads: BLASThreads.count,
                           packageThreads: threads,
                           swiftVersion: run("swift", ["--version"]).split(separator: "\n").first.map(String.init) ?? "unknown",
                           gitCommit: run("git", ["-C", packageRoot, "rev-parse", "--short=12", "HEAD"]).trimmingCharacters(in: .whitespacesAndNewlines))
    }
}

/// Runs a tool found on PATH and returns its stdout ("" if it is missing or fails).
func run(_ tool: String, _ args: [String], stdin: Data? = nil) -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = [tool] + args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    if let stdin {
        let inp = Pipe()
        p.standardInput = inp
        do { try p.run() } catch { return "" }
        inp.fileHandleForWriting.write(stdin)
        try? inp.fileHandleForWriting.close()
    } else {
        do { try p.run() } catch { return "" }
    }
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return p.terminationStatus == 0 ? String(decoding: data, as: UTF8.self) : ""
}
