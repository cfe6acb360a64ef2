import Foundation
import Testing
import JSAECore
import JSAEIO
import _JSAETestSupport

/// 48 tokens of d = 6 with a gelu MLP inside the activations file.
func trainData(_ dir: String, rows: Int = 48, bad: Bool = false) throws -> String {
    let (model, _) = randomModel(PairShape(d: 6, dMlp: 10, mIn: 12, mOut: 12, k: 3, tokens: 1), seed: 101)
    var g = SeededGenerator(seed: 102)
    var x = g.matrix(rows, 6)
    if bad { for c in 0..<6 { x[rows - 1, c] = 1e30 } }
    let path = dir + "/acts.h5"
    try writeActivations(x, to: path, mlp: model.mlp!)
    return path
}

let smallRun = ["--expansion", "2", "--k", "3", "--batch", "4", "--lr", "0.01", "--seed", "5", "--buffer-batches", "3"]

func models(_ a: String, _ b: String) throws -> Bool {
    let ma: JSAEModel<Float> = try ModelFile.read(a), mb: JSAEModel<Float> = try ModelFile.read(b)
    return ma.saeIn == mb.saeIn && ma.saeOut == mb.saeOut
}

@Suite("jsae train")
struct TrainCLITests {
    @Test("trains, logs progress on stderr, writes model.h5 and a checkpoint")
    func happyPath() throws {
        let dir = temporaryDirectory()
        let acts = try trainData(dir)
        let r = try jsae(["train", "--activations", acts, "--out", dir + "/run", "--steps", "30", "--log-every", "10"] + smallRun)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("trained 30 steps (120 tokens)"))
        let lines = r.stderr.split(separator: "\n").filter { $0.hasPrefix("step ") }
        #expect(lines.count == 3)
        for key in ["tok/s", "loss", "mse_in", "mse_out", "jac", "ev_in", "ev_out", "L0", "|J|>0.01", "dead", "lr", "λ"] {
            #expect(lines[0].contains(key), "progress line lacks \(key): \(lines[0])")
        }
        let f = try HDF5File.open(dir + "/run/model.h5")
        #expect(try f.stringAttribute("kind") == "model" && f.exists("/sae_out/W_enc") && f.exists("/mlp/W_in"))
        let cp = try HDF5File.open(CheckpointFile.path(in: dir + "/run", step: 30))
        #expect(try cp.stringAttribute("kind") == "checkpoint" && cp.exists("/optimizer/sae_out/W_dec/v"))
        #expect(try cp.intAttribute("step") == 30 && cp.intAttribute("total_steps") == 30)
        // λ defaults to the paper's rule 0.5·k²/d = 0.5·9/6.
        #expect(try cp.doubleAttribute("lambda") == 0.75)
    }

    @Test("held-out documents and special-token rows are never trained on unless asked for, and a resume keeps the same rows")
    func heldOutAndSpecialRows() throws {
        let dir = temporaryDirectory()
        let (model, _) = randomModel(PairShape(d: 6, dMlp: 10, mIn: 12, mOut: 12, k: 3, tokens: 1), seed: 101)
        var g = SeededGenerator(seed: 102)
        var x = g.matrix(48, 6)
        // Poison a held-out row and a special-token row: training on either fails.
        for c in 0..<6 { x[40, c] = .nan; x[17, c] = 1e30 }
        let acts = dir + "/acts.h5"
        try writeActivations(x, to: acts, mlp: model.mlp!)
        let f = try HDF5File.openForUpdate(acts)
        try f.setAttribute("heldout_start_row", .int(36))
        try f.writeInts("/text/special", shape: [48], (0..<48).map { $0 % 12 == 5 ? 1 : 0 })   // rows 5, 17, 29, 41
        try f.finish()
        let common = ["--steps", "20", "--checkpoint-every", "10"] + smallRun
        let ok = try jsae(["train", "--activations", acts, "--out", dir + "/ok"] + common)
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(ok.stderr.contains("(33 of its 48 rows: the training documents before row 36, special-token rows left out)"), "\(ok.stderr)")
        let cp = try HDF5File.open(CheckpointFile.latest(in: dir + "/ok")!)
        #expect(try cp.intAttribute("training_rows_end") == 36 && cp.intAttribute("training_excludes_special") == 1)

        let special = try jsae(["train", "--activations", acts, "--out", dir + "/special", "--include-special"] + common)
        #expect(special.status == 3, "\(special.stderr)")     // row 17 overflows float: the run diverges
        let all = try jsae(["train", "--activations", acts, "--out", dir + "/all", "--rows", "all"] + common)
        #expect(all.status == 2 && all.stderr.contains("NaN at row 40"), "\(all.stderr)")

        // Resume from step 10: the same rows, so the same parameters.
        try FileManager.default.copyItem(atPath: dir + "/ok", toPath: dir + "/cut")
        try FileManager.default.removeItem(atPath: dir + "/cut/model.h5")
        try FileManager.default.removeItem(atPath: CheckpointFile.path(in: dir + "/cut", step: 20))
        let resumed = try jsae(["train", "--resume", dir + "/cut"])
        #expect(resumed.status == 0 && resumed.stderr.contains("at step 10/20"), "\(resumed.stderr)")
        #expect(try models(dir + "/ok/model.h5", dir + "/cut/model.h5"))
    }

    /// A 3000-step run trained whole in dir/full and again in dir/cut, where
    /// `signal` stops it once its output shows `logged`; the cut run's last
    /// checkpoint and its step.
    private func trainWholeAndCut(_ signal: Int32, checkpointEvery: Int, logged: String) throws
        -> (dir: String, process: Process, seen: String, checkpoint: String, step: Int) {
        let dir = temporaryDirectory()
        let acts = try trainData(dir)
        let common = ["--steps", "3000", "--log-every", "10", "--checkpoint-every", "\(checkpointEvery)"] + smallRun
        let full = try jsae(["train", "--activations", acts, "--out", dir + "/full"] + common)
        #expect(full.status == 0, "\(full.stderr)")
        let (p, seen) = try signalJSAE(["train", "--activations", acts, "--out", dir + "/cut"] + common, signal) { $0.contains(logged) }
        let cp = try #require(CheckpointFile.latest(in: dir + "/cut"))
        let step = try #require(try HDF5File.open(cp).intAttribute("step"))
        #expect(!FileManager.default.fileExists(atPath: dir + "/cut/model.h5"))
        return (dir, p, seen, cp, step)
    }

    @Test("SIGINT writes a checkpoint and exits 130; --resume reaches the uninterrupted parameters")
    func interruptAndResume() throws {
        // Interrupted once it is inside the training loop.
        let (dir, p, seen, cp, step) = try trainWholeAndCut(SIGINT, checkpointEvery: 0, logged: "step 10/")
        #expect(p.terminationStatus == 130, "\(seen)")
        #expect(seen.contains("interrupted at step") && seen.contains("--resume \(dir)/cut"))
        #expect(step >= 10 && step < 3000)

        let resumed = try jsae(["train", "--resume", dir + "/cut", "--log-every", "1000"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(resumed.stderr.contains("resuming from \(cp) at step \(step)/3000"))
        #expect(try models(dir + "/full/model.h5", dir + "/cut/model.h5"))
    }

    @Test("SIGKILL mid-run: --resume continues from the last checkpoint, removes the killed run's temporaries, and reaches the uninterrupted parameters bit for bit")
    func killAndResume() throws {
        // Killed once it has logged step 250: checkpoints at 100 and 200 are on disk.
        let (dir, p, seen, cp, step) = try trainWholeAndCut(SIGKILL, checkpointEvery: 100, logged: "step 250/")
        #expect(p.terminationReason == .uncaughtSignal && p.terminationStatus == SIGKILL, "\(seen)")
        #expect(step >= 200 && step < 3000 && step % 100 == 0, "\(cp)")
        // What a write cut short by the kill leaves: a temporary named for a process that no longer runs.
        let stale = dir + "/cut/.checkpoint-000000300.h5.tmp-4194305"
        #expect(FileManager.default.createFile(atPath: stale, contents: Data("partial".utf8)))

        let resumed = try jsae(["train", "--resume", dir + "/cut", "--log-every", "1000"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(resumed.stderr.contains("resuming from \(cp) at step \(step)/3000"), "\(resumed.stderr)")
        #expect(resumed.stderr.contains("removed 1 temporary file") && !FileManager.default.fileExists(atPath: stale), "\(resumed.stderr)")
        #expect(try models(dir + "/full/model.h5", dir + "/cut/model.h5"))
        let a: (state: TrainState<Float>, config: TrainConfig, provenance: CheckpointFile.Provenance) = try CheckpointFile.read(CheckpointFile.latest(in: dir + "/full")!)
        let b: (state: TrainState<Float>, config: TrainConfig, provenance: CheckpointFile.Provenance) = try CheckpointFile.read(CheckpointFile.latest(in: dir + "/cut")!)
        #expect(a.state.completedSteps == 3000 && b.state.completedSteps == 3000)
        #expect(a.state.adamIn == b.state.adamIn && a.state.adamOut == b.state.adamOut, "Adam's moments differ")
    }

    @Test("--resume refuses a conflicting --rows or --include-special, naming the flag")
    func resumeRowsConflict() throws {
        let dir = temporaryDirectory()
        let acts = try trainData(dir)
        let f = try HDF5File.openForUpdate(acts)
        try f.setAttribute("heldout_start_row", .int(36))
        try f.finish()
        #expect(try jsae(["train", "--activations", acts, "--out", dir + "/run", "--steps", "2"] + smallRun).status == 0)
        try expectBadInput(["train", "--resume", dir + "/run", "--rows", "all"], file: CheckpointFile.latest(in: dir + "/run"), mentions: "--rows conflicts with the checkpoint")
        let same = try jsae(["train", "--resume", dir + "/run", "--rows", "training"])
        #expect(same.status == 0, "\(same.stderr)")
    }

    @Test("--resume on a truncated checkpoint is reported as corrupt")
    func corruptResume() throws {
        let dir = temporaryDirectory()
        let acts = try trainData(dir)
        #expect(try jsae(["train", "--activations", acts, "--out", dir + "/run", "--steps", "5"] + smallRun).status == 0)
        let cp = CheckpointFile.latest(in: dir + "/run")!
        let data = try Data(contentsOf: URL(fileURLWithPath: cp))
        try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: cp))
        try expectBadInput(["train", "--resume", dir + "/run"], file: cp, mentions: "corrupt")
    }

    @Test("bad configuration is rejected before any work", arguments: [
        (["--k", "13"], "k = 13 must be between 1 and m = expansion 2 × d 6 = 12"),
        (["--batch", "0"], "batch must be at least 1, got 0"),
        (["--lambda=-1"], "lambda must be a finite number >= 0, got -1.0"),
        (["--expansion", "0"], "--expansion must be at least 1"),
    ])
    func badConfig(_ extra: [String], _ message: String) throws {
        let dir = temporaryDirectory()
        let acts = try trainData(dir)
        var args = ["train", "--activations", acts, "--out", dir + "/run", "--steps", "5"] + smallRun
        // Later options win in ArgumentParser, so the bad value overrides smallRun's.
        args += extra
        try expectBadInput(args, file: extra[0] == "--k" ? acts : nil, mentions: message)
        #expect(!FileManager.default.fileExists(atPath: dir + "/run"), "the output folder was created before validation")
    }

    @Test("empty activations and a missing MLP are rejected before any work")
    func badData() throws {
        let dir = temporaryDirectory()
        let empty = dir + "/empty.h5"
        try writeActivations(Matrix(rows: 0, cols: 6), to: empty)
        try expectBadInput(["train", "--activations", empty, "--out", dir + "/run"] + smallRun, file: empty, mentions: "/x has no tokens")
        let noMLP = dir + "/nomlp.h5"
        try writeActivations(Matrix(rows: 8, cols: 6, repeating: 0.5), to: noMLP)
        try expectBadInput(["train", "--activations", noMLP, "--out", dir + "/run"] + smallRun, file: noMLP, mentions: "has no /mlp")
        #expect(!FileManager.default.fileExists(atPath: dir + "/run"))
    }

    @Test("an existing run folder is not overwritten")
    func noClobber() throws {
        let dir = temporaryDirectory()
        let acts = try trainData(dir)
        #expect(try jsae(["train", "--activations", acts, "--out", dir + "/run", "--steps", "2"] + smallRun).status == 0)
        try expectBadInput(["train", "--activations", acts, "--out", dir + "/run", "--steps", "2"] + smallRun,
                           file: dir + "/run", mentions: "already holds checkpoints")
    }

    @Test("a diverging run exits 3 and names the last good checkpoint")
    func diverges() throws {
        let dir = temporaryDirectory()
        let acts = try trainData(dir, rows: 16, bad: true)
        let r = try jsae(["train", "--activations", acts, "--out", dir + "/run", "--steps", "8", "--checkpoint-every", "1",
                          "--buffer-batches", "1"] + smallRun.dropLast(2))
        #expect(r.status == 3, "\(r.stderr)")
        #expect(r.stderr.contains("not finite") && r.stderr.contains("last good checkpoint: \(dir)/run/checkpoint-000000003.h5"))
        let (s, _, _) = try CheckpointFile.read(CheckpointFile.latest(in: dir + "/run")!, as: Float.self)
        #expect(s.model.saeIn.wDec.allFinite && s.completedSteps == 3)
    }

    @Test("--evaluation-point changes only the reported sparsity, never the objective")
    func evaluationPointIsReportingOnly() throws {
        let dir = temporaryDirectory()
        let acts = try trainData(dir)
        let common = ["--activations", acts, "--steps", "12", "--log-every", "12"] + smallRun
        let a = try jsae(["train", "--out", dir + "/true"] + common)
        let b = try jsae(["train", "--out", dir + "/rec", "--evaluation-point", "reconstruction"] + common)
        #expect(a.status == 0 && b.status == 0, "\(a.stderr)\(b.stderr)")
        #expect(try models(dir + "/true/model.h5", dir + "/rec/model.h5"))
        let share = { (r: Run) in r.stderr.split(separator: "\n").last { $0.hasPrefix("step 12/") }?
            .components(separatedBy: "|J|>0.01 ").last?.split(separator: " ").first.map(String.init) }
        // J at x̂ differs from J at x on a model this far from perfect reconstruction.
        #expect(share(a) != nil && share(b) != nil && share(a) != share(b), "\(share(a) ?? "-") vs \(share(b) ?? "-")")
    }

    @Test("the trained parameters do not depend on the package's thread count")
    func threadCountIndependence() throws {
        // Through the CLI, end to end; ThreadingTests checks a step above
        // OpenBLAS's threading threshold, where the tiles matter.
        let dir = temporaryDirectory()
        var g = SeededGenerator(seed: 103)
        let (model, _) = randomModel(PairShape(d: 32, dMlp: 48, mIn: 1, mOut: 1, k: 1, tokens: 1), seed: 104)
        try writeActivations(g.matrix(512, 32), to: dir + "/acts.h5", mlp: model.mlp!)
        // Big enough that every parallel loop splits differently for 1, 2 and 3 workers.
        let common = ["--activations", dir + "/acts.h5", "--expansion", "4", "--k", "8", "--batch", "64", "--steps", "8",
                      "--lr", "0.01", "--jacobian-chunk", "5"]
        for t in ["1", "2", "3"] {
            let r = try jsae(["train", "--out", dir + "/t" + t, "--threads", t] + common)
            #expect(r.status == 0, "\(r.stderr)")
        }
        #expect(try models(dir + "/t1/model.h5", dir + "/t2/model.h5"))
        #expect(try models(dir + "/t2/model.h5", dir + "/t3/model.h5"))
    }

    @Test("trains on the committed real-model sample")
    func realSample() throws {
        let dir = temporaryDirectory()
        let r = try jsae(["train", "--activations", packageRoot + "/reproduce/sample/minilm-l3-pretrained.h5", "--out", dir + "/run",
                          "--expansion", "2", "--k", "8", "--batch", "256", "--steps", "6", "--lr", "0.001", "--log-every", "6"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("d 384 m 768 k 8") && r.stderr.contains("step 6/6"))
    }

    @Test("--single trains one SAE and writes no output SAE")
    func single() throws {
        let dir = temporaryDirectory()
        let acts = try trainData(dir)
        let r = try jsae(["train", "--activations", acts, "--out", dir + "/run", "--steps", "6", "--single"] + smallRun)
        #expect(r.status == 0, "\(r.stderr)")
        let f = try HDF5File.open(dir + "/run/model.h5")
        #expect(f.exists("/sae_in/W_enc") && !f.exists("/sae_out"))
    }

    @Test("forward --gradients writes the autograd gradients of the golden case")
    func forwardGradients() throws {
        let dir = temporaryDirectory()
        let g = packageRoot + "/golden/basic"
        let r = try jsae(["forward", "--model", g + "/model.h5", "--activations", g + "/activations.h5", "--out", dir + "/f.h5",
                          "--precision", "double", "--lambda", "0.7", "--gradients", "--chunk-tokens", "3"])
        #expect(r.status == 0, "\(r.stderr)")
        let got = try HDF5File.open(dir + "/f.h5"), want = try HDF5File.open(g + "/forward.trueInput.h5")
        for group in ["sae_in", "sae_out"] {
            for name in ["W_enc", "b_enc", "W_dec", "b_dec"] {
                let a: [Double] = try got.readFloats("/grad/\(group)/\(name)").data
                let b: [Double] = try want.readFloats("/grad/\(group)/\(name)").data
                // Double vs torch float64, chunks of 3 tokens summed with weights: rounding only.
                #expect(allClose(a, b, rtol: 1e-9, atol: 1e-12), "/grad/\(group)/\(name)")
            }
        }
        let bad = try jsae(["forward", "--model", g + "/model.h5", "--activations", g + "/activations.h5", "--out", dir + "/r.h5",
                            "--gradients", "--evaluation-point", "reconstruction"])
        #expect(bad.status != 0 && bad.stderr.contains("trueInput"))
    }
}
