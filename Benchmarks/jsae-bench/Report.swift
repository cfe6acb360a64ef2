import Foundation
import JSAECore

/// Every figure of one run, the table a person reads and the JSON CI reads.
struct Report {
    var preset: String
    var shape: Shape
    var steps: Int
    /// The single SAE's timed steps (`--sae-steps`, else `steps`).
    var saeSteps: Int
    var warmup: Int
    /// The best of every ceiling product of the run (`CeilingSpread`).
    var ceilingGFLOPs: Double
    /// The ceiling by the process's CPU clock, and the steps' median CPU
    /// seconds: the same shares measured in work rather than wall time.
    var ceilingCPUGFLOPs: Double
    /// Every ceiling product of the run, by set.
    var ceiling: CeilingSpread
    var bandwidth: Bandwidth
    var saeSeconds: Double
    var jsaeSeconds: Double
    var saeCPUSeconds: Double
    var jsaeCPUSeconds: Double
    /// With --interleave-ceiling: shares against the ceiling measured beside each step.
    var saePaired: PairedShares?
    var jsaePaired: PairedShares?
    var saeStepSeconds: [Double]
    var jsaeStepSeconds: [Double]
    var phases: [(String, Double)]
    var saePhases: [(String, Double)]
    var saePeakBytes: Int
    var jsaePeakBytes: Int
    var saeAllocations: Allocations
    var jsaeAllocations: Allocations
    var fingerprint: [Double]?
    /// Both SAEs' parameters after the JSAE's timed steps, hashed (`parameterFingerprint`).
    var parameterFingerprint: String
    var profile: String?
    var environment: Environment

    var saeTokensPerSecond: Double { Double(shape.batch) / saeSeconds }
    var jsaeTokensPerSecond: Double { Double(shape.batch) / jsaeSeconds }
    var saeGFLOPs: Double { shape.saeFlops / saeSeconds / 1e9 }
    var jsaeGFLOPs: Double { shape.jsaeFlops / jsaeSeconds / 1e9 }
    var saeEfficiency: Double { saeGFLOPs / ceilingGFLOPs }
    var jsaeEfficiency: Double { jsaeGFLOPs / ceilingGFLOPs }
    /// Shares of the ceiling by CPU time. With one thread these are the wall
    /// shares without the turns other processes take on the core; with more,
    /// OpenBLAS's spin-waiting counts as CPU time on both sides.
    var saeCPUEfficiency: Double { shape.saeFlops / saeCPUSeconds / 1e9 / ceilingCPUGFLOPs }
    var jsaeCPUEfficiency: Double { shape.jsaeFlops / jsaeCPUSeconds / 1e9 / ceilingCPUGFLOPs }
    /// The paper's hardware utilisation by the same FLOP count (Pythia-70m shape).
    static let paperShape = Shape(d: 512, dMlp: 2048, expansion: 32, k: 32, batch: 4096)
    var paperSAEUtilisation: Double {
        Self.paperShape.saeFlops / Double(Self.paperShape.batch) * Paper.saeTokensPerSecond / (Paper.rtx3090PeakTFLOPs * 1e12)
    }
    var paperJSAEUtilisation: Double {
        Self.paperShape.jsaeFlops / Double(Self.paperShape.batch) * Paper.jsaeTokensPerSecond / (Paper.rtx3090PeakTFLOPs * 1e12)
    }

    /// Each timed phase's limit (PhaseLimits.swift) beside its mean time per step.
    func limits(_ phases: [(String, Double)], pair: Bool) -> [(String, PhaseLimit)] {
        let costs = shape.phaseCosts(pair: pair)
        return phases.compactMap { name, seconds in
            guard let phase = Phase(rawValue: name), let c = costs[phase] else { return nil }
            let limit = c.limitSeconds(ceilingGFLOPs: ceilingGFLOPs, bandwidthGBs: bandwidth.gbs)
            return (name, PhaseLimit(flops: c.flops, bytes: c.bytes, limitMs: limit * 1000,
                                     bound: c.bound(ceilingGFLOPs: ceilingGFLOPs, bandwidthGBs: bandwidth.gbs),
                                     ms: seconds * 1000, overLimit: limit > 0 ? seconds / limit : nil,
                                     perTokenByteMs: c.perTokenBytes.map { $0 / (bandwidth.gbs * 1e9) * 1000 },
                                     gatherMs: c.gatherSeconds(bandwidth).map { $0 * 1000 }))
        }
    }
    var saeLimits: [(String, PhaseLimit)] { limits(saePhases, pair: false) }
    var jsaeLimits: [(String, PhaseLimit)] { limits(phases, pair: true) }
    /// The sum of the phase limits: the step's limit by the same count.
    var saeLimitSeconds: Double { saeLimits.reduce(0) { $0 + $1.1.limitMs } / 1000 }
    var jsaeLimitSeconds: Double { jsaeLimits.reduce(0) { $0 + $1.1.limitMs } / 1000 }

