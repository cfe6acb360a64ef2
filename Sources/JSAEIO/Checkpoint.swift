import Foundation
import JSAECore

/// `kind = checkpoint`: a model, Adam's moments, the step reached and the
/// whole training configuration, written atomically.
public enum CheckpointFile {
    /// `DIR/checkpoint-<step>.h5`, zero-padded so names sort by step.
    public static func path(in dir: String, step: Int) -> String {
        dir + "/checkpoint-" + String(format: "%09d", step) + ".h5"
    }

    /// The checkpoints in `dir`, oldest first (names sort by step): the one
    /// listing that resuming, pruning and reporting use.
    public static func list(in dir: String) -> [String] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return [] }
        return names.filter { $0.hasPrefix("checkpoint-") && $0.hasSuffix(".h5") }.sorted().map { dir + "/" + $0 }
    }

    /// The checkpoint with the highest step in `dir`, if any.
    public static func latest(in dir: String) -> String? { list(in: dir).last }

    /// Extra provenance stored with the configuration.
    public struct Provenance: Sendable {
        public var activationsFile: String
        public var shuffleBufferTokens: Int
        public init(activationsFile: String, shuffleBufferTokens: Int) {
            self.activationsFile = activationsFile; self.shuffleBufferTokens = shuffleBufferTokens
        }
    }

    public static func write<T: JSAEScalar>(_ state: TrainState<T>, config: TrainConfig, provenance: Provenance,
                                            to path: String) throws {
        try atomicWrite(to: path) { temp in
            let f = try HDF5File.create(temp)
            try FileFormat.writeHeader(f, kind: .checkpoint)
            try f.setAttribute("k", .int(state.model.k))
            try f.setAttribute("activation", .string((state.model.mlp?.activation ?? .gelu).rawValue))
            try writeSAE(f, group: "/sae_in", state.model.saeIn)
            try writeMoments(f, group: "sae_in", state.adamIn)
            if let o = state.model.saeOut, let mo = state.adamOut {
                try writeSAE(f, group: "/sae_out", o)
                try writeMoments(f, group: "sae_out", mo)
            }
            if let mlp = state.model.mlp { try writeMLP(f, mlp) }
            try f.setAttribute("step", .int(state.step))
            try writeConfig(f, config)
            try f.setAttribute("activations_file", .string(provenance.activationsFile))
            try f.setAttribute("shuffle_buffer_tokens", .int(provenance.shuffleBufferTokens))
            try f.setAttribute("precision", .string(T.precisionName))
            f.close()
        }
    }

    private static func writeMoments<T: JSAEScalar>(_ f: HDF5File, group: String, _ a: AdamMoments<T>) throws {
        try writeTensors(f, a.expAvg) { "/optimizer/\(group)/\($0)/m" }
        try writeTensors(f, a.expAvgSq) { "/optimizer/\(group)/\($0)/v" }
    }

    private static func readMoments<T: JSAEScalar>(_ f: HDF5File, group: String, like sae: TopKSAE<T>) throws -> AdamMoments<T> {
        AdamMoments(expAvg: try readTensors(f, d: sae.d, m: sae.m) { "/optimizer/\(group)/\($0)/m" },
                    expAvgSq: try readTensors(f, d: sae.d, m: sae.m) { "/optimizer/\(group)/\($0)/v" })
    }

    static func writeConfig(_ f: HDF5File, _ c: TrainConfig) throws {
        let attrs: [(String, AttributeValue)] = [
            ("total_steps", .int(c.totalSteps)), ("seed", .int(Int(bitPattern: UInt(c.seed)))),
            ("lr", .double(c.lr)), ("lambda", .double(c.lambda)),
            ("lr_warmup_fraction", .double(c.lrWarmupFraction)), ("lr_decay_fraction", .double(c.lrDecayFraction)),
            ("lambda_warmup_fraction", .double(c.lambdaWarmupFraction)), ("batch", .int(c.batch)),
            ("evaluation_point", .string(c.evaluationPoint.rawValue)), ("clip_norm", .double(c.clipNorm)),
            ("single", .int(c.single ? 1 : 0)), ("jacobian_chunk", .int(c.jacobianChunk)),
            ("adam_beta1", .double(c.adam.beta1)), ("adam_beta2", .double(c.adam.beta2)), ("adam_eps", .double(c.adam.eps)),
        ]
        for (k, v) in attrs { try f.setAttribute(k, v) }
    }

    /// Reads the training configuration from a checkpoint's root attributes.
    /// Attributes the golden files do not carry take TrainConfig's defaults.
    public static func readConfig(_ f: HDF5File) throws -> TrainConfig {
        var c = TrainConfig()
        func need(_ n: String) throws -> Double {
            guard let v = try f.doubleAttribute(n) else { throw JSAEError(file: f.path, "missing root attribute \(n)") }
            return v
        }
        c.totalSteps = Int(try need("total_steps"))
        c.seed = UInt64(bitPattern: Int64(try f.intAttribute("seed") ?? 0))
        c.lr = try need("lr"); c.lambda = try need("lambda")
        c.lrWarmupFraction = try need("lr_warmup_fraction"); c.lrDecayFraction = try need("lr_decay_fraction")
        c.lambdaWarmupFraction = try need("lambda_warmup_fraction")
        c.batch = Int(try need("batch")); c.clipNorm = try need("clip_norm")
        if let p = try f.stringAttribute("evaluation_point") {
            guard let e = EvaluationPoint(rawValue: p) else { throw JSAEError(file: f.path, "unknown evaluation_point \"\(p)\"") }
            c.evaluationPoint = e
        }
        c.single = (try f.intAttribute("single") ?? 0) != 0
        c.jacobianChunk = try f.intAttribute("jacobian_chunk") ?? c.jacobianChunk
        c.adam.beta1 = try f.doubleAttribute("adam_beta1") ?? c.adam.beta1
        c.adam.beta2 = try f.doubleAttribute("adam_beta2") ?? c.adam.beta2
        c.adam.eps = try f.doubleAttribute("adam_eps") ?? c.adam.eps
        do { try c.validate() } catch let e as JSAEError { throw e.inFile(f.path) }
        return c
    }

    /// Reads a checkpoint completely; any damage (truncation, a missing or
    /// mis-shaped tensor, NaN) is reported as a corrupt checkpoint.
    public static func read<T: JSAEScalar>(_ path: String, as: T.Type = T.self) throws -> (state: TrainState<T>, config: TrainConfig, provenance: Provenance) {
        do {
            let f = try HDF5File.open(path)
            try FileFormat.checkHeader(f, accepted: [.checkpoint])
            let model: JSAEModel<T> = try ModelFile.read(path)
            let adamIn = try readMoments(f, group: "sae_in", like: model.saeIn)
            let adamOut = try model.saeOut.map { try readMoments(f, group: "sae_out", like: $0) }
            guard let step = try f.intAttribute("step"), step >= 0 else { throw JSAEError(file: path, "missing root attribute step") }
            let config = try readConfig(f)
            let prov = Provenance(activationsFile: try f.stringAttribute("activations_file") ?? "",
                                  shuffleBufferTokens: try f.intAttribute("shuffle_buffer_tokens") ?? 0)
            return (TrainState(model: model, adamIn: adamIn, adamOut: adamOut, step: step), config, prov)
        } catch let e as JSAEError {
            throw JSAEError(file: path, "corrupt or unreadable checkpoint: \(e.message)")
        }
    }
}
