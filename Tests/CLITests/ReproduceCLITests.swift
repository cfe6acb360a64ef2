import Foundation
import Testing
import JSAECore
import JSAEIO
import JSAEReport
import _JSAETestSupport

@Suite("jsae reproduce")
struct ReproduceCLITests {
    @Test("--quick on the committed sample: report structure, plots, and numbers that match their forward files")
    func quick() throws {
        let dir = temporaryDirectory()
        // --quick, further shrunk so the debug build that `swift test` uses
        // finishes in seconds; the release build runs plain --quick in < 1 min.
        let r = try jsae(["reproduce", "--quick", "--steps", "6", "--samples", "6", "--expansion", "2", "--batch", "128",
                          "--pretrained", packageRoot + "/reproduce/sample/minilm-l3-pretrained.h5",
                          "--randomized", packageRoot + "/reproduce/sample/minilm-l3-randomized.h5", "--out", dir])
        #expect(r.status == 0, "\(r.stderr)")
        let verdicts = r.stdout.split(separator: "\n").filter { $0.hasPrefix("REPRODUCED:") || $0.hasPrefix("NOT REPRODUCED:") }
        #expect(verdicts.count == 5)

        let report = try String(contentsOfFile: dir + "/report.md", encoding: .utf8)
        for section in ["## Verdicts", "## Jacobian sparsity", "## Reconstruction", "## f_s linearity and ablation",
                        "## Plots", "## Strongest connections"] {
            #expect(report.contains(section), "missing \(section)")
        }
        for v in verdicts { #expect(report.contains(String(v)), "verdict not in the report: \(v)") }
        for png in ["jacobian-distribution.png", "sparsity-bars.png", "lambda-sweep.png"] {
            let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + png))
            #expect(data.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) && data.count > 10_000, "\(png)")
        }

        let summary = try JSONDecoder().decode(ReproduceSummary.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json")))
        #expect(Set(summary.runs.map(\.name)) == ["jsae-pretrained", "traditional-pretrained", "jsae-randomized", "traditional-randomized"])
        for run in summary.runs {
            let held: Matrix<Double> = try ActivationsReader(dir + "/data/heldout-\(run.data).h5").x(0..<summary.heldOutTokens)
            for point in ["trueInput", "reconstruction"] {
                // Recomputed here from the forward file, independently of the report code.
                let f = try ForwardFile<Double>(run.forwardFiles[point]!)
                #expect(f.point.rawValue == point && f.xHat.rows == summary.heldOutTokens)
                let J = f.jacobian!
                let shares = [0.005, 0.01, 0.015, 0.02].map { t in Double(J.filter { abs($0) > t }.count) / Double(J.count) }
                #expect(shares == run.shares[point]!, "\(run.name) \(point)")
                let row = "| \(run.name) | \(point) | " + shares.map { String(format: "%.1f%%", 100 * $0) }.joined(separator: " | ")
                #expect(report.contains(row), "report row for \(run.name) \(point)")
                if point == "trueInput" {
                    #expect(f.mseIn == run.mseIn)
                    // Float vs Double subtraction of the same stored values: rounding only.
                    #expect(abs(explainedVariance(held, f.xHat) - run.explainedVarianceIn) < 1e-5)
                    #expect(abs(explainedVariance(f.y!, f.yHat!) - run.explainedVarianceOut) < 1e-5)
                    let l0 = Double(f.inValues.filter { $0 > 0 }.count) / Double(summary.heldOutTokens)
                    #expect(abs(l0 - run.l0In) < 1e-12)
                }
            }
            let lin = run.linearity.values.reduce(0, +)
            #expect(abs(lin - 1) < 1e-12 && run.samples == 6)
        }
    }

    @Test("bad input is one line and exit 2")
    func badInput() throws {
        let dir = temporaryDirectory()
        let r = try jsae(["reproduce", "--quick", "--pretrained", dir + "/missing.h5", "--out", dir + "/out"])
        #expect(r.status == 2 && r.stderr.contains(dir + "/missing.h5: no such file") && r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
    }
}
