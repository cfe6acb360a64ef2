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
    /// CPU seconds of the whole process (every thread): what a step costs in
    /// work, nearly unaffected by other processes taking turns on the cores.
    /// With one thread it equals the wall time on an idle machine.
    static func cpu() -> Double { seconds(CLOCK_PROCESS_CPUTIME_ID) }
    /// CPU seconds of the calling thread.
    static func threadCPU() -> Double { seconds(CLOCK_THREAD_CPUTIME_ID) }
    private static func seconds(_ clock: clockid_t) -> Double {
        var ts = timespec()
        clock_gettime(clock, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }
    /// Keeps the calling thread busy for `seconds` of its own CPU time: an
    /// injected slowdown that costs work, so both the wall clock and the CPU
    /// clock see it (a sleep would be invisible to the CPU clock).
    static func burn(_ seconds: Double) {
        let end = threadCPU() + seconds
        var x: UInt64 = 0x9E3779B97F4A7C15
        while threadCPU() < end { for _ in 0..<1000 { x = x &* 6364136223846793005 &+ 1442695040888963407 } }
        blackHole(x)
    }
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

/// The in-run sgemm ceiling's product, [rows × inner] · [inner × cols] on
/// seeded data, timed one call at a time by the wall and the process's CPU
/// clock. It runs as the step's products do: in tiles on the package's
/// workers (`Parallel.gemm`), OpenBLAS on one thread.
final class CeilingProbe {
    let rows: Int, cols: Int, inner: Int, threads: Int
    private let a: [Float], b: [Float]
    private var c: [Float]
    var flops: Double { 2 * Double(rows) * Double(cols) * Double(inner) }
    /// Its three arrays, resident from init (all written there).
    var bytes: Int { (a.count + b.count + c.count) * MemoryLayout<Float>.stride }

    init(rows: Int, cols: Int, inner: Int, threads: Int) {
        self.rows = rows; self.cols = cols; self.inner = inner; self.threads = threads
        var g = SeededGenerator(seed: 1)
        a = (0..<(rows * inner)).map { _ in Float(g.normal()) }
        b = (0..<(inner * cols)).map { _ in Float(g.normal()) }
        c = [Float](repeating: 0, count: rows * cols)
    }

    /// One product: (wall seconds, CPU seconds).
    func sample() -> (wall: Double, cpu: Double) {
        let t0 = Clock.now(), c0 = Clock.cpu()
        a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in c.withUnsafeMutableBufferPointer { pc in
            Parallel.gemm(transA: false, transB: false, m: rows, n: cols, k: inner, alpha: 1, a: pa.baseAddress!, lda: inner,
                          b: pb.baseAddress!, ldb: cols, beta: 0, c: pc.baseAddress!, ldc: cols, threads: threads)
        } } }
        return (Clock.now() - t0, Clock.cpu() - c0)
    }
}

/// `reps` ceiling products after one warm-up, on a probe that is freed on
/// return (so that it is not counted in a section's peak memory).
func ceilingSamples(rows: Int, cols: Int, inner: Int, threads: Int, reps: Int) -> [(wall: Double, cpu: Double)] {
    let probe = CeilingProbe(rows: rows, cols: cols, inner: inner, threads: threads)
    _ = probe.sample()
    return (0..<reps).map { _ in probe.sample() }
}

/// The in-run sgemm ceiling from every product timed in the run: a set
/// before the timed sections, one after them, and with --interleave-ceiling
/// the products beside each step. The ceiling is the best of them: load on
/// a shared machine only slows a product, so the best is the estimate of
/// the machine's peak that a burst of load during one set cannot move, and
/// the spread (best over worst, the sets' medians) says how steady the run was.
struct CeilingSpread: Codable {
    var flops: Double
    /// Per set: the products' wall seconds.
    var sets: [String: [Double]]
    var cpuSeconds: [Double]

