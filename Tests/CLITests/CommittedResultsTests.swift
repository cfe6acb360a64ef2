import Foundation
import Testing
import JSAECore
import JSAEReport
import _JSAETestSupport

/// The reproduction results committed under reproduce/results/<name>/: each
/// summary.json must be what its report.md shows, meet its stated token
/// budget, and never have trained on a token twice.
@Suite("Committed reproduction results")
struct CommittedResultsTests {
    let root = packageRoot + "/reproduce/results"

    func folders() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        return names.sorted().filter { FileManager.default.fileExists(atPath: root + "/\($0)/summary.json") }
    }

    func pct(_ v: Double) -> String { String(format: "%.1f%%", 100 * v) }

    @Test("there are committed results, each with report.md and its plots")
    func present() throws {
        #expect(!folders().isEmpty, "nothing under \(root)")
        for name in folders() {
            let report = try String(contentsOfFile: root + "/\(name)/report.md", encoding: .utf8)
            for png in report.matches(of: /!\[[^\]]*\]\(([^)]+\.png)\)/).map({ String($0.1) }) {
                #expect(FileManager.default.fileExists(atPath: root + "/\(name)/\(png)"), "\(name): \(png) is linked but missing")
            }
            #expect(report.contains("| command |") && report.contains("| git commit |") && report.contains("| machine |"), "\(name): no provenance")
        }
    }

    @Test("committed results name files relative to the repository, never a machine's absolute paths")
    func relativePaths() throws {
        for name in folders() {
            for file in ["report.md", "summary.json", "README.md"] {
                guard let text = try? String(contentsOfFile: root + "/\(name)/\(file)", encoding: .utf8) else { continue }
                // JSONEncoder writes "/" as "\/".
                let plain = text.replacingOccurrences(of: "\\/", with: "/")
                for prefix in ["/work/", "/tmp/", "/root/", "/home/", "/opt/", "/usr/local/"] {
                    #expect(!plain.contains(prefix), "\(name)/\(file) names an absolute path under \(prefix)")
                }
            }
        }
    }

    @Test("each summary.json agrees with its report.md, meets its token budget and trains on each token at most once")
    func consistent() throws {
        for name in folders() {
            let dir = root + "/\(name)"
            let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json"))
            let report = try String(contentsOfFile: dir + "/report.md", encoding: .utf8)
            let keys = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            if keys["layers"] != nil {
                let s = try JSONDecoder().decode(LayerSweepSummary.self, from: data)
                for l in s.layers {
                    let row = "| \(l.layer) | \(pct(l.jsae.shares[.trueInput]!.values[1])) | \(pct(l.traditional.shares[.trueInput]!.values[1])) |"
                    #expect(report.contains(row), "\(name): no row \(row)")
                    for run in [l.jsae, l.traditional] { try checkBudget(run, options: s.options, folder: name) }
                }
            } else {
                let s = try JSONDecoder().decode(ReproduceSummary.self, from: data)
                #expect(s.runs.count >= 4)
                for run in s.runs {
                    for point in ["trueInput", "reconstruction"] {
                        let row = "| \(run.name) | \(point) | " + run.shares[EvaluationKey(point)!]!.values.map(pct).joined(separator: " | ") + " |"
                        #expect(report.contains(row), "\(name): no row \(row)")
                    }
                    try checkBudget(run, options: s.options, folder: name)
                    if let snaps = run.snapshots {
                        #expect(snaps.map(\.tokens) == snaps.map(\.tokens).sorted() && snaps.last?.tokens == run.trainedTokens)
                        #expect(snaps.last?.shares == run.shares[.trueInput], "\(name) \(run.name): last snapshot is not the final evaluation")
                    }
                }
                for v in s.verdicts + (s.trends ?? []) { #expect(report.contains(v), "\(name): verdict not in the report: \(v)") }
                let snaps = { (n: String) in s.runs.first { $0.name == n }?.snapshots ?? [] }
                for (j, t) in zip(snaps("jsae-pretrained"), snaps("traditional-pretrained")) {
                    let row = "| \(j.tokens) | \(pct(j.shares.values[1])) | \(pct(t.shares.values[1])) |"
                    #expect(report.contains(row), "\(name): no scale row \(row)")
                }
            }
        }
    }

    func checkBudget(_ run: RunSummary, options: [String: String], folder: String) throws {
        guard let budget = options["tokens"].flatMap({ Int($0) }) else { return }
        let tokens = try #require(run.trainedTokens), rows = try #require(run.trainingRows), epochs = try #require(run.epochs)
        #expect(tokens >= budget, "\(folder) \(run.name): \(tokens) tokens < the stated \(budget)")
        #expect(tokens <= rows && epochs <= 1, "\(folder) \(run.name): \(tokens) tokens from \(rows) rows, \(epochs) epochs")
        #expect(abs(epochs - Double(tokens) / Double(rows)) < 1e-12)
        // Refills are whole shuffling buffers: what the run read, not just
        // what it trained on, must fit in the training rows.
        let steps = try #require(run.steps), batches = try #require(run.shuffleBufferBatches), batch = tokens / steps
        #expect(((steps + batches - 1) / batches) * batches * batch <= rows, "\(folder) \(run.name): the buffer read past the training rows")
    }
}
