import Foundation
import JSAECore
import JSAEIO

/// The golden files written by `golden/generate.py` (the independent PyTorch
/// reference), found under the package root, each checked for the
/// `golden_version` these checks expect: a missing or stale file is a
/// one-line error naming the script to rerun. Used by the tests and by
/// jsae-bench's fingerprint alike.
public enum Golden {
    public static let script = "golden/generate.py"
    /// Must equal GOLDEN_VERSION in golden/generate.py.
    public static let version = 2
    /// The forward/gradient cases (golden/README.md).
    public static let cases = ["basic", "tanh_k1", "k_eq_m", "ties"]

    /// `golden/<case>/<file>` under `root`, after checking its `golden_version`.
    public static func path(_ name: String, _ file: String, root: String = packageRoot) throws -> String {
        let rel = "golden/\(name)/\(file)"
        let full = root + "/" + rel
        guard FileManager.default.fileExists(atPath: full) else {
            throw JSAEError(file: rel, "golden file is missing: run `python \(script)` (see golden/README.md)")
        }
        let f = try HDF5File.open(full)
        let v = try f.intAttribute("golden_version")
        guard v == version else {
            throw JSAEError(file: rel, "golden file is stale (golden_version \(v.map(String.init) ?? "none"), tests expect \(version)): rerun `python \(script)` (see golden/README.md)")
        }
        return full
    }
}

/// The golden 20-step run (golden/train): initial model, data, configuration,
/// and what PyTorch produced at every step and at the end.
public struct GoldenRun {
    public var initial: JSAEModel<Double>
    public var x: Matrix<Double>
    public var config: TrainConfig
    /// Per-step loss, mse_in, mse_out, jacobian_l1, lr, lambda, grad_norm.
    public var curve: [String: [Double]]
    public var final: (state: TrainState<Double>, config: TrainConfig, provenance: CheckpointFile.Provenance)

    public init(root: String = packageRoot) throws {
        let acts = try HDF5File.open(try Golden.path("train", "activations.h5", root: root))
        initial = try ModelFile.read(try Golden.path("train", "initial.h5", root: root))
        x = try acts.readMatrix("/x")
        let finalPath = try Golden.path("train", "final.h5", root: root)
        final = try CheckpointFile.read(finalPath)
        config = final.config
        let f = try HDF5File.open(finalPath)
        curve = [:]
        for key in ["loss", "mse_in", "mse_out", "jacobian_l1", "lr", "lambda", "grad_norm"] {
            curve[key] = try f.readVector("/golden/curve/\(key)")
        }
    }

    /// Runs the Swift trainer over the same batches, in order, in precision
    /// T; `lrScale` perturbs the learning rate (the CI gate's self-test).
    public func run<T: JSAEScalar>(_: T.Type, lrScale: Double = 1) throws -> (state: TrainState<T>, reports: [StepReport]) {
        var c = config
        c.lr *= lrScale
        var state = TrainState(model: initial.converted(to: T.self))
        let ws = state.workspace(config: c)
        var reports: [StepReport] = []
        let B = c.batch
        for t in 0..<c.totalSteps {
            reports.append(try state.step(x.rows((t * B)..<((t + 1) * B)).converted(to: T.self), config: c, workspace: ws))
        }
        return (state, reports)
    }
}
