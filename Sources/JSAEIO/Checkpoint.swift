import Foundation
import JSAECore

/// `kind = checkpoint`: a model, Adam's moments, the step reached and the
/// whole training configuration, written atomically.
public enum CheckpointFile {
    /// `DIR/checkpoint-<step>.h5`, zero-padded so names sort by step.
    public static func path(in dir: String, step: Int) -> String {
        dir + "/checkpoint-" + String(format: "%09d", step) + ".h5"
    }

    /// The checkpoints in `dir` as (step, full path), sorted by step: only
    /// names that are exactly `checkpoint-<9 digits>.h5`, so that a user's
    /// `checkpoint-backup.h5` is never taken for the newest (nor pruned).
    /// The one listing that `latest`, pruning and resuming all use.
    public static func list(in dir: String) -> [(step: Int, path: String)] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return [] }
        return names.compactMap { name -> (Int, String)? in
            guard name.count == 23, name.hasPrefix("checkpoint-"), name.hasSuffix(".h5") else { return nil }
            let digits = name.dropFirst(11).dropLast(3)
            guard digits.count == 9, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let step = Int(digits) else { return nil }
            return (step, dir + "/" + name)
        }.sorted { $0.0 < $1.0 }
    }

    /// The checkpoint with the highest step in `dir`, if any.
    public static func latest(in dir: String) -> String? {
        list(in: dir).last?.path
    }

    /// The `precision` a checkpoint was trained in ("float" or "double"), read
    /// before the checkpoint itself so a resume computes in the same one.
    public static func storedPrecision(_ path: String) throws -> String? {
        do {
            let f = try HDF5File.open(path)
            try FileFormat.checkHeader(f, accepted: [.checkpoint])
            guard let p = try f.stringAttribute("precision") else { return nil }
            guard p == "float" || p == "double" else { throw JSAEError(file: path, "unknown precision \"\(p)\" (expected \"float\" or \"double\")") }
            return p
        } catch let e as JSAEError {
            throw JSAEError(file: path, "corrupt or unreadable checkpoint: \(e.message)")
        }
    }

    /// Removes all but the newest `keep` checkpoints of `dir`.
    public static func prune(in dir: String, keep: Int) {
        for cp in list(in: dir).dropLast(keep) { try? FileManager.default.removeItem(atPath: cp.path) }
    }

    /// Extra provenance stored with the configuration.
    public struct Provenance: Sendable {
        public var activationsFile: String
        public var shuffleBufferTokens: Int
        /// Rows of the activations file's /x when the run started (nil in
        /// checkpoints written before this attribute existed).
        public var activationsTokens: Int? = nil
        /// `ActivationsReader.fingerprint()` of that file (nil likewise).
        public var activationsFingerprint: String? = nil
        /// The run trains on rows [0, trainingRowsEnd) (nil: all rows,
        /// as every checkpoint written before this attribute existed) …
        public var trainingRowsEnd: Int? = nil
        /// … without the rows `/text/special` marks, when true.
        public var trainingExcludesSpecial: Bool? = nil
        public init(activationsFile: String, shuffleBufferTokens: Int) {
            self.activationsFile = activationsFile; self.shuffleBufferTokens = shuffleBufferTokens
        }
        /// Provenance of a run reading `reader`, with its row count and
        /// fingerprint so that a resume can tell the file changed.
        public init(reader: ActivationsReader, shuffleBufferTokens: Int) throws {
            self.init(activationsFile: reader.path, shuffleBufferTokens: shuffleBufferTokens)
            activationsTokens = reader.tokens
            activationsFingerprint = try reader.fingerprint()
        }

        /// The rows this run trains on, recomputed from `reader` (refusing a
        /// recorded end outside the file, or special rows to leave out of a
        /// file that marks none).
        public func trainingRows(of reader: ActivationsReader, checkpoint: String? = nil) throws -> RowSelection {
            let end = trainingRowsEnd ?? reader.tokens
            guard end >= 1 && end <= reader.tokens else {
                throw JSAEError(file: checkpoint ?? reader.path, "training_rows_end = \(end) is outside the \(reader.tokens) rows of \(reader.path)")
            }
            guard trainingExcludesSpecial == true else { return RowSelection(0..<end) }
            guard let special = try reader.specialRows() else {
                throw JSAEError(file: reader.path, "has no /text/special, but the run\(checkpoint.map { " in " + $0 } ?? "") leaves special-token rows out")
            }
            return RowSelection(0..<end) { !special[$0] }
        }

        /// Refuses an activations file that is not the one the checkpoint was
        /// trained on (by row count and fingerprint, when the checkpoint has
        /// them). `checkpoint` is named in the message.
        public func requireSameActivations(_ reader: ActivationsReader, checkpoint: String) throws {
            if let t = activationsTokens, t != reader.tokens {
                throw JSAEError(file: reader.path, "/x has \(reader.tokens) rows but the run in \(checkpoint) was trained on \(t): the activations changed since the checkpoint")
            }
            if let fp = activationsFingerprint, try reader.fingerprint() != fp {
                throw JSAEError(file: reader.path, "/x differs from the file the run in \(checkpoint) was trained on (content fingerprint \(try reader.fingerprint()), expected \(fp))")
            }
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
            try f.setAttribute("step", .int(state.completedSteps))
            try writeConfig(f, config)
            try f.setAttribute("activations_file", .string(provenance.activationsFile))
            try f.setAttribute("shuffle_buffer_tokens", .int(provenance.shuffleBufferTokens))
            try f.setAttribute("precision", .string(T.precisionName))
            if let t = provenance.activationsTokens { try f.setAttribute("activations_tokens", .int(t)) }
            if let fp = provenance.activationsFingerprint { try f.setAttribute("activations_fingerprint", .string(fp)) }
            if let end = provenance.trainingRowsEnd { try f.setAttribute("training_rows_end", .int(end)) }
            if let ex = provenance.trainingExcludesSpecial { try f.setAttribute("training_excludes_special", .int(ex ? 1 : 0)) }
            try f.finish()
        }
    }

    private static func writeMoments<T: JSAEScalar>(_ f: HDF5File, group: String, _ a: AdamMoments<T>) throws {
        try writeTensors(f, a.expAvg) { "/optimizer/\(group)/\($0)/m" }
        try writeTensors(f, a.expAvgSq) { "/optimizer/\(group)/\($0)/v" }
    }

    private static func readMoments<T: JSAEScalar>(_ f: HDF5File, group: String, like sae: TopKSAE<T>) throws -> AdamMoments<T> {
        let expAvgSq: SAETensors<T> = try readTensors(f, d: sae.d, m: sae.m) { "/optimizer/\(group)/\($0)/v" }
        // Adam's second moment is a running mean of squares: a negative value
        // can only be damage, and would turn the update into NaN.
        for name in SAETensors<T>.Name.allCases {
            if let i = expAvgSq[name].firstIndex(where: { $0 < 0 }) {
                throw JSAEError(file: f.path, "/optimizer/\(group)/\(name.rawValue)/v is negative at index \(i) (a second moment cannot be)")
            }
        }
        return AdamMoments(expAvg: try readTensors(f, d: sae.d, m: sae.m) { "/optimizer/\(group)/\($0)/m" }, expAvgSq: expAvgSq)
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
        func needInt(_ n: String) throws -> Int {
            guard let v = try f.intAttribute(n) else { throw JSAEError(file: f.path, "missing root attribute \(n)") }
            return v
        }
        c.totalSteps = try needInt("total_steps")
        c.seed = UInt64(bitPattern: Int64(try f.intAttribute("seed") ?? 0))
        c.lr = try need("lr"); c.lambda = try need("lambda")
        c.lrWarmupFraction = try need("lr_warmup_fraction"); c.lrDecayFraction = try need("lr_decay_fraction")
        c.lambdaWarmupFraction = try need("lambda_warmup_fraction")
        c.batch = try needInt("batch"); c.clipNorm = try need("clip_norm")
        if let p = try f.stringAttribute("evaluation_point") {
            guard let e = EvaluationPoint(rawValue: p) else { throw JSAEError(file: f.path, "unknown evaluation_point \"\(p)\"") }
            c.evaluationPoint = e
        }
        c.single = (try f.intAttribute("single") ?? 0) != 0
        c.jacobianChunk = try f.intAttribute("jacobian_chunk") ?? c.jacobianChunk
        c.adam.beta1 = try f.doubleAttribute("adam_beta1") ?? c.adam.beta1
        c.adam.beta2 = try f.doubleAttribute("adam_beta2") ?? c.adam.beta2
        c.adam.eps = try f.doubleAttribute("adam_eps") ?? c.adam.eps
        // Adam's constants are not checked by TrainConfig (the CLI never sets
        // them): a damaged value would only show up steps later as NaN.
        for (n, v) in [("adam_beta1", c.adam.beta1), ("adam_beta2", c.adam.beta2)] where !(v >= 0 && v < 1) {
            throw JSAEError(file: f.path, "\(n) is \(v), expected a number in [0, 1)")
        }
        guard c.adam.eps > 0 && c.adam.eps.isFinite else { throw JSAEError(file: f.path, "adam_eps is \(c.adam.eps), expected a finite number > 0") }
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
            var prov = Provenance(activationsFile: try f.stringAttribute("activations_file") ?? "",
                                  shuffleBufferTokens: try f.intAttribute("shuffle_buffer_tokens") ?? 0)
            guard prov.shuffleBufferTokens >= 0 else { throw JSAEError(file: path, "shuffle_buffer_tokens is negative") }
            prov.activationsTokens = try f.intAttribute("activations_tokens")
            prov.activationsFingerprint = try f.stringAttribute("activations_fingerprint")
            prov.trainingRowsEnd = try f.intAttribute("training_rows_end")
            if let ex = try f.intAttribute("training_excludes_special") {
                guard ex == 0 || ex == 1 else { throw JSAEError(file: path, "training_excludes_special is \(ex), expected 0 or 1") }
                prov.trainingExcludesSpecial = ex == 1
            }
            return (TrainState(model: model, adamIn: adamIn, adamOut: adamOut, completedSteps: step), config, prov)
        } catch let e as JSAEError {
            throw JSAEError(file: path, "corrupt or unreadable checkpoint: \(e.message)")
        }
    }
}
