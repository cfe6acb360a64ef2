import Foundation
import JSAECore
import JSAEIO

/// TransformerLens' processed model, emulated for the hooked MLP.
///
/// The authors train on a model loaded without processing
/// (`jacobian_saes/load_model.py`: `from_pretrained_no_processing`), so the
/// input SAE reads the LayerNorm's output after its affine part. Their
/// analysis scripts (`runners/histogram.py`, `linear.py`, `ablation.py`,
/// through `jacobian_saes/utils.py`'s `load_pretrained` at b73cadb) load
/// pre-trained models with `HookedTransformer.from_pretrained`, whose
/// defaults fold the LayerNorm and centre the writing weights. For the
/// hooked MLP that gives, with the LayerNorm's weight w and bias b and
/// C = I − 11ᵀ/d (centring over d):
///
///     input:  x_n = (x − b) / w            (`ln2.hook_normalized` of LNPre)
///     W_in' = C · diag(w) · W_in,  b_in' = b_in + b · W_in
///     W_out' = W_out · C,          b_out' = C · b_out
///
/// so the MLP output is C·f(x) (the same function on x_n up to the centring
/// of the output), but the SAE pair reads inputs it was not trained on, and
/// J carries diag(w) and both centrings. Randomised models are loaded
/// without processing in both paths, so this applies to pre-trained ones only.
enum ProcessedModel {
    /// The hooked LayerNorm's weight and bias (`/ln_in`), or nil when the file does not store them.
    static func layerNorm(_ reader: ActivationsReader) throws -> (w: [Double], b: [Double])? {
        let f = reader.file
        guard f.exists("/ln_in/weight"), f.exists("/ln_in/bias") else { return nil }
        let w: [Double] = try f.readVector("/ln_in/weight"), b: [Double] = try f.readVector("/ln_in/bias")
        guard w.count == reader.d, b.count == reader.d else {
            throw JSAEError(file: reader.path, "/ln_in/weight and /ln_in/bias must have d = \(reader.d) entries, have \(w.count) and \(b.count)")
        }
        // Folding divides by w: a zero or non-finite entry makes x_n undefined.
        guard w.allSatisfy({ $0.isFinite && $0 != 0 }), b.allSatisfy(\.isFinite) else {
            throw JSAEError(file: reader.path, "/ln_in holds a zero or non-finite weight, or a non-finite bias: the processed model is undefined")
        }
        return (w, b)
    }

    /// The folded and centred MLP, computed in Double.
    static func mlp(_ m: MLP<Float>, w: [Double], b: [Double]) throws -> MLP<Float> {
        let d = m.d, h = m.dMlp
        let wIn = m.wIn.data.map(Double.init), bIn = m.bIn.map(Double.init), wOut = m.wOut.data.map(Double.init), bOut = m.bOut.map(Double.init)
        var fIn = [Double](repeating: 0, count: d * h), fbIn = bIn
        for c in 0..<d { for r in 0..<h { fIn[c * h + r] = w[c] * wIn[c * h + r]; fbIn[r] += b[c] * wIn[c * h + r] } }
        for r in 0..<h {
            let mean = (0..<d).reduce(0.0) { $0 + fIn[$1 * h + r] } / Double(d)
            for c in 0..<d { fIn[c * h + r] -= mean }
        }
        var fOut = wOut
        for r in 0..<h {
            let mean = (0..<d).reduce(0.0) { $0 + wOut[r * d + $1] } / Double(d)
            for c in 0..<d { fOut[r * d + c] -= mean }
        }
        let meanOut = bOut.reduce(0, +) / Double(d)
        return try MLP<Float>(wIn: Matrix(rows: d, cols: h, data: fIn.map(Float.init)), bIn: fbIn.map(Float.init),
                              wOut: Matrix(rows: h, cols: d, data: fOut.map(Float.init)), bOut: bOut.map { Float($0 - meanOut) },
                              activation: m.activation)
    }

    /// x_n = (x − b)/w, row by row, then centred: LNPre's output has mean 0
    /// over d exactly, and (x − b)/w from a float16-stored x misses it by the
    /// storage error scaled by b/w.
    static func inputs(_ x: Matrix<Float>, w: [Double], b: [Double]) -> Matrix<Float> {
        var out = x
        var row = [Double](repeating: 0, count: x.cols)
        for r in 0..<x.rows {
            for c in 0..<x.cols { row[c] = (Double(x[r, c]) - b[c]) / w[c] }
            let mean = row.reduce(0, +) / Double(max(x.cols, 1))
            for c in 0..<x.cols { out[r, c] = Float(row[c] - mean) }
        }
        return out
    }
}