    private var all: [Double] { sets.values.flatMap { $0 } }
    var bestGFLOPs: Double { flops / all.min()! / 1e9 }
    var worstGFLOPs: Double { flops / all.max()! / 1e9 }
    var medianGFLOPs: Double { flops / median(all) / 1e9 }
    var bestCPUGFLOPs: Double { flops / cpuSeconds.min()! / 1e9 }
    var products: Int { all.count }
    func setMedianGFLOPs(_ name: String) -> Double? { sets[name].flatMap { $0.isEmpty ? nil : flops / median($0) / 1e9 } }
}

/// Steps timed with a ceiling product before each and after the last
/// (`--interleave-ceiling`): each step is compared with the ceiling measured
/// beside it, so a machine whose speed drifts during the run (other
/// processes, other tenants of the host) moves both sides of the ratio.
struct PairedSamples {
    var ceiling: [(wall: Double, cpu: Double)] = []
    var steps: [(wall: Double, cpu: Double)] = []

    /// Median over steps of the step's share of the ceiling, the ceiling
    /// being the mean time of the products just before and just after it.
    func shares(flops: Double, probeFlops: Double) -> PairedShares {
        func share(_ i: Int, _ t: KeyPath<(wall: Double, cpu: Double), Double>) -> Double {
            let ceilingSeconds = (ceiling[i][keyPath: t] + ceiling[i + 1][keyPath: t]) / 2
            return (flops / steps[i][keyPath: t]) / (probeFlops / ceilingSeconds)
        }
        let wall = steps.indices.map { share($0, \.wall) }, cpu = steps.indices.map { share($0, \.cpu) }
        return PairedShares(flops: flops, probeFlops: probeFlops, wall: median(wall), cpu: median(cpu), wallPerStep: wall, cpuPerStep: cpu,
                            bestWall: (flops / steps.map(\.wall).min()!) / (probeFlops / ceiling.map(\.wall).min()!),
                            bestCPU: (flops / steps.map(\.cpu).min()!) / (probeFlops / ceiling.map(\.cpu).min()!),
                            ceilingWallSeconds: ceiling.map(\.wall), stepWallSeconds: steps.map(\.wall),
                            ceilingCPUSeconds: ceiling.map(\.cpu), stepCPUSeconds: steps.map(\.cpu))
    }
}

struct PairedShares: Codable {
    /// The step's FLOPs (spec count) and the ceiling product's.
    var flops: Double
    var probeFlops: Double
    var wall: Double
    var cpu: Double
    var wallPerStep: [Double]
    var cpuPerStep: [Double]
    /// Best of both: the fastest step against the fastest product, by each clock.
    var bestWall: Double
    var bestCPU: Double
    /// The raw samples, so that several runs can be pooled (ci/gate.py).
    var ceilingWallSeconds: [Double]
    var stepWallSeconds: [Double]
    var ceilingCPUSeconds: [Double]
    var stepCPUSeconds: [Double]
}

/// STREAM-like memory bandwidth, measured in the run beside the sgemm
/// ceiling and on the same worker threads (`Parallel.forRanges`, the pool
/// the step's own loops use): copy (c = a) and triad (a = b + s·c) over three
/// arrays of `arrayBytes()` each, so every pass streams from DRAM. Bytes
/// are counted as STREAM counts them (8 per copied element, 12 per triad
/// element; the write-allocate read of the destination is not counted), which
/// is also how the phase limits count a write. GB/s is 1e9 bytes/s; each
/// figure is the median of `reps` passes after one first-touch pass.
struct Bandwidth: Codable {
    var copyGBs: Double
    var triadGBs: Double
    var arrayBytes: Int
    var reps: Int
    var triadSeconds: [Double]
    var copySeconds: [Double]

    /// Random whole-row reads at the shapes the step gathers from (`GatherRate`).
    var gathers: [GatherRate] = []

    /// The figure the phase limits use: triad, whose two reads and one write
    /// are the mix of most phases.
    var gbs: Double { triadGBs }

    /// The gather rate measured from a matrix of this shape, if any.
    func gatherGBs(_ shape: MatrixShape) -> Double? {
        gathers.first { $0.rows == shape.rows && $0.rowFloats == shape.rowFloats }?.gbs
    }

