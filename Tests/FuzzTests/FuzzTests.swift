import CHDF5
import Foundation
import Testing
import JSAECore
import JSAEIO
import _JSAETestSupport

/// Hostile input and faults, quick and seeded: each case asserts
/// the outcome (a one-line refusal naming the file or flag, or success with
/// the right output), that files which existed before are unchanged unless
/// the command was meant to write them, and that no process dies by a signal.
@Suite("Hostile input and faults", .serialized)
struct FuzzTests {
    // MARK: 1. Failed writes are never renamed into place

    @Test("a full disk: forward and a checkpoint fail with the OS reason and the user's path; the previous file survives")
    func fullDisk() throws {
        let dir = temporaryDirectory("jsae-fuzz")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let mnt = dir + "/small"
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        let mount = try run("/bin/mount", ["-t", "tmpfs", "-o", "size=100k", "tmpfs", mnt], timeout: 20)
        guard mount.status == 0 else {
            print("SKIPPED full-disk case: cannot mount a 100 KB tmpfs here (\(mount.stderr.trimmingCharacters(in: .whitespacesAndNewlines)))")
            return
        }
        defer { _ = try? run("/bin/umount", [mnt], timeout: 20) }
        // Inputs off the small disk: 2000 tokens make a ~360 KB forward file.
        let big = try pairFixture(dir, tokens: 2000)
        let smallActs = dir + "/small-acts.h5"
        try writeActivations(randomModel(PairShape(d: 6, dMlp: 10, mIn: 16, mOut: 12, k: 3, tokens: 4), seed: 3).x,
                             to: smallActs)
        let out = mnt + "/fw.h5"
        expectSuccess(try jsae(["forward", "--model", big.model, "--activations", smallActs, "--out", out]), "small forward fits")
        let good = try Data(contentsOf: URL(fileURLWithPath: out))

        let o = try jsae(["forward", "--model", big.model, "--activations", big.acts, "--out", out])
        expectRefusal(o, naming: [out], mentions: "No space left on device", "forward onto a full disk")
        #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == good, "the previous fw.h5 was replaced")
        let left = try FileManager.default.contentsOfDirectory(atPath: mnt)
        #expect(left == ["fw.h5"], "left on the disk: \(left)")

        // Training: the first checkpoint fits, later ones do not.
        try FileManager.default.removeItem(atPath: out)
        let runDir = mnt + "/run"
        let t = try jsae(["train", "--activations", big.acts, "--out", runDir, "--steps", "6", "--checkpoint-every", "1",
                          "--expansion", "16", "--k", "3", "--batch", "16", "--buffer-batches", "1", "--log-every", "0"])
        expectRefusal(t, naming: [runDir], mentions: "No space left on device", "training onto a full disk", afterProgress: true)
        let cps = CheckpointFile.list(in: runDir)
        #expect(!cps.isEmpty, "no checkpoint fitted at all: the case tests nothing")
        for cp in cps {
            let r: (state: TrainState<Float>, config: TrainConfig, provenance: CheckpointFile.Provenance) = try CheckpointFile.read(cp.path)
            #expect(r.state.completedSteps == cp.step)
        }
        let temps = try FileManager.default.contentsOfDirectory(atPath: runDir).filter { $0.contains(".tmp-") }
        #expect(temps.isEmpty, "temporaries left: \(temps)")
    }

    @Test("a write past ulimit -f fails with the OS reason; the previous file survives")
    func fileSizeLimit() throws {
        let dir = temporaryDirectory("jsae-fuzz")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let f = try pairFixture(dir, tokens: 2000)
        let out = dir + "/fw.h5"
        try Data("previous".utf8).write(to: URL(fileURLWithPath: out))
        // 100 blocks of 512 bytes: far less than the ~360 KB output.
        let o = try run("/bin/sh", ["-c", "ulimit -f 100; exec \"$0\" \"$@\"", jsaeBin, "forward", "--model", f.model,
                                    "--activations", f.acts, "--out", out])
        expectRefusal(o, naming: [out], mentions: "File too large", "forward past ulimit -f")
        #expect(try String(contentsOfFile: out, encoding: .utf8) == "previous")
    }

