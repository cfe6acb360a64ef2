// Micro-benchmark of the per-token Jacobian (forward J and backward dL, dR)
// against today's path and against the machine's own limits, all measured in
// this one run:
//   - the single-core sgemm ceiling (OpenBLAS, 1 thread, a large square gemm);
//   - a STREAM-like copy (bandwidth from DRAM, bytes read + bytes written);
//   - today's path, as JSAECore.jacobianPass does it per token: gather
//     L = w2eT[K2] and R = wd1[K1] ⊙ φ', then three single-threaded sgemms;
//   - the C kernel (CJSAEKernels) on every dispatch path this CPU supports.
// Shape (Pythia-70m): k latents per token, h = d_mlp, m rows of wd1 and w2eT
// (so the gathered rows come from two 128 MiB matrices, i.e. from DRAM), n tokens
// with random K1, K2, outputs dL, dR written into chunk buffers of `chunk`
// tokens as the training step does.
//
//   swift run -c release jacobian-kernel-bench [--reps N] [--tokens N]
#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import CBLAS
import CJSAEKernels

nonisolated(unsafe) let k = 32, h = 2048, m = 16384, chunk = 64
nonisolated(unsafe) var n = 256, reps = 7
nonisolated(unsafe) var args = CommandLine.arguments.dropFirst()
while let a = args.popFirst() {
    switch a {
    case "--reps": reps = Int(args.popFirst() ?? "") ?? reps
    case "--tokens": n = Int(args.popFirst() ?? "") ?? n
    default: print("usage: jacobian-kernel-bench [--reps N] [--tokens N]"); exit(2)
    }
}
openblas_set_num_threads(1)

func clock(_ id: clockid_t) -> Double {
    var t = timespec()
    clock_gettime(id, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
}
func now() -> Double { clock(CLOCK_MONOTONIC) }
func median(_ v: [Double]) -> Double {
    let s = v.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}
/// Median seconds of `reps` runs after one warm-up. The machine is shared, so
/// for work on the calling thread alone the figure is the thread's CPU time
/// (time spent descheduled does not count); for work spread across threads it
/// is wall time.
func time(threads: Int = 1, _ body: () -> Void) -> Double {
    body()
    let id = threads == 1 ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC
    return median((0..<reps).map { _ in let t0 = clock(id); body(); return clock(id) - t0 })
}

/// 64-byte aligned Float buffer (never freed: the process is short-lived).
/// hugePages: 2 MiB aligned and advised to transparent huge pages before it is
/// touched (the machine's THP mode is "madvise"), so a gathered 8 KiB row
/// costs no TLB miss of its own.
func buffer(_ count: Int, hugePages: Bool = false) -> UnsafeMutablePointer<Float> {
    var p: UnsafeMutableRawPointer? = nil
    let align = hugePages ? 2 << 20 : 64, bytes = (count * 4 + align - 1) / align * align
    precondition(posix_memalign(&p, align, bytes) == 0)
    if hugePages { _ = madvise(p, bytes, 14 /* MADV_HUGEPAGE */) }
    return p!.bindMemory(to: Float.self, capacity: count)
}
nonisolated(unsafe) var seed: UInt64 = 0x2545_F491_4F6C_DD1D
func next() -> UInt64 { seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17; return seed }
func fill(_ p: UnsafeMutablePointer<Float>, _ count: Int, scale: Float) {
    for i in 0..<count { p[i] = scale * (Float(next() >> 40) / Float(1 << 24) - 0.5) }
}

// ---- inputs
nonisolated(unsafe) let wd1 = buffer(m * h), w2eT = buffer(m * h), phi = buffer(n * h)
fill(wd1, m * h, scale: 0.1); fill(w2eT, m * h, scale: 0.1); fill(phi, n * h, scale: 2)
// The same matrices on huge pages.
let wd1Huge = buffer(m * h, hugePages: true), w2eTHuge = buffer(m * h, hugePages: true)
wd1Huge.update(from: wd1, count: m * h); w2eTHuge.update(from: w2eT, count: m * h)
/// Where the rows come from: the two matrices, and whether every token
/// reuses token 0's indices and output slot (rows and outputs then stay in
/// cache: the compute-only speed).
struct Source: Sendable {
    nonisolated(unsafe) let wd1: UnsafeMutablePointer<Float>
    nonisolated(unsafe) let w2eT: UnsafeMutablePointer<Float>
    let hot: Bool
}
nonisolated(unsafe) let K1 = (0..<(n * k)).map { _ in Int64(next() % UInt64(m)) }
nonisolated(unsafe) let K2 = (0..<(n * k)).map { _ in Int64(next() % UInt64(m)) }
nonisolated(unsafe) let J = buffer(n * k * k), dL = buffer(chunk * k * h), dR = buffer(chunk * k * h)
nonisolated(unsafe) let coef: Float = 0.5
nonisolated(unsafe) let flopsFwd = 2.0 * Double(k * k * h), flopsAll = 6.0 * Double(k * k * h)

// ---- limits
nonisolated(unsafe) let gemmN = 1536
nonisolated(unsafe) let ga = buffer(gemmN * gemmN), gb = buffer(gemmN * gemmN), gc = buffer(gemmN * gemmN)
fill(ga, gemmN * gemmN, scale: 1); fill(gb, gemmN * gemmN, scale: 1)
nonisolated(unsafe) let tGemm = time {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(gemmN), Int32(gemmN), Int32(gemmN),
                1, ga, Int32(gemmN), gb, Int32(gemmN), 0, gc, Int32(gemmN))
}
nonisolated(unsafe) let ceiling = 2 * pow(Double(gemmN), 3) / tGemm / 1e9