    func table() -> String {
        func f(_ v: Double, _ p: Int = 1) -> String { String(format: "%.\(p)f", v) }
        func minutes(_ tps: Double) -> String { f(Paper.tokens / tps / 60, 0) + " min" }
        func gib(_ b: Int) -> String { f(Double(b) / 1_073_741_824, 2) + " GiB" }
        var rows: [[String]] = [["", "single SAE", "JSAE pair", "paper (RTX 3090)"]]
        rows.append(["ms / step", f(saeSeconds * 1000), f(jsaeSeconds * 1000), ""])
        rows.append(["tokens / s", f(saeTokensPerSecond, 0), f(jsaeTokensPerSecond, 0), "\(Int(Paper.saeTokensPerSecond)) / \(Int(Paper.jsaeTokensPerSecond))"])
        rows.append(["GFLOP / step (spec count)", f(shape.saeFlops / 1e9), f(shape.jsaeFlops / 1e9), ""])
        rows.append(["GFLOP/s", f(saeGFLOPs), f(jsaeGFLOPs), ""])
        rows.append(["share of in-run sgemm ceiling", f(100 * saeEfficiency) + "%", f(100 * jsaeEfficiency) + "%", ""])
        rows.append(["share of the ceiling by CPU time", f(100 * saeCPUEfficiency) + "%", f(100 * jsaeCPUEfficiency) + "%", ""])
        if let saePaired, let jsaePaired {
            rows.append(["share of the ceiling beside each step (median)", f(100 * saePaired.wall) + "%", f(100 * jsaePaired.wall) + "%", ""])
            rows.append(["  the same by CPU time", f(100 * saePaired.cpu) + "%", f(100 * jsaePaired.cpu) + "%", ""])
        }
        rows.append(["hardware utilisation (paper: of 35.6 TFLOP/s)", f(100 * saeEfficiency) + "%", f(100 * jsaeEfficiency) + "%",
                     f(100 * paperSAEUtilisation) + "% / " + f(100 * paperJSAEUtilisation) + "%"])
        rows.append(["projected time, 100M tokens", minutes(saeTokensPerSecond), minutes(jsaeTokensPerSecond), "33 min / 72 min"])
        rows.append(["JSAE / SAE time ratio", "", f(jsaeSeconds / saeSeconds, 2), "2.2"])
        rows.append(["peak resident memory", gib(saePeakBytes), gib(jsaePeakBytes), ""])
        rows.append(["heap allocations per step (largest, bytes)", saeAllocations.description, jsaeAllocations.description, ""])
        var out = "jsae-bench \(preset): d \(shape.d), d_mlp \(shape.dMlp), m \(shape.m), k \(shape.k), batch \(shape.batch); "
            + "median of \(steps) steps\(saeSteps == steps ? "" : " (single SAE: \(saeSteps))") after \(warmup) warm-up; \(environment.packageThreads) threads; OpenBLAS core \(environment.openblasCore)\n"
        let setMedians = ["before", "beside SAE steps", "beside JSAE steps", "after"].compactMap { name in
            ceiling.setMedianGFLOPs(name).map { "\(name) \(f($0))" }
        }.joined(separator: ", ")
        out += "in-run ceiling: sgemm \(shape.batch)×\(shape.m)×\(shape.d) = \(f(ceilingGFLOPs)) GFLOP/s, the best of \(ceiling.products) products "
            + "across the run; spread: worst \(f(ceiling.worstGFLOPs)) (best/worst \(f(ceiling.bestGFLOPs / ceiling.worstGFLOPs, 2))×), "
            + "set medians: \(setMedians)\n"
        out += "in-run memory bandwidth: triad \(f(bandwidth.triadGBs)) GB/s, copy \(f(bandwidth.copyGBs)) GB/s "
            + "(\(bandwidth.arrayBytes >> 20) MiB arrays, median of \(bandwidth.reps), \(environment.packageThreads) threads)\n"
        if !bandwidth.gathers.isEmpty {
            out += "in-run gather rate (random whole rows): " + bandwidth.gathers.map {
                "\(f($0.gbs)) GB/s for rows of \($0.rowFloats) floats from [\($0.rows), \($0.rowFloats)] (\(f(Double($0.matrixBytes) / 1_048_576)) MiB)"
            }.joined(separator: ", ") + "\n"
        }
        out += "\n"
        out += render(rows)
        out += "\n\nStep by phase (mean per step; shares of the median step; limit: the phase's FLOPs at the ceiling or its bytes "
            + "at the triad bandwidth, whichever is longer; ×: time / limit; bound: what sets the JSAE limit; per-token bytes: "
            + "for the Jacobian, the bytes the per-token kernel moves, gathering and scattering each token's rows, at the same bandwidth; "
            + "gathers: the rows the JSAE phase reads at random positions, at the in-run gather rates for their source matrices):\n"
        let total = phases.reduce(0) { $0 + $1.1 }, saeTotal = saePhases.reduce(0) { $0 + $1.1 }
        let saeLim = Dictionary(uniqueKeysWithValues: saeLimits), jsaeLim = Dictionary(uniqueKeysWithValues: jsaeLimits)
        func limitCells(_ l: PhaseLimit?) -> [String] {
            guard let l, l.limitMs > 0 else { return ["", ""] }
            return [f(l.limitMs), f(l.ms / l.limitMs) + "×"]
        }
        func bound(_ l: PhaseLimit?) -> String {
            guard let l else { return "" }
            return l.bound == "flops" ? f(l.flops / 1e9, 2) + " GFLOP" : f(l.bytes / 1e6, 0) + " MB"
        }
        func perToken(_ l: PhaseLimit?) -> String {
            guard let l, let ms = l.perTokenByteMs else { return "" }
            return f(ms) + " ms (" + f(l.ms / ms) + "×)"
        }
        func gathers(_ l: PhaseLimit?) -> String {
            guard let l, let ms = l.gatherMs else { return "" }
            return f(ms) + " ms (" + f(l.ms / ms) + "×)"
        }
        var prow: [[String]] = [["phase", "SAE ms", "share", "limit", "×", "JSAE ms", "share", "limit", "×", "bound", "per-token bytes", "gathers"]]
        for ((name, s), (_, a)) in zip(phases, saePhases) where s > 0 || a > 0 {
            prow.append([name, f(a * 1000), f(100 * a / saeSeconds) + "%"] + limitCells(saeLim[name])
                        + [f(s * 1000), f(100 * s / jsaeSeconds) + "%"] + limitCells(jsaeLim[name]) + [bound(jsaeLim[name]), perToken(jsaeLim[name]), gathers(jsaeLim[name])])
        }
        prow.append(["(untimed: allocation, glue)", f(max(0, saeSeconds - saeTotal) * 1000), f(100 * max(0, saeSeconds - saeTotal) / saeSeconds) + "%", "", "",
                     f(max(0, jsaeSeconds - total) * 1000), f(100 * max(0, jsaeSeconds - total) / jsaeSeconds) + "%", "", "", "", "", ""])
        prow.append(["step (median) vs sum of limits", f(saeSeconds * 1000), "", f(saeLimitSeconds * 1000), f(saeSeconds / saeLimitSeconds) + "×",
                     f(jsaeSeconds * 1000), "", f(jsaeLimitSeconds * 1000), f(jsaeSeconds / jsaeLimitSeconds) + "×", "", "", ""])
        out += render(prow)
        return out
    }

