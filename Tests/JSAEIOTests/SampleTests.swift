import Foundation
import Testing
import JSAECore
import JSAEIO
import _JSAETestSupport

/// The committed real sample (reproduce/sample): all-MiniLM-L6-v2 layer 3 on
/// Debian fortunes (English and German), pre-trained and randomised, written
/// by reproduce/export_activations.py.
@Suite("Committed real-model sample")
struct SampleTests {
    static let files = ["pretrained", "randomized"].map { packageRoot + "/reproduce/sample/minilm-l3-\($0).h5" }

    @Test("follows the activations layout, with provenance", arguments: files)
    func layout(_ path: String) throws {
        let r = try ActivationsReader(path)
        #expect(r.tokens == 3072 && r.d == 384 && r.hasY)
        #expect(try r.file.intAttribute("tokens") == r.tokens)
        for key in ["source_model", "hook_in", "hook_out", "text_source", "exporter"] {
            #expect(try r.file.stringAttribute(key)?.isEmpty == false, "\(key)")
        }
        #expect(try r.file.intAttribute("layer") == 3)
        #expect(try r.file.stringAttribute("activation") == "gelu")
        let side = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path + ".tokens.json"))) as! [String: Any]
        #expect((side["tokens"] as! [String]).count == r.tokens)
    }

    @Test("the stored MLP reproduces the model's own MLP output", arguments: files)
    func mlpReproducesY(_ path: String) throws {
        let r = try ActivationsReader(path)
        let mlp: MLP<Double> = try MLPFile.read(r.file, d: r.d)
        let x: Matrix<Double> = try r.x(0..<r.tokens)
        let y: Matrix<Double> = try r.file.readMatrix("/y")
        let f = mlp.forward(x).y
        let err = squaredDistance(f, y).squareRoot() / y.data.reduce(0) { $0 + $1 * $1 }.squareRoot()
        // x, the weights and y are stored in float16 (unit roundoff 4.9e-4);
        // measured 4.0e-4 relative. The exporter checked 4e-7 before rounding.
        #expect(err < 2e-3, "relative error \(err)")
    }

    @Test("the randomised control shares the text but not the weights")
    func control() throws {
        let a = try HDF5File.open(Self.files[0]), b = try HDF5File.open(Self.files[1])
        #expect(try a.intAttribute("randomized") == 0 && b.intAttribute("randomized") == 1)
        let ta = try Data(contentsOf: URL(fileURLWithPath: Self.files[0] + ".tokens.json"))
        let tb = try Data(contentsOf: URL(fileURLWithPath: Self.files[1] + ".tokens.json"))
        #expect(ta == tb)
        let wa: [Float] = try a.readVector("/mlp/b_in"), wb: [Float] = try b.readVector("/mlp/b_in")
        #expect(wa == wb)  // biases kept
        let Wa: Matrix<Float> = try a.readMatrix("/mlp/W_in"), Wb: Matrix<Float> = try b.readMatrix("/mlp/W_in")
        #expect(Wa != Wb)  // weight matrices re-drawn
        let la: [Float] = try a.readVector("/ln_in/weight"), lb: [Float] = try b.readVector("/ln_in/weight")
        #expect(la == lb)  // LayerNorm kept
    }

    @Test("the randomised control is drawn at the authors' scale: its MLP output's mean square is within 2× of the pre-trained one's")
    func controlScale() throws {
        let a = try HDF5File.open(Self.files[0]), b = try HDF5File.open(Self.files[1])
        #expect(try b.stringAttribute("randomization_rule") == "0.8/sqrt(d_model)")
        #expect(abs(try b.doubleAttribute("randomization_std")! - 0.8 / Double(384).squareRoot()) < 1e-12)
        func meanSquare(_ f: HDF5File) throws -> Double {
            let y: Matrix<Double> = try f.readMatrix("/y")
            return y.data.reduce(0) { $0 + $1 * $1 } / Double(y.count)
        }
        let ratio = try meanSquare(b) / meanSquare(a)
        #expect(ratio > 0.5 && ratio < 2, "randomised / pre-trained mean y²/d = \(ratio)")
    }
}
