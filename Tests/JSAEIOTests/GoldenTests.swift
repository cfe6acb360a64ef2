import Foundation
import Testing
import JSAECore
import JSAEIO
import JSAERuns
import _JSAETestSupport

let goldenVersion = Golden.version
let goldenCases = Golden.cases

func goldenPath(_ c: String, _ file: String) throws -> String { try Golden.path(c, file) }

@Suite("Golden files from the PyTorch reference")
struct GoldenTests {
    /// Runs the whole user path (read model and activations, stream, write a
    /// forward file, read it back) and compares with the golden forward file.
    func check<T: JSAEScalar>(_ c: String, _ point: EvaluationPoint, _: T.Type, rtol: Double, atol: Double) throws {
        let modelPath = try goldenPath(c, "model.h5")
        let golden = try ForwardFile<Double>(try goldenPath(c, "forward.\(point.rawValue).h5"))
        let acts = try ActivationsReader(try goldenPath(c, "activations.h5"))
        let model: JSAEModel<T> = try ModelFile.read(modelPath)
        let out = temporaryDirectory() + "/forward.h5"
        var opts = ForwardOptions()
        opts.point = point
        opts.lambda = golden.lambda
        opts.chunkTokens = 2          // exercise streaming across chunk boundaries
        opts.jacobianChunk = 3
        try runForward(model: model, activations: acts, modelPath: modelPath, outPath: out, options: opts)
        let got = try ForwardFile<Double>(out)
        #expect(got.point == point)
        #expect(got.inIndices == golden.inIndices, "\(c) \(point): /sae_in/indices")
        #expect(got.outIndices == golden.outIndices, "\(c) \(point): /sae_out/indices")
        let pairs: [(String, [Double], [Double])] = [
            ("/sae_in/values", got.inValues, golden.inValues),
            ("/x_hat", got.xHat.data, golden.xHat.data),
            ("/sae_out/values", got.outValues!, golden.outValues!),
            ("/y", got.y!.data, golden.y!.data),
            ("/y_hat", got.yHat!.data, golden.yHat!.data),
            ("/jacobian", got.jacobian!, golden.jacobian!),
            ("attributes", [got.mseIn, got.mseOut!, got.jacobianL1!, got.loss],
             [golden.mseIn, golden.mseOut!, golden.jacobianL1!, golden.loss]),
        ]
        for (name, a, b) in pairs {
            let r = closeness(a, b, rtol: rtol, atol: atol)
            #expect(r.ratio <= 1, "\(c) \(point) \(T.precisionName) \(name)[\(r.index)]: \(r.a) vs golden \(r.b)")
        }
    }

    // Double vs PyTorch float64: same maths, different summation order and
    // libm; observed differences are ≤ 1e-15, so 1e-10 / 1e-12 is pure rounding headroom.
    @Test("Double matches the golden files", arguments: goldenCases, EvaluationPoint.allCases)
    func double(_ c: String, _ point: EvaluationPoint) throws {
        try check(c, point, Double.self, rtol: 1e-10, atol: 1e-12)
    }

    // Float (ε ≈ 6e-8) through sums of ≤ d·d_mlp = 60 O(1) products: ≲ 1e-5.
    @Test("Float matches the golden files", arguments: goldenCases, EvaluationPoint.allCases)
    func float(_ c: String, _ point: EvaluationPoint) throws {
        try check(c, point, Float.self, rtol: 1e-4, atol: 1e-5)
    }

    @Test("The ties case really has ties, broken lower index first")
    func tiesPresent() throws {
        let g = try ForwardFile<Double>(try goldenPath("ties", "forward.trueInput.h5"))
        // Latents 2 and 5 have identical encoders: where both are selected, 2 comes first.
        var seen = 0
        for b in 0..<(g.inIndices.count / g.k) {
            let row = Array(g.inIndices[(b * g.k)..<((b + 1) * g.k)])
            if let i2 = row.firstIndex(of: 2), let i5 = row.firstIndex(of: 5) { #expect(i2 < i5); seen += 1 }
        }
        #expect(seen > 0)
    }

    @Test("A missing golden file fails with a one-line hint naming the script")
    func missingHint() {
        do {
            _ = try Golden.path("no-such-case", "model.h5")
            Issue.record("expected an error")
        } catch {
            let s = "\(error)"
            #expect(s.contains("golden/generate.py") && s.contains("missing") && !s.contains("\n"))
        }
    }

    @Test("A stale golden file fails with a one-line hint naming the script")
    func staleHint() throws {
        let root = temporaryDirectory()
        try FileManager.default.createDirectory(atPath: root + "/golden/old", withIntermediateDirectories: true)
        let f = try HDF5File.create(root + "/golden/old/model.h5")
        try f.setAttribute("golden_version", .int(goldenVersion - 1))
        f.close()
        do {
            _ = try Golden.path("old", "model.h5", root: root)
            Issue.record("expected an error")
        } catch {
            let s = "\(error)"
            #expect(s.contains("stale") && s.contains("golden/generate.py") && !s.contains("\n"))
        }
    }
}