    func render(_ rows: [[String]]) -> String {
        let widths = (0..<rows[0].count).map { c in rows.map { $0[c].count }.max()! }
        return rows.enumerated().map { i, r in
            let line = r.enumerated().map { c, cell in
                c == 0 ? cell.padding(toLength: widths[c], withPad: " ", startingAt: 0)
                       : String(repeating: " ", count: widths[c] - cell.count) + cell
            }.joined(separator: "  ")
            return i == 0 ? line + "\n" + String(repeating: "-", count: line.count) : line
        }.joined(separator: "\n")
    }

    struct JSON: Codable {
        var preset: String
        var shape: Shape
        var steps: Int
        var saeSteps: Int
        var warmup: Int
        var metrics: [String: Double]
        var phasesMs: [String: Double]
        var saePhasesMs: [String: Double]
        var phaseLimits: [String: PhaseLimit]
        var saePhaseLimits: [String: PhaseLimit]
        var bandwidth: Bandwidth
        var saePaired: PairedShares?
        var jsaePaired: PairedShares?
        var fingerprintLoss: [Double]?
        var parameterFingerprint: String
        var profile: String?
        var environment: Environment
    }

    var metrics: [String: Double] {
        [
                "ceiling_gflops": ceilingGFLOPs,
                "sae_ms_per_step": saeSeconds * 1000, "jsae_ms_per_step": jsaeSeconds * 1000,
                "sae_tokens_per_s": saeTokensPerSecond, "jsae_tokens_per_s": jsaeTokensPerSecond,
                "sae_gflops": saeGFLOPs, "jsae_gflops": jsaeGFLOPs,
                "sae_efficiency": saeEfficiency, "jsae_efficiency": jsaeEfficiency,
                "jsae_over_sae_time": jsaeSeconds / saeSeconds,
                "sae_projected_minutes_100m": Paper.tokens / saeTokensPerSecond / 60,
                "jsae_projected_minutes_100m": Paper.tokens / jsaeTokensPerSecond / 60,
                "paper_sae_utilisation": paperSAEUtilisation, "paper_jsae_utilisation": paperJSAEUtilisation,
                "sae_peak_bytes": Double(saePeakBytes), "jsae_peak_bytes": Double(jsaePeakBytes),
                "sae_allocations_per_step": Double(saeAllocations.perStep), "jsae_allocations_per_step": Double(jsaeAllocations.perStep),
                "sae_largest_allocation_bytes": Double(saeAllocations.largest),
                "jsae_largest_allocation_bytes": Double(jsaeAllocations.largest),
                "ceiling_cpu_gflops": ceilingCPUGFLOPs,
                "ceiling_median_gflops": ceiling.medianGFLOPs, "ceiling_worst_gflops": ceiling.worstGFLOPs,
                "ceiling_best_over_worst": ceiling.bestGFLOPs / ceiling.worstGFLOPs,
                "sae_cpu_ms_per_step": saeCPUSeconds * 1000, "jsae_cpu_ms_per_step": jsaeCPUSeconds * 1000,
                "sae_cpu_efficiency": saeCPUEfficiency, "jsae_cpu_efficiency": jsaeCPUEfficiency,
                "bandwidth_gbs": bandwidth.triadGBs, "bandwidth_copy_gbs": bandwidth.copyGBs,
                "sae_limit_ms_per_step": saeLimitSeconds * 1000, "jsae_limit_ms_per_step": jsaeLimitSeconds * 1000,
                "sae_over_limit": saeSeconds / saeLimitSeconds, "jsae_over_limit": jsaeSeconds / jsaeLimitSeconds,
        ]
    }