    // MARK: 2. Numbers that trap

    @Test("float-for-int attributes and impossible values are refused naming the file")
    func floatForInt() throws {
        let dir = temporaryDirectory("jsae-fuzz")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let f = try pairFixture(dir)
        let cases: [(String, AttributeValue)] = [
            ("k", .double(1e300)), ("k", .double(.infinity)), ("k", .double(.nan)), ("k", .double(2.5)), ("k", .int(Int.max)),
            ("k", .int(-5)), ("format_version", .double(.infinity)), ("format_version", .double(1e300)), ("format_version", .string("1")),
        ]
        for (i, (name, v)) in cases.enumerated() {
            let m = dir + "/m\(i).h5"
            try FileManager.default.copyItem(atPath: f.model, toPath: m)
            try setAttribute(m, name, v)
            let before = snapshot(dir)
            let o = try jsae(["forward", "--model", m, "--activations", f.acts, "--out", dir + "/out\(i).h5"])
            expectRefusal(o, naming: [m], "model @\(name) = \(v)")
            #expect(changedFiles(before, snapshot(dir)).isEmpty)
            let ins = try jsae(["inspect", m])
            #expect(!ins.signalled && (ins.status == 0 || ins.status == 2), "inspect @\(name) = \(v): \(ins)")
        }
        // A float that is a whole number is what h5py may write: accepted.
        let whole = dir + "/whole.h5"
        try FileManager.default.copyItem(atPath: f.model, toPath: whole)
        try setAttribute(whole, "k", .double(3))
        expectSuccess(try jsae(["forward", "--model", whole, "--activations", f.acts, "--out", dir + "/whole-out.h5"]), "k = 3.0")

        // Checkpoints: total_steps = 1e300, batch = NaN, and friends.
        let run = dir + "/run"
        expectSuccess(try jsae(["train", "--activations", f.acts, "--out", run, "--steps", "2", "--checkpoint-every", "1"] + tinyTrain), "run")
        try FileManager.default.removeItem(atPath: run + "/checkpoint-000000002.h5")
        let cpCases: [(String, AttributeValue)] = [
            ("total_steps", .double(1e300)), ("batch", .double(.nan)), ("step", .double(-1)), ("batch", .int(1 << 62)),
            ("total_steps", .int(Int.max)), ("shuffle_buffer_tokens", .int(-16)), ("jacobian_chunk", .double(.infinity)),
            ("seed", .double(1e19)), ("lr", .double(.nan)),
        ]
        for (i, (name, v)) in cpCases.enumerated() {
            let copy = dir + "/run\(i)"
            try FileManager.default.copyItem(atPath: run, toPath: copy)
            let cp = copy + "/checkpoint-000000001.h5"
            try setAttribute(cp, name, v)
            let o = try jsae(["train", "--resume", copy], timeout: 30)
            expectRefusal(o, naming: [cp], "checkpoint @\(name) = \(v)")
        }
    }

