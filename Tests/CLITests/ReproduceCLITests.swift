import Foundation
import Testing
import JSAECore
import JSAEIO
import JSAEReport
import _JSAETestSupport

extension JSONEncoder {
    static var sorted: JSONEncoder { let e = JSONEncoder(); e.outputFormatting = [.sortedKeys]; return e }
}

/// The quick reproduction of the committed sample, trained once for the
/// tests that read it (`quick`, and ClusterCLITests, which compares a split
/// reproduction with it).
enum QuickSample {
    /// --quick, further shrunk so that the debug build `swift test` uses
    /// finishes in about a minute (plain --quick takes about 5 minutes on 2
    /// cores in release). Two runs at once on 2 threads: each run on one thread.
    static let settings = ["--quick", "--steps", "6", "--samples", "6", "--ablation-samples", "64", "--expansion", "2", "--batch", "128",
                           "--pretrained", packageRoot + "/reproduce/sample/minilm-l3-pretrained.h5",
                           "--randomized", packageRoot + "/reproduce/sample/minilm-l3-randomized.h5"]
    static let threads = ["--threads", "2", "--runs-at-once", "2"]

    /// The monolithic reproduction: its folder, the command's result, and
    /// its summary.json as first written (`quick` later re-evaluates the folder).
    static let monolithic: Result<(dir: String, run: Run, summary: Data), any Error> = Result {
        let dir = temporaryDirectory()
        let r = try jsae(["reproduce"] + settings + threads + ["--out", dir])
        return (dir, r, (try? Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json"))) ?? Data())
    }
}

/// The layer sweep on the committed sample, trained once for `layers` and
/// for ClusterCLITests, which compares a split sweep with it.
enum LayerSample {
    /// Layer 3 only: the sample holds one layer. The pattern is what a sweep over several files uses.
    static let settings = ["--quick", "--layers", "3", "--steps", "6", "--samples", "6", "--expansion", "2", "--batch", "128",
                           "--pretrained", packageRoot + "/reproduce/sample/minilm-l{layer}-pretrained.h5"]

    /// Its folder, the command's result and summary.json as first written.
    static let monolithic: Result<(dir: String, run: Run, summary: Data), any Error> = Result {
        let dir = temporaryDirectory()
        let r = try jsae(["reproduce"] + settings + ["--out", dir])
        return (dir, r, (try? Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json"))) ?? Data())
    }
}

@Suite("jsae reproduce")
struct ReproduceCLITests {
    @Test("--quick on the committed sample: report structure, plots, and numbers that match their forward files")
    func quick() throws {
        let (dir, r, _) = try QuickSample.monolithic.get()
        let quickArgs = ["reproduce"] + QuickSample.settings + QuickSample.threads + ["--out", dir]
        #expect(r.status == 0, "\(r.stderr)")
        let verdicts = r.stdout.split(separator: "\n").filter { $0.hasPrefix("REPRODUCED:") || $0.hasPrefix("NOT REPRODUCED:") }
        // Five claims, the German unit and its comparison with the traditional pair (the sample has German documents).
        #expect(verdicts.count == 7)

        let report = try String(contentsOfFile: dir + "/report.md", encoding: .utf8)
        for section in ["## Verdicts", "## Protocol", "## Jacobian sparsity", "### The headline share as the authors count it", "## Reconstruction",
                        "## f_s linearity and ablation", "## The authors' analysis path, emulated", "## A German-text computational unit",
                        "## Plots", "## Strongest connections"] {
            #expect(report.contains(section), "missing \(section)")
        }
        for v in verdicts { #expect(report.contains(String(v)), "verdict not in the report: \(v)") }
        for png in ["jacobian-distribution.png", "sparsity-bars.png", "lambda-sweep.png", "german-unit.png"] {
            let plot = decodePlot(try Data(contentsOf: URL(fileURLWithPath: dir + "/" + png)))
            // A real plot: a well-formed PNG with axes, text and data in several colours.
            #expect(plot != nil && plot!.width >= 400 && plot!.colours >= 4, "\(png): \(String(describing: plot))")
        }

        let summary = try JSONDecoder().decode(ReproduceSummary.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json")))
        #expect(Set(summary.runs.map(\.name)) == ["jsae-pretrained", "traditional-pretrained", "jsae-randomized", "traditional-randomized"])
        for run in summary.runs {
            let held: Matrix<Double> = try ActivationsReader(dir + "/data/heldout-\(run.data).h5").x(0..<summary.heldOutTokens)
            for point in ["trueInput", "reconstruction"] {
                // Recomputed here from the forward file, independently of the report code.
                let f = try ForwardFile<Double>(run.forwardFiles[EvaluationKey(point)!]!)
                #expect(f.point.rawValue == point && f.xHat.rows == summary.heldOutTokens)
                let J = f.jacobian!
                let shares = [0.005, 0.01, 0.015, 0.02].map { t in Double(J.filter { abs($0) > t }.count) / Double(J.count) }
                #expect(shares == run.shares[EvaluationKey(point)!]!.values, "\(run.name) \(point)")
                let row = "| \(run.name) | \(point) | " + shares.map { String(format: "%.1f%%", 100 * $0) }.joined(separator: " | ")
                #expect(report.contains(row), "report row for \(run.name) \(point)")
                if point == "trueInput" {
                    #expect(f.mseIn == run.metrics.mseIn)
                    // Float vs Double subtraction of the same stored values: rounding only.
                    #expect(abs(explainedVariance(held, f.xHat) - run.metrics.explainedVarianceIn) < 1e-5)
                    #expect(abs(explainedVariance(f.y!, f.yHat!) - run.metrics.explainedVarianceOut) < 1e-5)
                    let l0 = Double(f.inValues.filter { $0 > 0 }.count) / Double(summary.heldOutTokens)
                    #expect(abs(l0 - run.metrics.l0In) < 1e-12)
                }
            }
            let lin = run.linearity.values.reduce(0, +)
            #expect(abs(lin - 1) < 1e-12 && run.samples == 6)
            // Both variants on every run, the processed model on pre-trained data; the authors' linearity takes whole tokens of k.
            let analyses = run.analyses ?? []
            #expect(analyses.map { "\($0.variant.rawValue)/\($0.path.rawValue)" }
                    == ["authors/consistent", "reconstruction/consistent"] + (run.data == "pretrained" ? ["authors/processed"] : []))
            for a in analyses {
                #expect(a.linear.count + a.jumpReLU.count + a.other.count == a.linear.total)
                #expect(a.linear.total == (a.variant == .authors ? 32 : 6) && a.ablationAgrees.total == 64)
            }
            // The ≥ counts from the forward file, recomputed here.
            let J = try ForwardFile<Double>(run.forwardFiles[.trueInput]!).jacobian!
            #expect(run.thresholdCounts?[.trueInput]?.atLeast[1] == J.filter { abs($0) >= 0.01 }.count)
        }
        // The German unit: in summary.json and in the report, with the same latent.
        let units = summary.german?.units ?? []
        #expect(units.map(\.run) == ["jsae-pretrained", "traditional-pretrained"] && summary.german?.unavailable == nil)
        for u in units { #expect(report.contains("### \(u.run): output \(u.output.latent)")) }

        // Other evaluation settings on the finished folder: every run is evaluated again from its model, none retrained.
        var args = quickArgs
        args[args.firstIndex(of: "--samples")! + 1] = "7"
        // A temporary that a killed process left in a run's folder (PID 2^22 + 1: above the largest PID Linux allows, so never running).
        let stale = dir + "/runs/jsae-pretrained/.model.h5.tmp-4194305"
        #expect(FileManager.default.createFile(atPath: stale, contents: Data("partial".utf8)))
        let again = try jsae(args)
        #expect(!FileManager.default.fileExists(atPath: stale) && again.stderr.contains("removed 1 temporary file"), "\(again.stderr)")
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stderr.components(separatedBy: "finished earlier under another evaluation").count == 5 && !again.stderr.contains("] training:"),
                "\(again.stderr)")
        let after = try JSONDecoder().decode(ReproduceSummary.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json")))
        for (x, y) in zip(summary.runs, after.runs) {
            #expect(y.samples == 7 && x.metrics == y.metrics && x.shares == y.shares, "\(x.name)")
        }
    }

    @Test("one-pass runs with snapshots: an interrupted reproduction, two runs at once, resumes to the numbers of uninterrupted runs one after another; other settings are refused")
    func interruptAndResume() throws {
        let dir = temporaryDirectory()
        // The whole run trains one run at a time on one thread; the cut one
        // trains two at once on two threads: the numbers must not depend on
        // either.
        let common = ["reproduce", "--quick", "--tokens", "1280", "--batch", "128", "--snapshots", "256,512", "--expansion", "2",
                      "--samples", "6", "--eval-tokens", "200",
                      "--pretrained", packageRoot + "/reproduce/sample/minilm-l3-pretrained.h5",
                      "--randomized", packageRoot + "/reproduce/sample/minilm-l3-randomized.h5", "--threads"]
        let whole = try jsae(common + ["1", "--runs-at-once", "1", "--out", dir + "/whole"])
        #expect(whole.status == 0, "\(whole.stderr)")
        let firstEnds = whole.stderr.range(of: "[jsae-pretrained] snapshot at 1280"), secondStarts = whole.stderr.range(of: "[traditional-pretrained] training")
        #expect(firstEnds != nil && secondStarts != nil && firstEnds!.lowerBound < secondStarts!.lowerBound, "one run at a time: \(whole.stderr)")

        // Interrupt the traditional run (trained beside the JSAE run) after its second step.
        let (p, seen) = try signalJSAE(common + ["2", "--out", dir + "/cut"], SIGINT) { seen in
            seen.hasSuffix("\n") && seen.split(separator: "\n").contains { $0.contains("[traditional-pretrained] step 2/") }
        }
        #expect(p.terminationStatus == 130, "\(seen)")
        #expect(seen.contains("interrupted in traditional-pretrained at step") && seen.contains("interrupted in jsae-pretrained at step")
                && seen.contains("run the same command again to resume"), "\(seen)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/cut/summary.json"))

        #expect(seen.contains("[jsae-pretrained] training") && seen.contains("[traditional-pretrained] training")
                && seen.range(of: "[traditional-pretrained] training")!.lowerBound < seen.range(of: "[jsae-pretrained] step 10/")?.lowerBound ?? seen.endIndex,
                "two runs at once: \(seen)")

        let other = try jsae(common.map { $0 == "200" ? "201" : $0 } + ["2", "--out", dir + "/cut"])
        #expect(other.status == 2 && other.stderr.split(separator: "\n").count == 1
                && other.stderr.contains(dir + "/cut/plan.json") && other.stderr.contains("evalTokens was 200, now 201"), "\(other.stderr)")

        let resumed = try jsae(common + ["2", "--out", dir + "/cut"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        // The JSAE run trains beside the traditional one and is slower, so
        // it was stopped too, part-way (or at step 0, checkpointed on stop).
        #expect(resumed.stderr.contains("[jsae-pretrained] resuming from"), "\(resumed.stderr)")
        #expect(resumed.stderr.contains("[traditional-pretrained] resuming from"), "\(resumed.stderr)")

        let a = try comparableRuns(dir + "/whole"), b = try comparableRuns(dir + "/cut")
        #expect(a.count == 4 && b.count == 4)
        for (x, y) in zip(a, b) {
            #expect(try JSONEncoder.sorted.encode(x) == JSONEncoder.sorted.encode(y), "\(x.name) differs after resume")
            #expect(x.snapshots?.map(\.tokens) == [256, 512, 1280] && x.epochs! <= 1 && x.trainedTokens == 1280)
            // The last snapshot is the final evaluation at the true input, by the same functions.
            let last = x.snapshots!.last!
            #expect(last.shares == x.shares[.trueInput]! && last.metrics == x.metrics)
        }
    }

    @Test("SIGKILL mid-run: rerunning reuses the finished run, removes the dead process's temporaries from the run's folder, resumes the killed run from its checkpoint, and matches an uninterrupted reproduction")
    func killAndResume() throws {
        let dir = temporaryDirectory()
        // One run at a time in both folders, so that the kill finds the first run finished and the second in progress.
        let common = ["reproduce", "--quick", "--tokens", "1280", "--batch", "128", "--snapshots", "256,512", "--expansion", "2",
                      "--samples", "6", "--ablation-samples", "64", "--eval-tokens", "200", "--threads", "1", "--runs-at-once", "1",
                      "--pretrained", packageRoot + "/reproduce/sample/minilm-l3-pretrained.h5",
                      "--randomized", packageRoot + "/reproduce/sample/minilm-l3-randomized.h5", "--out"]
        let whole = try jsae(common + [dir + "/whole"])
        #expect(whole.status == 0, "\(whole.stderr)")

        // Killed once the second run has checkpointed at its first snapshot (step 2 of 10).
        let (p, seen) = try signalJSAE(common + [dir + "/cut"], SIGKILL) { $0.contains("[traditional-pretrained] snapshot at 256") }
        #expect(p.terminationReason == .uncaughtSignal && p.terminationStatus == SIGKILL, "\(seen)")
        let run = dir + "/cut/runs/traditional-pretrained"
        #expect(CheckpointFile.latest(in: run) != nil && !FileManager.default.fileExists(atPath: run + "/run.json"))
        // A write cut short by a kill leaves `.NAME.tmp-PID`; PID 2^22 + 1 is above the largest Linux allows, so never running.
        let stale = run + "/.checkpoint-000000004.h5.tmp-4194305"
        #expect(FileManager.default.createFile(atPath: stale, contents: Data("partial".utf8)))

        let resumed = try jsae(common + [dir + "/cut"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(!FileManager.default.fileExists(atPath: stale), "\(resumed.stderr)")
        #expect(resumed.stderr.contains("[traditional-pretrained] removed") && resumed.stderr.contains("tmp-4194305"), "\(resumed.stderr)")
        #expect(resumed.stderr.contains("[jsae-pretrained] finished earlier") && resumed.stderr.contains("[traditional-pretrained] resuming from"),
                "\(resumed.stderr)")
        let a = try comparableRuns(dir + "/whole"), b = try comparableRuns(dir + "/cut")
        #expect(a.count == 4 && b.count == 4)
        for (x, y) in zip(a, b) {
            #expect(try JSONEncoder.sorted.encode(x) == JSONEncoder.sorted.encode(y), "\(x.name) differs after resume")
        }
    }

    @Test("--layers on the committed sample: one table row per layer from each run's own forward file, no snapshots, and a second call reuses the runs")
    func layers() throws {
        let (dir, r, _) = try LayerSample.monolithic.get()
        let args = ["reproduce"] + LayerSample.settings + ["--out", dir]
        #expect(r.status == 0, "\(r.stderr)")
        let summary = try JSONDecoder().decode(LayerSweepSummary.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json")))
        let report = try String(contentsOfFile: dir + "/report.md", encoding: .utf8)
        #expect(summary.layers.map(\.layer) == [3])
        for l in summary.layers {
            for run in [l.jsae, l.traditional] {
                // The share recomputed here from the run's forward file, independently of the report code.
                let J = try ForwardFile<Double>(run.forwardFiles[.trueInput]!).jacobian!
                #expect(Double(J.filter { abs($0) > 0.01 }.count) / Double(J.count) == run.shares[.trueInput]!.values[1], "\(run.name)")
                // The sweep evaluates each run once, at its end.
                #expect((run.snapshots ?? []).map(\.step) == [6] || run.snapshots == nil, "\(run.name): \(run.snapshots ?? [])")
            }
            let pct = { (v: Double) in String(format: "%.1f%%", 100 * v) }
            let row = "| 3 | \(pct(l.jsae.shares[.trueInput]!.values[1])) | \(pct(l.traditional.shares[.trueInput]!.values[1])) |"
            #expect(report.contains(row), "no row \(row)")
        }
        for png in ["layers-shares.png", "layers-ev.png"] {
            #expect(FileManager.default.fileExists(atPath: dir + "/" + png), "\(png)")
        }
        let again = try jsae(args)
        #expect(again.status == 0 && again.stderr.contains("finished earlier"), "\(again.stderr)")
        let second = try JSONDecoder().decode(LayerSweepSummary.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json")))
        #expect(try JSONEncoder.sorted.encode(second.layers) == JSONEncoder.sorted.encode(summary.layers))
    }

    @Test("bad input is one line and exit 2")
    func badInput() throws {
        let dir = temporaryDirectory()
        let r = try jsae(["reproduce", "--quick", "--pretrained", dir + "/missing.h5", "--out", dir + "/out"])
        #expect(r.status == 2 && r.stderr.contains(dir + "/missing.h5: no such file") && r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")

        let sample = ["--pretrained", packageRoot + "/reproduce/sample/minilm-l3-pretrained.h5",
                      "--randomized", packageRoot + "/reproduce/sample/minilm-l3-randomized.h5"]
        let cases: [([String], String)] = [
            (["--layers", "5-0"], "--layers"), (["--layers", "a"], "--layers"), (["--layers", "1,1"], "--layers"),
            (["--snapshots", "0"], "--snapshots"), (["--snapshots", "1,,2"], "--snapshots"), (["--tokens", "0"], "--tokens"),
            (["--eval-tokens", "-5"], "--eval-tokens"), (["--full"], "--quick and --full"),
            (["--layers", "0-1"] + sample, "{layer}"),
            (["--layers", "0-1", "--snapshots", "100"], "--snapshots is not available with --layers"),
            // More tokens than the sample has training rows: refused before any work, naming the file.
            (["--tokens", "100000"] + sample, "minilm-l3-pretrained.h5: has 2346 training rows"),
        ]
        for (args, mention) in cases {
            let out = dir + "/out-\(UUID().uuidString)"
            let o = try jsae(["reproduce", "--quick"] + args + ["--out", out])
            #expect(o.status == 2 && o.stderr.split(separator: "\n").count == 1 && o.stderr.contains(mention), "\(args): \(o.stderr)")
            #expect(!FileManager.default.fileExists(atPath: out), "\(args): the report folder was created")
        }
    }
}

/// summary.json's runs without what differs between two folders by nature:
/// wall times (of the runs and of the analyses) and paths.
func comparableRuns(_ dir: String) throws -> [RunSummary] {
    let s = try JSONDecoder().decode(ReproduceSummary.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json")))
    return s.runs.map { var r = $0; r.wallSeconds = nil; r.forwardFiles = [:]
                        r.analyses = r.analyses?.map { var a = $0; a.seconds = 0; return a }; return r }
}