    func json() -> JSON {
        var metrics = self.metrics
        if let saePaired, let jsaePaired {
            metrics["sae_paired_efficiency"] = saePaired.wall; metrics["jsae_paired_efficiency"] = jsaePaired.wall
            metrics["sae_paired_cpu_efficiency"] = saePaired.cpu; metrics["jsae_paired_cpu_efficiency"] = jsaePaired.cpu
        }
        return JSON(preset: preset, shape: shape, steps: steps, saeSteps: saeSteps, warmup: warmup,
             metrics: metrics,
             phasesMs: Dictionary(uniqueKeysWithValues: phases.map { ($0.0, $0.1 * 1000) }),
             saePhasesMs: Dictionary(uniqueKeysWithValues: saePhases.map { ($0.0, $0.1 * 1000) }),
             phaseLimits: Dictionary(uniqueKeysWithValues: jsaeLimits), saePhaseLimits: Dictionary(uniqueKeysWithValues: saeLimits),
             bandwidth: bandwidth, saePaired: saePaired, jsaePaired: jsaePaired,
             fingerprintLoss: fingerprint, parameterFingerprint: parameterFingerprint, profile: profile, environment: environment)
    }
}

/// Heap allocations inside timed steps (tcmalloc's hook): the most in any
/// one step, and the largest single request. A step's buffers live in its
/// workspace, so an optimised build allocates nothing here.
struct Allocations {
    var perStep: UInt64 = 0
    var largest: UInt64 = 0
    var description: String { "\(perStep) (\(largest))" }
}
