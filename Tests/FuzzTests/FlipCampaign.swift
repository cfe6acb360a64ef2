import CHDF5
import Foundation
import Testing
import JSAECore
import JSAEIO
import _JSAETestSupport

/// Counts of outcomes, by class, and the first few failures in full.
struct Tally: CustomStringConvertible {
    var counts: [String: Int] = [:]
    var failures: [String] = []
    mutating func add(_ key: String, failure: String? = nil) {
        counts[key, default: 0] += 1
        if let failure, failures.count < 20 { failures.append(failure) }
    }
    var total: Int { counts.values.reduce(0, +) }
    var bad: Int { failures.count }
    var description: String {
        counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
    }
}

/// Classifies one outcome. Good outcomes: a one-line refusal (exit 2) that
/// names the file, with HDF5's own crashes (turned into such a line by the
/// executables' guard) counted apart; or success that `verify` accepts.
/// Anything else (a signal, a hang, another status, several lines, a
/// refusal naming no file, an input changed) is a failure.
func classify(_ o: Outcome, file: String, what: String, inputsChanged: [String], tally: inout Tally,
              verify: () -> String?) {
    if !inputsChanged.isEmpty { tally.add("inputs changed", failure: "\(what): changed \(inputsChanged)"); return }
    if o.signalled { tally.add("signal", failure: "\(what): \(o)"); return }
    if o.timedOut {
        // A run still reporting progress when killed is not hung: it trains
        // for as many steps as the (damaged but plausible) total_steps says,
        // which no check can tell from a real one. Counted apart.
        let progress = o.lines.filter { $0.hasPrefix("step ") }.count
        if progress >= 2 { tally.add("ran on as total_steps says (killed at the time limit)") }
        else { tally.add("hang", failure: "\(what): \(o)") }
        return
    }
    if o.status == 3 {
        // Divergence, as `jsae train` reports it: one error line naming the
        // last good checkpoint (a damaged but finite value can blow up).
        let errors = o.lines.filter { $0.contains(": error: ") }
        if errors.count == 1, o.lines.last?.contains(": error: ") == true, o.stderr.contains(file) {
            tally.add("diverged (exit 3, one line naming the checkpoint)")
        } else { tally.add("unclear error", failure: "\(what): \(o)") }
        return
    }
    if o.status == 2 {
        // One error line, the last; before it only training's progress lines.
        let progress = o.lines.dropLast().allSatisfy { $0.hasPrefix("resuming from ") || $0.hasPrefix("step ") || $0.hasPrefix("removed ") }
        guard progress, o.lines.last?.contains(": error: ") == true,
              o.stderr.contains(file) || o.stderr.contains((file as NSString).lastPathComponent) else {
            tally.add("unclear error", failure: "\(what): \(o)"); return
        }
        tally.add(o.stderr.contains(" crashed (") ? "refused (HDF5 crashed, guarded)" : "refused")
        return
    }
    if o.status == 0 {
        if let problem = verify() { tally.add("wrong result", failure: "\(what): \(problem)") } else { tally.add("accepted, correct") }
        return
    }
    tally.add("other status", failure: "\(what): \(o)")
}

/// A pair, activations, a forward file of the original model, and a short
/// training run with checkpoints: what the campaigns corrupt.
struct FlipFixture {
    let dir: String
    let model: String, acts: String, baseline: String
    let runTemplate: String
    let original: JSAEModel<Double>

    init(seed: UInt64) throws {
        dir = temporaryDirectory("jsae-fuzz")
        let f = try pairFixture(dir, tokens: 64, seed: seed)
        model = f.model; acts = f.acts; original = f.modelValue
        baseline = dir + "/baseline.h5"
        let b = try jsae(["forward", "--model", model, "--activations", acts, "--out", baseline, "--precision", "double"])
        expectSuccess(b, "baseline forward")
        runTemplate = dir + "/run"
        try runStoppedAtStep2(runTemplate, acts: acts)
    }

    var checkpoint: String { runTemplate + "/checkpoint-000000002.h5" }

