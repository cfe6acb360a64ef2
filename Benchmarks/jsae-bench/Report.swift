import Foundation

/// Every figure of one run, the table a person reads and the JSON CI reads.
struct Report {
    var preset: String
    var shape: Shape
    var steps: Int
    var warmup: Int
    var ceilingGFLOPs: Double
    var saeSeconds: Double
    var jsaeSeconds: Double
    var saeStepSeconds: [Double]
    var jsaeStepSeconds: [Double]
    var phases: [(String, Double)]
    var saePhases: [(String, Double)]
    var saePeakBytes: Int
    var jsaePeakBytes: Int
    var saeAllocations: Allocations
    var jsaeAllocations: Allocations
    var fingerprint: [Double]?
    var profile: String?
    var environment: Environment

    var saeTokensPerSecond: Double { Double(shape.batch) / saeSeconds }
    var jsaeTokensPerSecond: Double { Double(shape.batch) / jsaeSeconds }
    var saeGFLOPs: Double { shape.saeFlops / saeSeconds / 1e9 }
    var jsaeGFLOPs: Double { shape.jsaeFlops / jsaeSeconds / 1e9 }
    var saeEfficiency: Double { saeGFLOPs / ceilingGFLOPs }
    var jsaeEfficiency: Double { jsaeGFLOPs / ceilingGFLOPs }
    /// The paper's hardware utilisation by the same FLOP count (Pythia-70m shape).
    static let paperShape = Shape(d: 512, dMlp: 2048, expansion: 32, k: 32, batch: 4096)
    var paperSAEUtilisation: Double {
        Self.paperShape.saeFlops / Double(Self.paperShape.batch) * Paper.saeTokensPerSecond / (Paper.rtx3090PeakTFLOPs * 1e12)
    }
    var paperJSAEUtilisation: Double {
        Self.paperShape.jsaeFlops / Double(Self.paperShape.batch) * Paper.jsaeTokensPerSecond / (Paper.rtx3090PeakTFLOPs * 1e12)
    }

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
        rows.append(["hardware utilisation (paper: of 35.6 TFLOP/s)", f(100 * saeEfficiency) + "%", f(100 * jsaeEfficiency) + "%",
                     f(100 * paperSAEUtilisation) + "% / " + f(100 * paperJSAEUtilisation) + "%"])
        rows.append(["projected time, 100M tokens", minutes(saeTokensPerSecond), minutes(jsaeTokensPerSecond), "33 min / 72 min"])
        rows.append(["JSAE / SAE time ratio", "", f(jsaeSeconds / saeSeconds, 2), "2.2"])
        rows.append(["peak resident memory", gib(saePeakBytes), gib(jsaePeakBytes), ""])
        rows.append(["heap allocations per step (largest, bytes)", saeAllocations.description, jsaeAllocations.description, ""])
        var out = "jsae-bench \(preset): d \(shape.d), d_mlp \(shape.dMlp), m \(shape.m), k \(shape.k), batch \(shape.batch); "
            + "median of \(steps) steps after \(warmup) warm-up; \(environment.packageThreads) threads\n"
        out += "in-run ceiling: sgemm \(shape.batch)×\(shape.m)×\(shape.d) = \(f(ceilingGFLOPs)) GFLOP/s\n\n"
        out += render(rows)
        out += "\n\nStep by phase (mean per step; shares of the median step):\n"
        let total = phases.reduce(0) { $0 + $1.1 }, saeTotal = saePhases.reduce(0) { $0 + $1.1 }
        var prow: [[String]] = [["phase", "SAE ms", "share", "JSAE ms", "share"]]
        for ((name, s), (_, a)) in zip(phases, saePhases) where s > 0 || a > 0 {
            prow.append([name, f(a * 1000), f(100 * a / saeSeconds) + "%", f(s * 1000), f(100 * s / jsaeSeconds) + "%"])
        }
        prow.append(["(untimed: allocation, glue)", f(max(0, saeSeconds - saeTotal) * 1000), f(100 * max(0, saeSeconds - saeTotal) / saeSeconds) + "%",
                     f(max(0, jsaeSeconds - total) * 1000), f(100 * max(0, jsaeSeconds - total) / jsaeSeconds) + "%"])
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
        var warmup: Int
        var metrics: [String: Double]
        var phasesMs: [String: Double]
        var saePhasesMs: [String: Double]
        var fingerprintLoss: [Double]?
        var profile: String?
        var environment: Environment
    }

    func json() -> JSON {
        JSON(preset: preset, shape: shape, steps: steps, warmup: warmup,
             metrics: [
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
             ],
             phasesMs: Dictionary(uniqueKeysWithValues: phases.map { ($0.0, $0.1 * 1000) }),
             saePhasesMs: Dictionary(uniqueKeysWithValues: saePhases.map { ($0.0, $0.1 * 1000) }),
             fingerprintLoss: fingerprint, profile: profile, environment: environment)
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