    /// max(64 MiB, 4 × L3), at most 256 MiB. L3 as the kernel lists it for
    /// cpu0 (sysfs), else glibc's: on this VM glibc reports the host's
    /// 256 MiB where sysfs and lscpu give the 32 MiB the guest shares.
    static func arrayBytes() -> Int {
        var l3 = sysconf(Int32(_SC_LEVEL3_CACHE_SIZE))
        if let s = try? String(contentsOfFile: "/sys/devices/system/cpu/cpu0/cache/index3/size", encoding: .utf8) {
            let t = s.trimmingCharacters(in: .whitespacesAndNewlines)
            let scale = t.hasSuffix("K") ? 1 << 10 : (t.hasSuffix("M") ? 1 << 20 : 1)
            if let v = Int(t.trimmingCharacters(in: CharacterSet.decimalDigits.inverted)) { l3 = v * scale }
        }
        return min(256 << 20, max(64 << 20, 4 * max(l3, 0)))
    }

    /// The arrays are mmap'ed and unmapped here, not taken from the
    /// allocator, so they are back with the system before the steps' peak
    /// resident memory is measured.
    static func measure(threads: Int, reps: Int, bytes: Int = arrayBytes(), gathers: [GatherShape] = []) throws -> Bandwidth {
        let n = bytes / MemoryLayout<Float>.stride
        let size = n * MemoryLayout<Float>.stride
        let a = try mapFloats(n, for: "the bandwidth measurement")
        defer { unmapFloats(a, n) }
        let b = try mapFloats(n, for: "the bandwidth measurement")
        defer { unmapFloats(b, n) }
        let c = try mapFloats(n, for: "the bandwidth measurement")
        defer { unmapFloats(c, n) }
        // First touch on the threads that stream them later.
        Parallel.forRanges(n, threads: threads) { _, r in
            for i in r { a[i] = 1; b[i] = 2; c[i] = 0.5 }
        }
        var copy: [Double] = [], triad: [Double] = []
        let s: Float = 3
        for _ in 0..<reps {
            var t0 = Clock.now()
            Parallel.forRanges(n, threads: threads) { _, r in
                (c + r.lowerBound).update(from: a + r.lowerBound, count: r.count)
            }
            copy.append(Clock.now() - t0)
            t0 = Clock.now()
            Parallel.forRanges(n, threads: threads) { _, r in
                for i in r { a[i] = b[i] + s * c[i] }
            }
            triad.append(Clock.now() - t0)
        }
        blackHole(a[n / 2])
        return Bandwidth(copyGBs: 2 * Double(size) / median(copy) / 1e9, triadGBs: 3 * Double(size) / median(triad) / 1e9,
                         arrayBytes: size, reps: reps, triadSeconds: triad, copySeconds: copy,
                         gathers: try gathers.map { try GatherRate.measure($0, threads: threads, reps: reps) })
    }
}

/// `count` floats of fresh anonymous memory for a measurement (`what` names
/// it in the error), returned with `unmapFloats`: mapped rather than
/// allocated, so that they are back with the system before a section's peak
/// resident memory is read. Advised MADV_HUGEPAGE like the step's own large
/// buffers (`allocateStorage`), so that the rates are those of memory paged
/// as the step's is; the advice is a hint, and its failure (transparent
/// huge pages off) leaves both on base pages alike.
func mapFloats(_ count: Int, for what: String) throws -> UnsafeMutablePointer<Float> {
    let size = count * MemoryLayout<Float>.stride
    guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else {
        throw JSAEError("cannot map \(size >> 20) MiB for \(what)")
    }
    _ = madvise(p, size, MADV_HUGEPAGE)
    return p.bindMemory(to: Float.self, capacity: count)
}

func unmapFloats(_ p: UnsafeMutablePointer<Float>, _ count: Int) { munmap(p, count * MemoryLayout<Float>.stride) }

/// What a gather measurement reads: `reads` rows of `rowFloats` floats, each
/// at a seeded random row of a [`rows`, `rowFloats`] matrix.
struct GatherShape {
    var rows: Int, rowFloats: Int, reads: Int