    /// `jsae forward` on a corrupted copy of the model (and `jsae inspect`).
    func forwardOnCorruptModel(_ corrupt: String, label: String, tally: inout Tally) throws {
        let work = dir + "/w-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let bad = work + "/model.h5", out = work + "/fw.h5"
        try FileManager.default.moveItem(atPath: corrupt, toPath: bad)
        let before = snapshot(dir)
        let o = try jsae(["forward", "--model", bad, "--activations", acts, "--out", out, "--precision", "double"], timeout: 60)
        classify(o, file: bad, what: "forward \(label)", inputsChanged: changedFiles(before, snapshot(dir), allowed: ["w-" + work.suffix(8) + "/fw.h5"]),
                 tally: &tally) { verifyForward(bad, out) }
        let i = try jsae(["inspect", bad], timeout: 60)
        classify(i, file: bad, what: "inspect \(label)", inputsChanged: [], tally: &tally) {
            i.stdout.hasPrefix(bad + ": kind") ? nil : "inspect printed no header: \(i.stdout.prefix(200))"
        }
    }

    /// Success must be right: when the corrupted file still holds the same
    /// model (the flip hit bytes nothing reads), the output must be
    /// bit-identical to the baseline; otherwise it must be a complete,
    /// finite forward file for the model as the file now reads.
    func verifyForward(_ modelPath: String, _ out: String) -> String? {
        do {
            let got = try ForwardFile<Double>(out, as: Double.self)
            let m: JSAEModel<Double> = try ModelFile.read(modelPath, mlpFallback: try ActivationsReader(acts).file)
            let same = m.k == original.k && m.saeIn.wEnc.data == original.saeIn.wEnc.data && m.saeIn.wDec.data == original.saeIn.wDec.data
                && m.saeIn.bEnc == original.saeIn.bEnc && m.saeIn.bDec == original.saeIn.bDec
                && m.saeOut?.wEnc.data == original.saeOut?.wEnc.data && m.saeOut?.wDec.data == original.saeOut?.wDec.data
                && m.saeOut?.bEnc == original.saeOut?.bEnc && m.saeOut?.bDec == original.saeOut?.bDec
                && m.mlp?.wIn.data == original.mlp?.wIn.data && m.mlp?.wOut.data == original.mlp?.wOut.data
                && m.mlp?.bIn == original.mlp?.bIn && m.mlp?.bOut == original.mlp?.bOut && m.mlp?.activation == original.mlp?.activation
            if same {
                let want = try ForwardFile<Double>(baseline, as: Double.self)
                guard got.inIndices == want.inIndices, got.xHat.data == want.xHat.data, got.jacobian == want.jacobian,
                      got.loss == want.loss else { return "same model, different output than the baseline" }
                return nil
            }
            guard got.inIndices.count == 64 * m.k, got.xHat.data.allSatisfy({ $0.isFinite }), got.loss.isFinite else {
                return "incomplete or non-finite output for the changed model"
            }
            return nil
        } catch {
            return "exit 0 but: \(error)"
        }
    }

    /// `jsae train --resume` on a copy of the run whose step-2 checkpoint is
    /// corrupted: refused naming the checkpoint, or finished with a model.
    func resumeOnCorruptCheckpoint(_ mutate: (String) throws -> Void, label: String, tally: inout Tally) throws {
        let run = dir + "/r-\(UUID().uuidString.prefix(8))"
        try FileManager.default.copyItem(atPath: runTemplate, toPath: run)
        defer { try? FileManager.default.removeItem(atPath: run) }
        let cp = run + "/checkpoint-000000002.h5"
        try mutate(cp)
        let before = snapshot(dir).filter { !$0.key.hasPrefix("r-") }
        let o = try jsae(["train", "--resume", run], timeout: 60)
        // Refusals may name the corrupt checkpoint or the run folder.
        classify(o, file: run, what: "resume \(label)", inputsChanged: changedFiles(before, snapshot(dir)), tally: &tally) {
            do {
                let m: JSAEModel<Double> = try ModelFile.read(run + "/model.h5")
                return m.saeIn.wEnc.data.allSatisfy { $0.isFinite } ? nil : "non-finite model.h5"
            } catch { return "exit 0 but model.h5: \(error)" }
        }
    }
}

/// Values a hostile file might hold where a number or a name is expected.
func hostileValue(_ r: inout FuzzRandom) -> AttributeValue {
    let doubles: [Double] = [.nan, .infinity, -.infinity, 1e300, -1e300, 2.5, -0.0, 9.3e18, 1e-320, 4.0, 0]
    let ints: [Int] = [0, -1, 1, 2, 3, Int.max, Int.min, 1 << 40, -(1 << 62), 1_000_000_000]
    let strings = ["", "float", "double", "gelu", "model", "checkpoint", "\u{0}", String(repeating: "x", count: 5000), "ü∞"]
    switch r.below(3) {
    case 0: return .double(doubles[r.below(doubles.count)])
    case 1: return .int(ints[r.below(ints.count)])
    default: return .string(strings[r.below(strings.count)])
    }
}

