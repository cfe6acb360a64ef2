import Foundation
import Testing
import JSAECore
@testable import JSAEReport
import _JSAETestSupport

/// The typed results: run identities, shares keyed by evaluation point, one
/// metrics type, and summary.json's layout, which other people's scripts read.
@Suite("typed reproduction results")
struct RunResultsTests {
    @Test("run names spell and parse back: main runs, layers, λ-sweep points")
    func runNames() throws {
        let expected: [(RunID, String)] = [
            (.jsaePretrained, "jsae-pretrained"), (.traditionalPretrained, "traditional-pretrained"),
            (.jsaeRandomized, "jsae-randomized"), (.traditionalRandomized, "traditional-randomized"),
            (RunID(.jsae, .layer(0)), "jsae-l0"), (RunID(.traditional, .layer(12)), "traditional-l12"),
            (.sweep(lambda: 0.5), "sweep-lambda-0.5"), (.sweep(lambda: 3), "sweep-lambda-3.0"),
        ]
        for (id, name) in expected {
            #expect(id.name == name)
            #expect(RunID(name: name) == id, "\(name)")
        }
        for junk in ["", "jsae", "jsae-", "pair", "lasso-pretrained", "jsae-l", "jsae-l03", "jsae-l-1", "jsae-pretrained2",
                     "sweep-lambda-", "sweep-lambda-x", "sweep-lambda-nan", "sweep-lambda-0.50"] {
            #expect(RunID(name: junk) == nil, "\(junk) parsed")
        }
        #expect(RunID.jsaePretrained.data.key == "pretrained" && RunID(.jsae, .layer(3)).data.key == "l3")
    }

    @Test("shares decode only with one value per threshold")
    func sharesShape() throws {
        let good = try JSONDecoder().decode(JacobianShares.self, from: Data("[0.4, 0.3, 0.2, 0.1]".utf8))
        #expect(good[.above0_005] == 0.4 && good.headline == 0.3 && good[.above0_02] == 0.1)
        for bad in ["[]", "[0.1, 0.2, 0.3]", "[0.1, 0.2, 0.3, 0.4, 0.5]", "{\"a\": 1}"] {
            #expect(throws: DecodingError.self, "\(bad)") { try JSONDecoder().decode(JacobianShares.self, from: Data(bad.utf8)) }
        }
    }

    @Test("a summary without a main run is refused, naming every one missing")
    func mainRunsMissing() throws {
        func run(_ id: RunID) -> RunSummary {
            RunSummary(name: id.name, data: id.data.key, lambda: 0, forwardFiles: [:], shares: [:],
                       metrics: HeldOutMetrics(explainedVarianceIn: 0, explainedVarianceOut: 0, mseIn: 0, mseOut: 0, l0In: 0, l0Out: 0,
                                               deadIn: 0, deadOut: 0, jacobianL1: nil),
                       linearity: [:], ablationAgreement: 0, samples: 0, thresholdCounts: nil, analyses: nil)
        }
        let e = try #require(throws: JSAEError.self) { try MainRuns([run(.jsaePretrained), run(.traditionalRandomized)]) }
        #expect(e.description == "the summary lacks the runs traditional-pretrained, jsae-randomized")
        #expect(try MainRuns(RunID.main.map(run)).jsaeRandomized.name == "jsae-randomized")
    }

    @Test("the paper's figures print as the paper gives them (docs/jsae-spec.md)")
    func paperFigures() {
        #expect(PaperFigures.sweepLine == "51% / 21% / 8.2% / 4.2% at λ = 0.01 / 0.5 / 1 / 3")
        #expect(RunID.main.map { PaperFigures.share($0).map(PaperFigures.percent) } == ["11.3%", "68.8%", "33.6%", "86.9%"])
        #expect(PaperFigures.times(PaperFigures.ratio) == "6.1×" && PaperFigures.times(PaperFigures.ratioRandom) == "2.6×")
        #expect(PaperFigures.share(.sweep(lambda: 0.5)) == nil && PaperFigures.share(RunID(.jsae, .layer(3))) == nil)
    }

    /// Every committed summary.json, decoded into the typed results and
    /// encoded again, must be the same JSON: its layout is a public format.
    @Test("committed summaries keep their layout through the typed results")
    func committedLayout() throws {
        let root = packageRoot + "/reproduce/results"
        let names = try FileManager.default.contentsOfDirectory(atPath: root).sorted()
            .filter { FileManager.default.fileExists(atPath: root + "/\($0)/summary.json") }
        #expect(!names.isEmpty)
        for name in names {
            let data = try Data(contentsOf: URL(fileURLWithPath: root + "/\(name)/summary.json"))
            let object = try #require(try JSONSerialization.jsonObject(with: data) as? NSDictionary)
            let again = object["layers"] != nil
                ? try JSONEncoder().encode(JSONDecoder().decode(LayerSweepSummary.self, from: data))
                : try JSONEncoder().encode(JSONDecoder().decode(ReproduceSummary.self, from: data))
            let reread = try #require(try JSONSerialization.jsonObject(with: again) as? NSDictionary)
            #expect(reread == object, "\(name)/summary.json changes through RunSummary")
        }
    }
}