// STREAM-like copy of 64 MiB (well past L3), one core; bytes = read + written.
nonisolated(unsafe) let streamN = 16 << 20
nonisolated(unsafe) let sa = buffer(streamN), sb = buffer(streamN)
fill(sa, streamN, scale: 1); fill(sb, streamN, scale: 1)
nonisolated(unsafe) let tCopy = time { memcpy(sb, sa, streamN * 4) }
nonisolated(unsafe) let copyGBs = 2.0 * Double(streamN * 4) / tCopy / 1e9
nonisolated(unsafe) let tokenBytes = Double(2 * k * h * 4 + h * 4)       // gathered rows + φ'
nonisolated(unsafe) let backwardBytes = Double(2 * k * h * 4)            // dL, dR written

// ---- today's path, per token: gather + 3 sgemms (the Swift jacobianPass body)
struct Scratch { let L, R, Jw, G: UnsafeMutablePointer<Float> }
func makeScratch() -> Scratch { Scratch(L: buffer(k * h), R: buffer(k * h), Jw: buffer(k * k), G: buffer(k * k)) }
func todayToken(_ t: Int, _ s: Scratch, backward: Bool, _ src: Source) {
    let b = src.hot ? 0 : t
    let ph = phi + b * h
    for j in 0..<k {
        (s.L + j * h).update(from: src.w2eT + Int(K2[b * k + j]) * h, count: h)
        let row = src.wd1 + Int(K1[b * k + j]) * h, dst = s.R + j * h
        for r in 0..<h { dst[r] = row[r] * ph[r] }
    }
    let Jb = J + b * k * k
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(k), Int32(k), Int32(h), 1, s.L, Int32(h), s.R, Int32(h), 0, Jb, Int32(k))
    guard backward else { return }
    for e in 0..<(k * k) { s.G[e] = Jb[e] > 0 ? coef : (Jb[e] < 0 ? -coef : 0) }
    let slot = b % chunk
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(k), Int32(h), Int32(k), 1, s.G, Int32(k), s.R, Int32(h), 0, dL + slot * k * h, Int32(h))
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(k), Int32(h), Int32(k), 1, s.G, Int32(k), s.L, Int32(h), 0, dR + slot * k * h, Int32(h))
}
nonisolated(unsafe) let scratch = [makeScratch(), makeScratch()]

// ---- the kernel, chunk by chunk into the same chunk buffers
nonisolated(unsafe) let wsCount = jsae_jacobian_workspace_floats(Int64(k), Int64(h))
nonisolated(unsafe) let workspaces = [buffer(wsCount), buffer(wsCount)]
func kernelTokens(_ range: Range<Int>, _ ws: UnsafeMutablePointer<Float>, path: jsae_kernel_path, backward: Bool, _ src: Source) {
    if src.hot {
        for _ in range {
            jsae_jacobian_token_f32(J, backward ? dL : nil, backward ? dR : nil, ws, src.wd1, src.w2eT, phi, K1, K2, coef,
                                    Int64(k), Int64(h), path)
        }
        return
    }
    var t = range.lowerBound
    while t < range.upperBound {
        let cnt = min(chunk - t % chunk, range.upperBound - t)
        K1.withUnsafeBufferPointer { k1 in K2.withUnsafeBufferPointer { k2 in
            jsae_jacobian_tokens_f32(J + t * k * k, backward ? dL + (t % chunk) * k * h : nil, backward ? dR + (t % chunk) * k * h : nil,
                                     ws, src.wd1, src.w2eT, phi + t * h, k1.baseAddress! + t * k, k2.baseAddress! + t * k, coef,
                                     Int64(cnt), Int64(k), Int64(h), path)
        } }
        t += cnt
    }
}
/// Tokens split in two halves across two threads (each its own scratch),
/// like jacobianPass's workers.
func twoThreads(_ body: @escaping @Sendable (Range<Int>, Int) -> Void) {
    DispatchQueue.concurrentPerform(iterations: 2) { w in body(w == 0 ? 0..<(n / 2) : (n / 2)..<n, w) }
}