    /// The step's row gathers at a shape: rows of W_dec at random ([m, d],
    /// B·k reads per SAE: what a decode that visits tokens rather than
    /// latents would read, kept for comparison), the sparse decode's and its
    /// backward's token rows ([B, d], 2·B·k reads) and the Jacobian's rows
    /// of wd1 and w2eᵀ (two [m, d_mlp] matrices, read here as one of 2m
    /// rows; B·2k reads).
    static func step(_ s: Shape) -> [GatherShape] {
        [GatherShape(rows: s.m, rowFloats: s.d, reads: s.batch * s.k),
         GatherShape(rows: s.batch, rowFloats: s.d, reads: 2 * s.batch * s.k),
         GatherShape(rows: 2 * s.m, rowFloats: s.dMlp, reads: s.batch * 2 * s.k)]
    }
}

/// Random whole-row reads, the memory access of the step's gathers (the
/// sparse decode's rows of W_dec, the backward's token rows, the Jacobian's
/// rows of wd1 and w2eᵀ), measured like the triad in the same run and on
/// the same threads: each worker adds its share of the rows into an
/// accumulator row that stays in L1, so the rows' bytes are read once and
/// nothing is written to memory. The indices are uniform, as a batch's TopK
/// indices are at the seeded initial SAEs. A phase that must read its rows
/// at random takes at least its gathered bytes at this rate (the "gathers"
/// column of the phase table). GB/s counts the rows' bytes; each figure is
/// the median of `reps` passes over a matrix written first.
struct GatherRate: Codable {
    var rows: Int
    var rowFloats: Int
    var matrixBytes: Int
    var reads: Int
    var gbs: Double
    var seconds: [Double]

    /// The matrix is mmap'ed and unmapped here, like the triad's arrays.
    static func measure(_ g: GatherShape, threads: Int, reps: Int) throws -> GatherRate {
        let n = g.rows * g.rowFloats, size = n * MemoryLayout<Float>.stride
        let a = try mapFloats(n, for: "the gather measurement")
        defer { unmapFloats(a, n) }
        Parallel.forRanges(n, threads: threads) { _, r in for i in r { a[i] = 1 } }
        var rng = SeededGenerator(seed: 11)
        let index = (0..<g.reads).map { _ in Int.random(in: 0..<g.rows, using: &rng) }
        let w = g.rowFloats
        let acc = UnsafeMutablePointer<Float>.allocate(capacity: max(threads, 1) * w)
        defer { acc.deallocate() }
        acc.initialize(repeating: 0, count: max(threads, 1) * w)
        var seconds: [Double] = []
        for _ in 0..<reps {
            let t0 = Clock.now()
            index.withUnsafeBufferPointer { idx in
                Parallel.forRanges(g.reads, threads: threads) { worker, r in
                    let out = acc + worker * w
                    for i in r {
                        let row = a + idx[i] * w
                        for c in 0..<w { out[c] += row[c] }
                    }
                }
            }
            seconds.append(Clock.now() - t0)
        }
        blackHole(acc[0])
        return GatherRate(rows: g.rows, rowFloats: w, matrixBytes: size, reads: g.reads,
                          gbs: Double(g.reads * w * MemoryLayout<Float>.stride) / median(seconds) / 1e9, seconds: seconds)
    }
}

/// What the machine and build are, for the JSON report.
struct Environment: Codable {
    var cpuModel: String
    var cores: Int
    var openblasCore: String
    /// OPENBLAS_CORETYPE when set: the user's choice, or the one the
    /// executable started again with (`BLASCore`).
    var openblasCoretype: String?
    var openblasThreads: Int
    var packageThreads: Int
    var swiftVersion: String
    var gitCommit: String

    static func current(threads: Int) -> Environment {
        return Environment(cpuModel: Parallel.cpuModel, cores: ProcessInfo.processInfo.activeProcessorCount,
                           openblasCore: BLASThreads.coreName,
                           openblasCoretype: ProcessInfo.processInfo.environment[BLASCore.variable], openblasThreads: BLASThreads.count,
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
