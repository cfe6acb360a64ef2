import Foundation
import Testing
import JSAECore
import JSAEIO
import _JSAETestSupport

/// golden/interop (golden/interop.py: an authors'-format pair, its activations and the numpy float64 Jacobian).
private let interop = packageRoot + "/golden/interop"
private let sample = packageRoot + "/reproduce/sample/minilm-l3-pretrained.h5"

private func json(_ path: String) throws -> [String: Any] {
    try #require(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
}

@Suite("jsae evaluate")
struct EvaluateCLITests {
    @Test("an imported authors' pair: the report's sections, a share recomputed from the forward file, and J equal to the golden float64 J")
    func goldenAuthorsPair() throws {
        let dir = temporaryDirectory("jsae-evaluate")
        let model = dir + "/authors.h5", out = dir + "/R"
        let imp = try jsae(["import", interop + "/authors", "--out", model])
        try #require(imp.status == 0, "\(imp.stderr)")
        let args = ["evaluate", "--model", model, "--activations", interop + "/activations.h5", "--out", out,
                    "--samples", "8", "--ablation-samples", "8", "--threads", "1"]
        let r = try jsae(args)
        try #require(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("|J| > 0.01 at the true input") && r.stdout.contains("NOT TESTED"), "\(r.stdout)")

        let report = try String(contentsOfFile: out + "/report.md", encoding: .utf8)
        for section in ["# Evaluation of one SAE pair", "## Jacobian sparsity", "| trueInput |", "| reconstruction |",
                        "### The headline share as the authors count it", "## Reconstruction (true input)", "## f_s linearity and ablation",
                        "## The authors' analysis path, emulated", "## A German-text computational unit", "## Plots",
                        "## Strongest connections", "## How this report was made", "| activations file | \(interop)/activations.h5 |"] {
            #expect(report.contains(section), "report.md lacks \(section)")
        }
        // The fixture records no split, no /ln_in and no document sources: each is said, not skipped silently.
        #expect(report.contains("the file records no held-out split") || report.contains("none recorded (no heldout_start_row)"))
        #expect(report.contains("Not measured: the activations file has no `/ln_in`"))
        #expect(report.contains("Not tested:"))
        for name in ["summary.json", "inputs.json", "jacobian-distribution.png", "data/heldout.h5", "forward/pair.trueInput.h5", "forward/pair.reconstruction.h5"] {
            #expect(FileManager.default.fileExists(atPath: out + "/" + name), "\(name) missing")
        }

        // The headline share, recomputed here from the forward file summary.json names, without the report's code.
        let summary = try json(out + "/summary.json")
        let run = try #require(summary["run"] as? [String: Any])
        let path = try #require((run["forwardFiles"] as? [String: String])?["trueInput"])
        let share = try #require((run["shares"] as? [String: [Double]])?["trueInput"]?[1])
        let f = try ForwardFile<Float>(path)
        let J = try #require(f.jacobian)
        let above = J.filter { abs($0) > 0.01 }.count
        // The same count over the same total gives the same Double, and
        // JSONEncoder writes a Double that reads back to the same bits.
        #expect(share == Double(above) / Double(J.count), "summary \(share), forward file \(above) of \(J.count)")

        // J against numpy float64 (golden/interop/expected.h5). The pair is
        // stored in float64 by import and evaluated in float32 like the
        // reproduction: J is a sum over d_mlp = 12 of products of O(1)
        // float32 values (|J| ≤ 0.7 here), so rounding leaves errors of a few
        // 1e-7; 1e-5 absolute is ~30× that and far below a real difference (a
        // wrong fold or MLP moves J by O(0.1)). Index sets must match exactly:
        // the golden tokens keep every top-k gap above 0.01, and the fixture
        // has no split, so all 6 rows are evaluated in file order.
        let e = try HDF5File.open(interop + "/expected.h5")
        try #require(try e.intAttribute("interop_version") == 1, "golden/interop/expected.h5 is stale: rerun golden/interop.py")
        let want: [Double] = try e.readFloats("/authors/jacobian").data
        #expect(f.inIndices == (try e.readInts("/authors/in_indices").data))
        #expect(f.outIndices == (try e.readInts("/authors/out_indices").data))
        try #require(J.count == want.count, "\(J.count) Jacobian entries, golden has \(want.count)")
        let c = closeness(J, want, rtol: 0, atol: 1e-5)
        #expect(c.ratio <= 1, "J differs from the golden by \(c)")

        // The same command again re-evaluates the same pair in the same folder.
        let again = try jsae(args)
        #expect(again.status == 0, "\(again.stderr)")
    }