    @Test("declared shapes that overflow or claim terabytes are refused at once")
    func hugeShapes() throws {
        let dir = temporaryDirectory("jsae-fuzz")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let f = try pairFixture(dir)
        let cases: [(String, [UInt64], [UInt64], Bool, String)] = [
            ("wide", [16, 1 << 40], [16, 1024], false, "only 0 of its"),     // [16, 2^40], chunked and unwritten
            ("tall", [1 << 40, 6], [1024, 6], true, "only 1 of its"),        // 2^40 rows, only the first chunk written
            ("overflow", [1 << 40, 1 << 40], [1, 1], false, "overflows"),    // element count beyond 2^64
        ]
        for (name, shape, chunk, first, reason) in cases {
            let a = dir + "/\(name).h5"
            try hugeDeclaredActivations(a, shape: shape, chunk: chunk, writeFirstChunk: first)
            let start = Date()
            let o = try jsae(["forward", "--model", f.model, "--activations", a, "--out", dir + "/o.h5"], timeout: 30)
            // The reason is checked too: a refusal for another cause (an
            // unreadable chunk index, say) would hide a reader that refuses
            // every chunked file.
            expectRefusal(o, naming: [a], mentions: reason, name)
            // Work proportional to the data present: well under a second;
            // 10 s allows for a loaded 2-core machine.
            #expect(Date().timeIntervalSince(start) < 10, "\(name) took \(Date().timeIntervalSince(start)) s")
            let t = try jsae(["train", "--activations", a, "--out", dir + "/run-\(name)", "--single"] + tinyTrain, timeout: 30)
            expectRefusal(t, naming: [a], "train on \(name)")
            #expect(!FileManager.default.fileExists(atPath: dir + "/run-\(name)/model.h5"))
            let b = try run(benchBin, ["--preset", "ci", "--activations", a, "--steps", "1", "--warmup", "0", "--no-profile", "--no-fingerprint"], timeout: 30)
            expectRefusal(b, naming: [a], "jsae-bench on \(name)")
            // inspect describes the file, the overflowing shape marked as invalid.
            let i = try jsae(["inspect", a], timeout: 30)
            #expect(i.status == 0 && i.stdout.contains("/x"), "inspect \(name): \(i.stderr)")
            #expect(i.stdout.contains("invalid shape") == (name == "overflow"), "inspect \(name): \(i.stdout)")
        }
    }

    @Test("a model whose W_enc declares a huge shape it does not store is refused naming the file, before any allocation")
    func hugeModelShape() throws {
        let dir = temporaryDirectory("jsae-fuzz")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let f = try pairFixture(dir)
        let model = dir + "/huge-model.h5"
        try FileManager.default.copyItem(atPath: f.model, toPath: model)
        let d = try HDF5File.open(model).info("/sae_in/W_enc").shape[0]
        // [d, 2^40] float32: tens of terabytes, a count that does not overflow.
        try replaceWithDeclaredOnly(model, "/sae_in/W_enc", shape: [UInt64(d), 1 << 40], chunk: [UInt64(d), 1024])
        let o = try jsae(["forward", "--model", model, "--activations", f.acts, "--out", dir + "/o.h5"], timeout: 30)
        expectRefusal(o, naming: [model], mentions: "W_enc", "forward")
        #expect(!o.stderr.contains("crashed") && !o.stderr.contains("Fatal error"), "\(o.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/o.h5"))
        let i = try jsae(["inspect", model], timeout: 30)
        #expect(i.status == 0 && i.stdout.contains("W_enc"), "inspect: \(i.stderr)")
    }

    @Test("the crash guard blames HDF5 only for a crash in HDF5's code or its filters'")
    func crashGuardAttribution() throws {
        jsae_guard_collect_ranges()
        func address(_ symbol: String) -> UInt {
            UInt(bitPattern: dlsym(nil /* RTLD_DEFAULT: the global scope */, symbol))
        }
        let h5 = address("H5Dread"), deflate = address("inflate"), strlen = address("strlen")
        #expect(h5 != 0 && deflate != 0 && strlen != 0)
        let ours: @convention(c) () -> Void = { }
        let own = UInt(bitPattern: unsafeBitCast(ours, to: Int.self))
        #expect(jsae_guard_blames_hdf5(SIGSEGV, h5 + 16) == 1, "a fault inside H5Dread")
        #expect(jsae_guard_blames_hdf5(SIGBUS, deflate + 16) == 1, "a fault inside zlib, HDF5's deflate filter")
        #expect(jsae_guard_blames_hdf5(SIGSEGV, own) == 0, "a fault in the package's own code")
        #expect(jsae_guard_blames_hdf5(SIGSEGV, strlen) == 0, "a fault in libc")
        // An abort whose caller is this test's code, not HDF5's: the walk
        // out of libc finds no HDF5 frame.
        #expect(jsae_guard_blames_hdf5(SIGABRT, 0) == 0)
    }

