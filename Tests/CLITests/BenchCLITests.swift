import Foundation
import Testing
import JSAEIO
import JSAECore
import _JSAETestSupport

/// Functional checks of jsae-bench on a tiny shape: what it reports and how
/// it derives it. Nothing here is timed or compared with a speed.
@Suite("jsae-bench")
struct BenchCLITests {
    static let tiny = ["--d", "16", "--d-mlp", "24", "--expansion", "2", "--k", "4", "--batch", "64",
                       "--steps", "3", "--warmup", "0", "--no-profile"]

    @Test("--json carries every figure, derived consistently, and the golden fingerprint")
    func json() throws {
        let dir = temporaryDirectory()
        let r = try jsae(["--preset", "ci", "--json", dir + "/b.json"] + Self.tiny, binary: builtExecutable("jsae-bench"))
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("share of in-run sgemm ceiling") && r.stdout.contains("33 min / 72 min"))
        let obj = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/b.json"))) as! [String: Any]
        let m = obj["metrics"] as! [String: Double]
        for key in ["ceiling_gflops", "sae_ms_per_step", "jsae_ms_per_step", "sae_tokens_per_s", "jsae_tokens_per_s",
                    "sae_efficiency", "jsae_efficiency", "jsae_over_sae_time", "sae_peak_bytes", "jsae_peak_bytes",
                    "paper_sae_utilisation", "paper_jsae_utilisation", "sae_projected_minutes_100m"] {
            #expect(m[key] != nil, "missing \(key)")
        }
        // The spec's FLOP count for d 16, d_mlp 24, m 32, k 4, B 64 (2 FLOPs per MAC).
        let (B, d, h, mm, k) = (64.0, 16.0, 24.0, 32.0, 4.0)
        let jsaeFlops = 4 * B * d * mm + 4 * B * d * h + 4 * mm * d * h + 6 * B * k * k * h + 4 * mm * d * h
        #expect(abs(m["jsae_gflops"]! * m["jsae_ms_per_step"]! / 1000 * 1e9 - jsaeFlops) < 1e-6 * jsaeFlops)
        #expect(abs(m["jsae_efficiency"]! - m["jsae_gflops"]! / m["ceiling_gflops"]!) < 1e-12)
        // The ceiling is the best product of the run; its spread is reported beside it.
        let (best, med, worst) = (m["ceiling_gflops"]!, m["ceiling_median_gflops"]!, m["ceiling_worst_gflops"]!)
        #expect(best >= med && med >= worst && worst > 0, "ceiling best \(best), median \(med), worst \(worst)")
        #expect(abs(m["ceiling_best_over_worst"]! - best / worst) < 1e-9 * best / worst)
        #expect(r.stdout.contains("the best of 10 products across the run") && r.stdout.contains("set medians: before"), "\(r.stdout)")
        #expect(abs(m["jsae_tokens_per_s"]! - B / (m["jsae_ms_per_step"]! / 1000)) < 1e-6 * m["jsae_tokens_per_s"]!)
        // The paper's utilisation by the same count: 84 MFLOP/token · 23.1k tok/s / 35.6 TFLOP/s.
        #expect(abs(m["paper_jsae_utilisation"]! - 343.597383680e9 / 4096 * 23_100 / 35.6e12) < 1e-9)
        // The fingerprint is the golden run's loss curve, in Float.
        let fp = obj["fingerprintLoss"] as! [Double]
        let golden: [Double] = try HDF5File.open(packageRoot + "/golden/train/final.h5").readVector("/golden/curve/loss")
        // Float vs the float64 reference over 20 steps: measured within 3e-6 relative.
        #expect(allClose(fp, golden, rtol: 1e-4, atol: 1e-6))
        let env = obj["environment"] as! [String: Any]
        #expect((env["openblasCore"] as? String)?.isEmpty == false && (env["cores"] as? Int ?? 0) >= 1)
        // The gather rates at the step's shapes (W_dec's rows of d from [m, d],
        // B·k reads; the tokens' rows of d from [B, d], 2·B·k; wd1's and
        // w2eᵀ's rows of d_mlp from [2m, d_mlp], B·2k), and the floors derived
        // from them: the rows each phase's code reads at random (decode and
        // its backward, which stream W_dec's rows in latent order: a row of
        // x̂, of dL/dx̂ and of the input per pair, all from [B, d], in each
        // SAE; the Jacobian: 2k rows per token gathered, 2k scattered).
        let gathers = (obj["bandwidth"] as! [String: Any])["gathers"] as! [[String: Any]]
        #expect(gathers.map { $0["rows"] as! Int } == [32, 64, 64])
        #expect(gathers.map { $0["rowFloats"] as! Int } == [16, 16, 24])
        #expect(gathers.map { $0["matrixBytes"] as! Int } == [32 * 16 * 4, 64 * 16 * 4, 64 * 24 * 4])
        #expect(gathers.map { $0["reads"] as! Int } == [64 * 4, 2 * 64 * 4, 64 * 8])
        let rate = gathers.map { $0["gbs"] as! Double }
        #expect(rate.allSatisfy { $0 > 0 && $0.isFinite }, "\(rate)")
        let limits = obj["phaseLimits"] as! [String: [String: Any]]
        func gatherMs(_ phase: String) -> Double { limits[phase]?["gatherMs"] as? Double ?? -1 }
        let decode = 2 * (3 * 4 * B * k * d / rate[1])
        for (phase, seconds) in [("sparse decode + recon backward", decode / 1e9),
                                 ("Jacobian forward", 4 * 2 * B * k * h / rate[2] / 1e9),
                                 ("Jacobian backward", 4 * 2 * B * k * h / rate[2] / 1e9)] {
            let expected = seconds * 1000
            #expect(abs(gatherMs(phase) - expected) < 1e-9 * expected, "\(phase): \(gatherMs(phase)) against \(expected)")
        }
        #expect(limits["TopK selection"]?["gatherMs"] == nil)
    }

    /// OpenBLAS 0.3.21 sends some CPUs newer than it to its SSE3 (Prescott)
    /// kernels; the executables then start again on the kernels the CPU's
    /// features call for, and keep any other choice. What OpenBLAS chooses
    /// by itself is read in this (test) process, which never starts again;
    /// the flags come from /proc/cpuinfo, read here.
    @Test("The executable replaces OpenBLAS's Prescott fallback on a CPU with AVX, keeps its other choices, and keeps a set OPENBLAS_CORETYPE")
    func openblasCore() throws {
        let bench = builtExecutable("jsae-bench")
        var env = ProcessInfo.processInfo.environment
        let ownChoice = env["OPENBLAS_CORETYPE"] == nil ? BLASThreads.coreName : nil
        env["OPENBLAS_CORETYPE"] = nil; env["OPENBLAS_VERBOSE"] = nil; env["CPUPROFILE"] = nil
        let chosen = try jsae(["--print-openblas-core"], binary: bench, environment: env)
        #expect(chosen.status == 0 && chosen.stderr.isEmpty, "\(chosen.stderr)")
        let core = chosen.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let info = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        let flags = Set(info.split(separator: "\n").first { $0.hasPrefix("flags") }?.split(separator: " ") ?? [])
        if flags.contains("avx") { #expect(core != "Prescott", "core \(core) on a CPU with AVX") }
        if let ownChoice {
            if ownChoice != "Prescott" {
                #expect(core == ownChoice, "OpenBLAS chose \(ownChoice), the executable ran \(core)")
            } else if ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "abm", "movbe"]
                        .allSatisfy({ flags.contains($0) }) {
                // Every extension -march=skylake-avx512 compiles OpenBLAS's SkylakeX kernels for.
                #expect(core == "SkylakeX", "Prescott fallback on an AVX-512 CPU replaced by \(core)")
            }
        }
        // Prescott runs on every x86-64 CPU; the user's choice is kept, even this one.
        var forcedEnv = env
        forcedEnv["OPENBLAS_CORETYPE"] = "Prescott"
        let forced = try jsae(["--print-openblas-core"], binary: bench, environment: forcedEnv)
        #expect(forced.status == 0 && forced.stdout == "Prescott\n", "\(forced.stdout) \(forced.stderr)")
        // Under gperftools' CPUPROFILE an exec would rename the profile: no
        // start again, one line that says why, and the run goes on.
        var profiledEnv = env
        profiledEnv["CPUPROFILE"] = temporaryDirectory() + "/p.prof"
        let profiled = try jsae(["--print-openblas-core"], binary: bench, environment: profiledEnv)
        #expect(profiled.status == 0 && !profiled.stdout.isEmpty, "\(profiled.stdout) \(profiled.stderr)")
        let notes = profiled.stderr.split(separator: "\n").filter { $0.contains("note:") }
        if ownChoice == "Prescott" && flags.contains("avx") {
            #expect(profiled.stdout == "Prescott\n" && notes.count == 1 && notes[0].contains("CPUPROFILE is set"), "\(profiled.stderr)")
        } else {
            #expect(notes.isEmpty, "\(profiled.stderr)")
        }
    }

    /// A step's buffers live in its run's workspace, so once the workspace
    /// exists a step allocates nothing: counted through tcmalloc's hook over
    /// every timed step after one warm-up step (one-time type metadata and
    /// the first-touch copy of the state), in this (debug) build. One thread: with two, the
    /// parallel-for's closure conversion still costs a few 32-byte
    /// allocations per step, and OpenBLAS's threaded gemm allocates its own
    /// job arrays (see README, "Benchmark").
    @Test("A training step allocates nothing once its workspace exists", arguments: ["64", "160"])
    func noAllocation(_ batch: String) throws {
        let dir = temporaryDirectory()
        func allocations(_ extra: [String]) throws -> (sae: Double, jsae: Double) {
            let args = ["--json", dir + "/b.json", "--threads", "1", "--no-fingerprint"] + Self.tiny + ["--batch", batch, "--warmup", "1"] + extra
            let r = try jsae(args, binary: builtExecutable("jsae-bench"))
            #expect(r.status == 0, "\(r.stderr)")
            let obj = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/b.json"))) as! [String: Any]
            let m = obj["metrics"] as! [String: Double]
            return (m["sae_allocations_per_step"] ?? -1, m["jsae_allocations_per_step"] ?? -1)
        }
        let clean = try allocations([])
        #expect(clean.sae == 0 && clean.jsae == 0, "allocations per step: SAE \(clean.sae), JSAE \(clean.jsae)")
        // The counter counts: three arrays allocated inside each timed step are seen.
        let injected = try allocations(["--inject-allocations", "3"])
        #expect(injected.sae >= 3 && injected.jsae >= 3, "injected allocations not counted: \(injected)")
    }

    @Test("bad input gives one line and exit 2")
    func badInput() throws {
        let r = try jsae(["--activations", "/nonexistent/a.h5"] + Self.tiny, binary: builtExecutable("jsae-bench"))
        #expect(r.status == 2 && r.stderr.contains("/nonexistent/a.h5: no such file"), "\(r.stderr)")
        let k = try jsae(["--k", "99"] + Self.tiny.filter { $0 != "--k" && $0 != "4" }, binary: builtExecutable("jsae-bench"))
        #expect(k.status == 2 && k.stderr.contains("k = 99 must be between 1 and m = expansion 2 × d 16 = 32"), "\(k.stderr)")
        // An output path in a missing folder is refused before the benchmark runs (no ceiling line is logged).
        let dir = temporaryDirectory()
        for flags in [["--json", dir + "/missing/b.json"], ["--profile-path", dir + "/missing/p.prof"]] {
            let o = try jsae(flags + Self.tiny.filter { $0 != "--no-profile" }, binary: builtExecutable("jsae-bench"))
            #expect(o.status == 2 && o.stderr.contains(dir + "/missing") && !o.stderr.contains("ceiling:")
                    && o.stderr.split(separator: "\n").count == 1, "\(flags): \(o.stderr)")
        }
    }
}