    @Test("the committed sample with a pair trained in the test: the German and the processed-model sections")
    func committedSample() throws {
        let dir = temporaryDirectory("jsae-evaluate")
        let train = try jsae(["train", "--activations", sample, "--out", dir + "/run", "--steps", "4", "--expansion", "1", "--k", "4",
                              "--batch", "64", "--lr", "0.001", "--seed", "3", "--buffer-batches", "2", "--threads", "1"])
        try #require(train.status == 0, "\(train.stderr)")
        let out = dir + "/R"
        // Every held-out row (612, special ones left out): the first 256 alone are all from German documents.
        let r = try jsae(["evaluate", "--model", dir + "/run/model.h5", "--activations", sample, "--out", out,
                          "--samples", "16", "--ablation-samples", "16", "--threads", "1"])
        try #require(r.status == 0, "\(r.stderr)")
        let report = try String(contentsOfFile: out + "/report.md", encoding: .utf8)
        #expect(report.contains("## A German-text computational unit") && report.contains("### pair: output "), "no German unit in the report")
        #expect(report.contains("the JSAE has a German-text output latent"))
        #expect(!report.contains("draws its |J| from fewer inputs than the traditional pair's: its top 5"), "a comparison without a traditional pair")
        #expect(report.contains("| pair | processed (the authors' analysis path) |"), "no processed-model row")
        #expect(report.contains("held-out rows only") && report.contains("from row 2460"))
        #expect(FileManager.default.fileExists(atPath: out + "/forward/pair.processed-trueInput.h5"))
        #expect(FileManager.default.fileExists(atPath: out + "/german-unit.png"))
        let summary = try json(out + "/summary.json")
        let data = try #require(summary["data"] as? [String: Any])
        let special = try #require(data["specialRowsExcluded"] as? Int)
        #expect(special > 0 && data["evaluatedRows"] as? Int == 3072 - 2460 - special)
        let german = try #require(summary["german"] as? [String: Any])
        let units = try #require(german["units"] as? [[String: Any]])
        #expect(german["unavailable"] == nil && units.count == 1)
        // German and other tokens both evaluated, so the unit's precision means something.
        let germanTokens = try #require(units.first?["germanTokens"] as? Int)
        #expect(germanTokens > 0 && germanTokens < 3072 - 2460 - special)
    }

    @Test("bad inputs: one line naming the file or flag, exit 2, no output folder")
    func badInputs() throws {
        let dir = temporaryDirectory("jsae-evaluate")
        let acts = interop + "/activations.h5"
        let d6 = dir + "/d6.h5", single = dir + "/single.h5"
        try ModelFile.write(randomModel(PairShape.sweep[0], seed: 4).model, to: d6)           // d 6, the fixture has d 8
        let m8 = randomModel(PairShape.sweep[3], seed: 5).model                                  // d 8
        try ModelFile.write(try JSAEModel(saeIn: m8.saeIn, saeOut: nil, mlp: m8.mlp), to: single)
        // A NaN in an evaluated row is only met when the rows are read: it must still be refused before OUT exists.
        let pair8 = dir + "/pair8.h5", nanActs = dir + "/nan.h5"
        try ModelFile.write(m8, to: pair8)
        var x = randomModel(PairShape.sweep[3], seed: 6).x
        x[2, 1] = .nan
        try writeActivations(x, to: nanActs)
        let cases: [(args: [String], names: String)] = [
            (["--model", dir + "/missing.h5", "--activations", acts], dir + "/missing.h5"),
            (["--model", d6, "--activations", acts], "has d = 6"),
            (["--model", single, "--activations", acts], "has no /sae_out"),
            (["--model", d6, "--activations", acts, "--eval-tokens", "0"], "--eval-tokens"),
            (["--model", pair8, "--activations", nanActs], nanActs + ": /x contains NaN at row 2"),
        ]
        for (i, c) in cases.enumerated() {
            let out = dir + "/R\(i)"
            let r = try jsae(["evaluate"] + c.args + ["--out", out])
            #expect(r.status == 2, "\(c.args): status \(r.status)")
            let lines = r.stderr.split(separator: "\n")
            #expect(lines.count == 1 && r.stderr.contains(c.names), "\(c.args): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: out), "\(c.args) left \(out)")
        }

        // A folder holding another pair's evaluation is refused and left as it was.
        let a = dir + "/a.h5", b = dir + "/b.h5", out = dir + "/R"
        #expect(try jsae(["import", interop + "/authors", "--out", a]).status == 0)
        #expect(try jsae(["import", "--sae-in", interop + "/saelens_in", "--sae-out", interop + "/saelens_out", "--mlp", acts, "--out", b]).status == 0)
        let small = ["--samples", "4", "--ablation-samples", "4", "--threads", "1"]
        try #require(try jsae(["evaluate", "--model", a, "--activations", acts, "--out", out] + small).status == 0)
        let before = try Data(contentsOf: URL(fileURLWithPath: out + "/summary.json"))
        let other = try jsae(["evaluate", "--model", b, "--activations", acts, "--out", out] + small)
        #expect(other.status == 2 && other.stderr.split(separator: "\n").count == 1 && other.stderr.contains("another pair"), "\(other.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/summary.json")) == before)
    }
}