let modelAttributes = ["format_version", "kind", "k", "activation"]
let checkpointAttributes = ["format_version", "kind", "k", "step", "total_steps", "seed", "lr", "lambda", "batch",
                            "lr_warmup_fraction", "lr_decay_fraction", "lambda_warmup_fraction", "clip_norm",
                            "evaluation_point", "single", "jacobian_chunk", "adam_beta1", "adam_beta2", "adam_eps",
                            "precision", "shuffle_buffer_tokens", "activations_tokens", "activations_fingerprint"]

/// Runs `flips` byte flips of the model and of a checkpoint, and
/// `attributes` random attribute values on each, with seed `seed`.
func runCampaign(seed: UInt64, modelFlips: Int, checkpointFlips: Int, attributes: Int) throws -> Tally {
    let fx = try FlipFixture(seed: seed)
    defer { try? FileManager.default.removeItem(atPath: fx.dir) }
    var r = FuzzRandom(state: seed)
    var tally = Tally()
    let modelSize = try Data(contentsOf: URL(fileURLWithPath: fx.model)).count
    for i in 0..<modelFlips {
        let off = r.below(modelSize), mask = UInt8(1 + r.below(255))
        let c = fx.dir + "/flip-\(i).h5"
        try flipped(fx.model, to: c, offset: off, mask: mask)
        try fx.forwardOnCorruptModel(c, label: "model byte \(off) ^ \(mask)", tally: &tally)
    }
    let cpSize = try Data(contentsOf: URL(fileURLWithPath: fx.checkpoint)).count
    for _ in 0..<checkpointFlips {
        let off = r.below(cpSize), mask = UInt8(1 + r.below(255))
        try fx.resumeOnCorruptCheckpoint({ cp in try flipped(cp, to: cp, offset: off, mask: mask) },
                                         label: "checkpoint byte \(off) ^ \(mask)", tally: &tally)
    }
    for i in 0..<attributes {
        let name = modelAttributes[r.below(modelAttributes.count)], v = hostileValue(&r)
        let c = fx.dir + "/attr-\(i).h5"
        try FileManager.default.copyItem(atPath: fx.model, toPath: c)
        try setAttribute(c, name, v)
        try fx.forwardOnCorruptModel(c, label: "model @\(name) = \(String(describing: v).prefix(40))", tally: &tally)
        let cname = checkpointAttributes[r.below(checkpointAttributes.count)], cv = hostileValue(&r)
        try fx.resumeOnCorruptCheckpoint({ cp in try setAttribute(cp, cname, cv) },
                                         label: "checkpoint @\(cname) = \(String(describing: cv).prefix(40))", tally: &tally)
    }
    return tally
}

/// The HDF5 library's version, for the campaign's record.
let hdf5Version: String = {
    var a: UInt32 = 0, b: UInt32 = 0, c: UInt32 = 0
    H5get_libversion(&a, &b, &c)
    return "\(a).\(b).\(c)"
}()

@Suite("Fuzz campaign (long; run by ci/fuzz-campaign.sh, not by CI)")
struct FuzzCampaign {
    static let iterations = Int(ProcessInfo.processInfo.environment["JSAE_FUZZ_CAMPAIGN"] ?? "") ?? 0

    @Test("thousands of byte flips and hostile attribute values", .enabled(if: iterations > 0, "set JSAE_FUZZ_CAMPAIGN=N to run"))
    func campaign() throws {
        let n = Self.iterations
        let seed = UInt64(ProcessInfo.processInfo.environment["JSAE_FUZZ_SEED"] ?? "") ?? 20261128
        let start = Date()
        let tally = try runCampaign(seed: seed, modelFlips: n, checkpointFlips: n / 2, attributes: n / 4)
        let line = "seed \(seed), \(tally.total) runs in \(Int(Date().timeIntervalSince(start))) s: \(tally)"
        print("fuzz campaign: " + line)
        for f in tally.failures { print("  failure: " + f) }
        if let path = ProcessInfo.processInfo.environment["JSAE_FUZZ_REPORT"] {
            try (line + "\ncommand: bash ci/fuzz-campaign.sh \(n) \(seed)   (HDF5 \(hdf5Version))\n" + tally.failures.map { "failure: " + $0 }.joined(separator: "\n") + "\n")
                .write(toFile: path, atomically: true, encoding: .utf8)
        }
        #expect(tally.failures.isEmpty, "\(tally.failures.joined(separator: "\n"))")
    }
}