    @Test("a chunked /x with every chunk written (as h5py writes it, fixed or unlimited rows) is read, row for row")
    func chunkedActivationsAreRead() throws {
        let dir = temporaryDirectory("jsae-fuzz")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for unlimited in [false, true] {
            let a = dir + "/chunked-\(unlimited).h5"
            // 10 rows in chunks of 4: the last chunk is partial, written in two blocks.
            try chunkedActivations(a, shape: [10, 6], chunk: [4, 6], written: [[4, 6], [5, 6], [1, 6]], maxRows: unlimited)
            let f = try HDF5File.open(a)
            let rows: Matrix<Float> = try f.readRows("/x", 3..<10)
            for r in 0..<7 { for c in 0..<6 { #expect(rows[r, c] == Float(r + 3) + Float(c) / 1000) } }
            let whole: Matrix<Float> = try f.readMatrix("/x")
            #expect(whole.rows == 10 && whole[9, 5] == 9.005)
            f.close()
            // 13 rows declared, 12 written: the fourth chunk was never
            // allocated, and the reader refuses the file before reading.
            let b = dir + "/short-\(unlimited).h5"
            try chunkedActivations(b, shape: [13, 6], chunk: [4, 6], written: [[4, 6], [4, 6], [4, 6]], maxRows: unlimited)
            #expect(throws: JSAEError.self) { _ = try HDF5File.open(b).readMatrix("/x") as Matrix<Float> }
        }
    }

    @Test("flags whose values or products overflow are refused naming the flag, before any work")
    func overflowingFlags() throws {
        let dir = temporaryDirectory("jsae-fuzz")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let f = try pairFixture(dir)
        let big = String(1 << 62), max = String(Int.max)
        let train = ["train", "--activations", f.acts, "--out", dir + "/run"]
        let cases: [([String], String)] = [
            (train + ["--expansion", big], "--expansion"),
            (train + ["--batch", big], "--batch"),
            (train + ["--batch", big, "--buffer-batches", big], "--batch"),
            (train + ["--tokens", max, "--batch", "3"], "--tokens"),
            (train + ["--steps", max], "--steps"),
            (train + ["--expansion", "1000000"], "--expansion"),
            (["forward", "--model", f.model, "--activations", f.acts, "--out", dir + "/o.h5", "--chunk-tokens", "-1"], "--chunk-tokens=-1"),
            (["forward", "--model", f.model, "--activations", f.acts, "--out", dir + "/o.h5", "--lambda", "nan"], "--lambda"),
            (["reproduce", "--pretrained", f.acts, "--randomized", f.acts, "--out", dir + "/rep", "--lambda-sweep", "0.5,nan"], "--lambda-sweep"),
            (["reproduce", "--pretrained", f.acts, "--randomized", f.acts, "--out", dir + "/rep", "--expansion", big], "--expansion"),
        ]
        for (args, flag) in cases {
            let before = snapshot(dir)
            let start = Date()
            let o = try jsae(args, timeout: 30)
            expectRefusal(o, naming: [flag], args.suffix(4).joined(separator: " "))
            #expect(Date().timeIntervalSince(start) < 10, "\(args): took \(Date().timeIntervalSince(start)) s (validated late?)")
            #expect(changedFiles(before, snapshot(dir)).isEmpty)
            #expect(!FileManager.default.fileExists(atPath: dir + "/run/model.h5"))
        }
        for (args, flag) in [(["--preset", "ci", "--expansion", big], "--expansion"), (["--preset", "ci", "--batch", big], "--batch"),
                             (["--preset", "ci", "--warmup", "-1"], "--warmup=-1")] {
            let o = try run(benchBin, args + ["--no-profile", "--no-fingerprint"], timeout: 30)
            expectRefusal(o, naming: [flag], "jsae-bench \(args)")
        }
    }

    // MARK: 3. Hangs

    @Test("inspect lists a group that contains itself once and stops")
    func cycles() throws {
        let dir = temporaryDirectory("jsae-fuzz")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let c = dir + "/cycle.h5"
        try cyclicFile(c)
        let o = try jsae(["inspect", c], timeout: 20)
        expectSuccess(o, "inspect a cycle")
        let lines = o.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains("  /g/") && lines.contains("  /g/self/") && lines.contains("  /g/up/"), "\(o.stdout)")
        #expect(lines.contains("  /g/data  [2]  float64"), "\(o.stdout)")
        #expect(lines.count < 20, "the walk went round the cycle: \(lines.count) lines")
    }

    // MARK: 4. Byte flips

    @Test("byte flips of a small model and of a checkpoint, and hostile attribute values (seeded)")
    func byteFlips() throws {
        let tally = try runCampaign(seed: 10, modelFlips: 24, checkpointFlips: 8, attributes: 8)
        print("quick fuzz: \(tally.total) runs: \(tally)")
        #expect(tally.failures.isEmpty, "\(tally.failures.joined(separator: "\n"))")
        #expect(tally.total == 24 * 2 + 8 + 8 * 3)
    }

    // MARK: 5. Silently wrong

    @Test("a model whose outputs overflow is an error naming the first non-finite output")
    func nonFiniteForward() throws {
        let dir = temporaryDirectory("jsae-fuzz")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let f = try pairFixture(dir)
        var m = f.modelValue
        m.saeIn.wDec = Matrix(rows: m.saeIn.wDec.rows, cols: m.saeIn.wDec.cols, data: m.saeIn.wDec.data.map { $0 == 0 ? 3e38 : 3e38 * ($0 < 0 ? -1 : 1) })
        let huge = dir + "/huge.h5"
        try ModelFile.write(m, to: huge)
        let out = dir + "/o.h5"
        let o = try jsae(["forward", "--model", huge, "--activations", f.acts, "--out", out])
        expectRefusal(o, naming: [huge], mentions: "forward output /", "W_dec = ±3e38")
        #expect(!FileManager.default.fileExists(atPath: out))
        // In double the same weights are representable and the run succeeds.
        expectSuccess(try jsae(["forward", "--model", huge, "--activations", f.acts, "--out", out, "--precision", "double"]), "double")
    }

    @Test("resume: the checkpoint's configuration wins, a conflicting flag is refused, changed activations are refused")
    func resume() throws {
        let dir = temporaryDirectory("jsae-fuzz")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let f = try pairFixture(dir)
        let run = dir + "/run"
        try runStoppedAtStep2(run, acts: f.acts, extra: ["--precision", "double"])
        let template = dir + "/template"
        try FileManager.default.copyItem(atPath: run, toPath: template)
        func fresh() throws -> String {
            let c = dir + "/c-\(UUID().uuidString.prefix(6))"
            try FileManager.default.copyItem(atPath: template, toPath: c)
            return c
        }
        for (flag, value) in [("--k", "2"), ("--expansion", "3"), ("--lr", "0.01"), ("--precision", "float"), ("--batch", "8"),
                              ("--steps", "9"), ("--seed", "5"), ("--lambda", "0.25"), ("--model", f.model)] {
            let c = try fresh()
            let before = snapshot(c)
            let o = try jsae(["train", "--resume", c, flag, value])
            expectRefusal(o, naming: [flag], mentions: "conflicts with the checkpoint", "resume \(flag) \(value)")
            // The lock file holds the PID of the last process that took it.
            #expect(changedFiles(before, snapshot(c), allowed: [RunLock.fileName]).isEmpty)
        }
        // Flags that agree with the checkpoint are fine, and the run stays in double.
        let same = try fresh()
        expectSuccess(try jsae(["train", "--resume", same, "--k", "3", "--expansion", "2", "--batch", "16", "--threads", "1"]), "agreeing flags")
        let model = try HDF5File.open(same + "/model.h5")
        #expect(try model.info("/sae_in/W_enc").element == .float(bytes: 8), "the double run continued in float")

        // The checkpoint records the activations' rows and fingerprint.
        let cpFile = try HDF5File.open(template + "/checkpoint-000000002.h5")
        #expect(try cpFile.intAttribute("activations_tokens") == 64)
        #expect(try cpFile.stringAttribute("activations_fingerprint")?.hasPrefix("fnv1a64:") == true)

        // Activations shrunk, or replaced by other values of the same shape.
        let (model0, x) = randomModel(PairShape(d: 6, dMlp: 10, mIn: 16, mOut: 12, k: 3, tokens: 64), seed: 7)
        let shrunk = Matrix(rows: 48, cols: 6, data: Array(x.data.prefix(48 * 6)))
        var other = x
        other.data[other.data.count - 1] += 1   // the last row: in the fingerprint's tail
        for (label, data) in [("shrunk", shrunk), ("replaced", other)] {
            let c = try fresh()
            let acts = dir + "/acts-\(label).h5"
            try writeActivations(data, to: acts, mlp: model0.mlp)
            let o = try jsae(["train", "--resume", c, "--activations", acts])
            expectRefusal(o, naming: [acts], label)
        }
        // An old checkpoint without those attributes still resumes.
        let old = try fresh()
        try deleteAttribute(old + "/checkpoint-000000002.h5", "activations_tokens")
        try deleteAttribute(old + "/checkpoint-000000002.h5", "activations_fingerprint")
        expectSuccess(try jsae(["train", "--resume", old]), "old checkpoint")
    }

    @Test("jsae-bench --activations takes d and d_mlp from the file")
    func benchDMlp() throws {
        let dir = temporaryDirectory("jsae-fuzz")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let f = try pairFixture(dir, tokens: 64)
        let common = ["--preset", "ci", "--activations", f.acts, "--expansion", "2", "--k", "3", "--batch", "32", "--steps", "1",
                      "--warmup", "0", "--no-profile", "--no-fingerprint"]
        let o = try run(benchBin, common + ["--json", dir + "/b.json"], timeout: 120)
        expectSuccess(o, "bench on a file")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/b.json"))) as? [String: Any]
        let shape = json?["shape"] as? [String: Any]
        #expect(shape?["d"] as? Int == 6 && shape?["dMlp"] as? Int == 10, "\(String(describing: shape))")
        let bad = try run(benchBin, common + ["--d-mlp", "99"], timeout: 60)
        expectRefusal(bad, naming: [f.acts], mentions: "--d-mlp", "a different --d-mlp")
    }

    // MARK: 6. Data loss

    @Test("only checkpoint-<9 digits>.h5 counts: stray names are neither resumed from nor pruned")
    func strayCheckpointNames() throws {
        let dir = temporaryDirectory("jsae-fuzz")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let f = try pairFixture(dir)
        let run = dir + "/run"
        try runStoppedAtStep2(run, acts: f.acts)
        let strays = ["checkpoint-backup.h5", "checkpoint-99.h5", "checkpoint-9999999999.h5", "checkpoint-00000000x.h5", "checkpoint-000000003.h5.bak"]
        for s in strays { try FileManager.default.copyItem(atPath: run + "/checkpoint-000000002.h5", toPath: run + "/" + s) }
        let before = snapshot(run)
        let o = try jsae(["train", "--resume", run, "--checkpoint-every", "1"])
        expectSuccess(o, "resume beside strays")
        #expect(o.stderr.contains("checkpoint-000000002.h5 at step 2/4"), "\(o.stderr)")
        for s in strays { #expect(snapshot(run)[s] == before[s], "\(s) was changed or pruned") }
        #expect(CheckpointFile.list(in: run).map(\.step) == [3, 4])
    }

    @Test("a second concurrent run into the same --out is refused; the first is unharmed")
    func concurrentRuns() throws {
        let dir = temporaryDirectory("jsae-fuzz")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let f = try pairFixture(dir)
        let run = dir + "/run"
        let a = Process()
        a.executableURL = URL(fileURLWithPath: jsaeBin)
        a.arguments = ["train", "--activations", f.acts, "--out", run, "--steps", "100000000", "--checkpoint-every", "0"] + tinyTrain
        a.standardOutput = FileHandle.nullDevice
        a.standardError = FileHandle.nullDevice
        try a.run()
        defer { if a.isRunning { kill(a.processIdentifier, SIGKILL) } }
        let deadline = Date().addingTimeInterval(30)
        while (try? String(contentsOfFile: run + "/" + RunLock.fileName, encoding: .utf8))?.hasPrefix("\(a.processIdentifier)") != true
                && Date() < deadline { usleep(20_000) }
        #expect(a.isRunning)
        for args in [["train", "--activations", f.acts, "--out", run] + tinyTrain + ["--steps", "2"], ["train", "--resume", run]] {
            let o = try jsae(args)
            expectRefusal(o, naming: [run], mentions: "another jsae process (pid \(a.processIdentifier))", args.joined(separator: " "))
        }
        kill(a.processIdentifier, SIGINT)
        a.waitUntilExit()
        #expect(a.terminationReason == .exit && a.terminationStatus == 130, "first run: \(a.terminationStatus)")
        #expect(CheckpointFile.list(in: run).count == 1)
        // The lock went with the process: another run may take it now.
        #expect(RunLock.holder(of: run) == nil)
        #expect(throws: Never.self) { _ = try RunLock.acquire(run) }
    }

    @Test("forward --out equal to an input is refused, by any spelling of the path")
    func outputIsInput() throws {
        let dir = temporaryDirectory("jsae-fuzz")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let f = try pairFixture(dir)
        try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: dir + "/link.h5", withDestinationPath: f.acts)
        try FileManager.default.linkItem(atPath: f.model, toPath: dir + "/hard.h5")
        for out in [f.acts, f.model, dir + "/sub/../acts.h5", dir + "/./model.h5", dir + "/link.h5", dir + "/hard.h5"] {
            let before = snapshot(dir)
            let o = try jsae(["forward", "--model", f.model, "--activations", f.acts, "--out", out])
            expectRefusal(o, naming: [out], mentions: "same file", "--out \(out)")
            #expect(changedFiles(before, snapshot(dir)).isEmpty, "--out \(out) changed an input")
        }
    }

    @Test("temporaries of killed runs are removed on start and resume; a live process's are kept")
    func staleTemporaries() throws {
        let dir = temporaryDirectory("jsae-fuzz")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let f = try pairFixture(dir)
        let run = dir + "/run"
        try runStoppedAtStep2(run, acts: f.acts)
        // A PID that has certainly exited: a child we waited for.
        let dead = Process()
        dead.executableURL = URL(fileURLWithPath: "/bin/true")
        try dead.run(); dead.waitUntilExit()
        let stale = ".checkpoint-000000003.h5.tmp-\(dead.processIdentifier)"
        let live = ".checkpoint-000000003.h5.tmp-\(getpid())"
        for n in [stale, live] { try Data("partial".utf8).write(to: URL(fileURLWithPath: run + "/" + n)) }
        expectSuccess(try jsae(["train", "--resume", run]), "resume")
        #expect(!FileManager.default.fileExists(atPath: run + "/" + stale))
        #expect(FileManager.default.fileExists(atPath: run + "/" + live))
    }

    // MARK: 7. Unclear errors

    @Test("bad paths are one line naming the user's path and the reason")
    func unclearPaths() throws {
        let dir = temporaryDirectory("jsae-fuzz")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let f = try pairFixture(dir)
        let cases: [([String], String, String)] = [
            (["forward", "--model", f.model, "--activations", f.acts, "--out", f.acts + "/out.h5"], f.acts + "/out.h5", "is a file, not a folder"),
            (["forward", "--model", f.model, "--activations", f.acts, "--out", dir + "/nope/out.h5"], dir + "/nope/out.h5", "does not exist"),
            (["forward", "--model", dir, "--activations", f.acts, "--out", dir + "/o.h5"], dir, "is a directory"),
            (["forward", "--model", dir + "/missing.h5", "--activations", f.acts, "--out", dir + "/o.h5"], dir + "/missing.h5", "no such file"),
            (["train", "--activations", f.acts, "--out", f.acts + "/run"] + tinyTrain, f.acts + "/run", "is a file, not a folder"),
            (["train", "--resume", dir + "/nothing"], dir + "/nothing", "no checkpoint"),
            (["reproduce", "--pretrained", f.acts, "--randomized", f.acts, "--out", f.acts + "/rep", "--quick"], f.acts + "/rep", "is a file, not a folder"),
            (["inspect", dir + "/missing.h5"], dir + "/missing.h5", "no such file"),
        ]
        for (args, path, mentions) in cases {
            let before = snapshot(dir)
            let o = try jsae(args)
            expectRefusal(o, naming: [path], mentions: mentions, args.joined(separator: " "))
            #expect(!o.stderr.contains("NSCocoaErrorDomain") && !o.stderr.contains("Error Domain"), "\(o)")
            #expect(changedFiles(before, snapshot(dir)).isEmpty)
        }
        // Permission denied: root is never denied by file modes, so as root
        // the command runs as user nobody (setpriv); without setpriv, skipped.
        let asUser: [String]
        if getuid() != 0 { asUser = [] }
        else if FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") {
            asUser = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        } else {
            print("SKIPPED permission-denied case: running as root without setpriv, and root is not stopped by file modes")
            return
        }
        func jsaeAs(_ args: [String]) throws -> Outcome {
            asUser.isEmpty ? try jsae(args) : try run(asUser[0], Array(asUser.dropFirst()) + [jsaeBin] + args)
        }
        let ro = dir + "/ro"
        try FileManager.default.createDirectory(atPath: ro, withIntermediateDirectories: true)
        chmod(ro, 0o555)
        chmod(dir, 0o755)
        for p in [f.model, f.acts] { chmod(p, 0o644) }
        let o = try jsaeAs(["forward", "--model", f.model, "--activations", f.acts, "--out", ro + "/o.h5"])
        expectRefusal(o, naming: [ro + "/o.h5"], mentions: "Permission denied", "unwritable folder")
        let unreadable = dir + "/secret.h5"
        try FileManager.default.copyItem(atPath: f.model, toPath: unreadable)
        chmod(unreadable, 0o600)
        if getuid() != 0 { chmod(unreadable, 0) }
        let u = try jsaeAs(["inspect", unreadable])
        expectRefusal(u, naming: [unreadable], mentions: "Permission denied", "unreadable file")
        #expect(!u.stderr.contains("not an HDF5 file"), "\(u)")
    }

    @Test("reproduce refuses a sidecar shorter than the data before any training")
    func shortSidecar() throws {
        let dir = temporaryDirectory("jsae-fuzz")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let f = try pairFixture(dir, tokens: 300)
        let side = f.acts + ".tokens.json"
        let json: [String: Any] = ["tokens": Array(repeating: "a", count: 10), "documents": Array(repeating: 0, count: 10)]
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: side))
        let start = Date()
        let o = try jsae(["reproduce", "--pretrained", f.acts, "--randomized", f.acts, "--out", dir + "/rep", "--quick",
                          "--batch", "32", "--steps", "2", "--expansion", "2", "--k", "3"], timeout: 120)
        expectRefusal(o, naming: [side], mentions: "10 tokens", "short sidecar")
        #expect(Date().timeIntervalSince(start) < 20)
        #expect(!FileManager.default.fileExists(atPath: dir + "/rep/runs"), "training started before the sidecar was checked")
    }
}
