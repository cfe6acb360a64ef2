import Foundation
import JSAECore
import JSAEIO

/// A forward pass must not write NaN or Inf and report exit 0 (a model with
/// huge weights overflows in float): the first non-finite output is an error
/// naming the dataset, the token and the model, as divergence is in training.
func requireFiniteForward<T: JSAEScalar>(_ r: PairForward<T>, rows: Range<Int>, k: Int, d: Int, model: String) throws {
    var outputs: [(String, [T], Int)] = [("/sae_in/values", r.codesIn.values, k), ("/x_hat", r.xHat.data, d)]
    if let co = r.codesOut { outputs.append(("/sae_out/values", co.values, k)) }
    if let y = r.y { outputs.append(("/y", y.data, d)) }
    if let yHat = r.yHat { outputs.append(("/y_hat", yHat.data, d)) }
    if let j = r.jacobian { outputs.append(("/jacobian", j, k * k)) }
    for (name, data, cols) in outputs {
        if let i = data.firstNonFiniteIndex {
            let what = data[i].isNaN ? "NaN" : "Inf"
            throw JSAEError(file: model, "forward output \(name) is \(what) at token \(rows.lowerBound + i / max(cols, 1)), "
                            + "position \(i % max(cols, 1)) (the model's values overflow \(T.precisionName); nothing was written)")
        }
    }
}

/// The same for the file's summary numbers (sums of squares may overflow
/// even when every output is finite) and the gradients.
func requireFiniteSummary(_ c: LossComponents, model: String, precision: String) throws {
    for (name, v) in [("mse_in", c.mseIn), ("mse_out", c.mseOut), ("jacobian_l1", c.jacobianL1), ("loss", c.loss)] where !v.isFinite {
        throw JSAEError(file: model, "forward output \(name) is \(v.isNaN ? "NaN" : "Inf") (the model's values overflow \(precision); nothing was written)")
    }
}

func requireFiniteGradient<T: JSAEScalar>(_ g: [T], name: String, model: String) throws {
    if let i = g.firstNonFiniteIndex {
        throw JSAEError(file: model, "forward output \(name) is \(g[i].isNaN ? "NaN" : "Inf") at index \(i) (nothing was written)")
    }
}