// ---- measure
struct Row { var name: String; var fwd: Double; var all: Double; var threads: Int; var base: String }
var rows: [Row] = []
let dram = Source(wd1: wd1, w2eT: w2eT, hot: false), cached = Source(wd1: wd1, w2eT: w2eT, hot: true)
let huge = Source(wd1: wd1Huge, w2eT: w2eTHuge, hot: false)
let available = [JSAE_KERNEL_PORTABLE, JSAE_KERNEL_AVX2, JSAE_KERNEL_AVX512].filter { jsae_kernel_path_supported($0) != 0 }
let best = jsae_kernel_path_selected()
func pathName(_ p: jsae_kernel_path) -> String { String(cString: jsae_kernel_path_name(p)) }
for (label, src, paths) in [("rows from DRAM", dram, available), ("rows from cache", cached, available),
                            ("rows from DRAM, huge pages", huge, [best])] {
    let today = "today (\(label))"
    rows.append(Row(name: today,
                    fwd: time { for b in 0..<n { todayToken(b, scratch[0], backward: false, src) } },
                    all: time { for b in 0..<n { todayToken(b, scratch[0], backward: true, src) } }, threads: 1, base: today))
    for p in paths {
        rows.append(Row(name: "kernel \(pathName(p)) (\(label))",
                        fwd: time { kernelTokens(0..<n, workspaces[0], path: p, backward: false, src) },
                        all: time { kernelTokens(0..<n, workspaces[0], path: p, backward: true, src) }, threads: 1, base: today))
    }
}
rows.append(Row(name: "today (rows from DRAM), 2 threads",
                fwd: time(threads: 2) { twoThreads { r, w in for b in r { todayToken(b, scratch[w], backward: false, dram) } } },
                all: time(threads: 2) { twoThreads { r, w in for b in r { todayToken(b, scratch[w], backward: true, dram) } } },
                threads: 2, base: "today (rows from DRAM), 2 threads"))
rows.append(Row(name: "kernel \(pathName(best)) (rows from DRAM), 2 threads",
                fwd: time(threads: 2) { twoThreads { r, w in kernelTokens(r, workspaces[w], path: best, backward: false, dram) } },
                all: time(threads: 2) { twoThreads { r, w in kernelTokens(r, workspaces[w], path: best, backward: true, dram) } },
                threads: 2, base: "today (rows from DRAM), 2 threads"))

// ---- report
func f(_ x: Double, _ d: Int = 1) -> String {
    let s = String(Int((x * pow(10, Double(d))).rounded()))
    if d == 0 { return s }
    let pad = String(repeating: "0", count: max(0, d + 1 - s.count)) + s
    return String(pad.dropLast(d)) + "." + String(pad.suffix(d))
}
func pad(_ s: String, _ w: Int) -> String { s.count >= w ? s : s + String(repeating: " ", count: w - s.count) }
print("jacobian-kernel-bench: k=\(k) h=\(h) m=\(m) tokens=\(n) chunk=\(chunk), median of \(reps) after 1 warm-up; OpenBLAS core \(String(cString: openblas_get_corename()))")
print("times: thread CPU time for 1-thread rows and the limits, wall time for 2-thread rows")
print("single-core sgemm ceiling (\(gemmN)³, 1 thread): \(f(ceiling)) GFLOP/s;  STREAM-like copy, 1 core: \(f(copyGBs)) GB/s (read + write)")
print("per token: forward \(f(flopsFwd / 1e6, 2)) MFLOP, forward + backward \(f(flopsAll / 1e6, 2)) MFLOP; gathers \(f(tokenBytes / 1024, 0)) KiB read, backward writes \(f(backwardBytes / 1024, 0)) KiB")
print("")
print("| path | thr | fwd µs/token | fwd GFLOP/s | fwd+bwd µs/token | fwd+bwd GFLOP/s | share of 1-core ceiling (×thr) | speed-up vs today (same thr) | fwd+bwd DRAM GB/s (share of copy) |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows {
    let base = rows.first { $0.name == r.base }!
    let gF = flopsFwd * Double(n) / r.fwd / 1e9, gA = flopsAll * Double(n) / r.all / 1e9
    let bw = (tokenBytes + backwardBytes) * Double(n) / r.all / 1e9
    print("| \(pad(r.name, 48)) | \(r.threads) | \(f(r.fwd / Double(n) * 1e6)) | \(f(gF)) | \(f(r.all / Double(n) * 1e6)) | \(f(gA)) | \(f(100 * gA / ceiling / Double(r.threads)))% | \(f(base.all / r.all, 2))× (fwd \(f(base.fwd / r.fwd, 2))×) | \(f(bw)) (\(f(100 * bw / copyGBs, 0))%) |")
}
