import Foundation
import JSAECore
import JSAEIO

/// A training run's folder, held for as long as this object lives: created
/// if missing, locked against a second process (RunLock), and cleared of
/// the temporaries that killed processes left in it. `jsae train` and each
/// run of `jsae reproduce` train through one of these.
public final class RunFolder {
    public let path: String
    private let lock: RunLock

    /// Temporaries are removed only after the lock is taken: a live writer
    /// of this folder would hold it, so what remains belongs to dead ones
    /// (and `removeStaleTemporaries` checks each PID as well).
    public init(_ path: String, log: (String) -> Void) throws {
        try createOutputFolder(path)
        lock = try RunLock.acquire(path)
        self.path = path
        let removed = removeStaleTemporaries(in: path)
        if !removed.isEmpty {
            log("removed \(removed.count) temporary file(s) left by killed runs: \(removed.joined(separator: ", "))")
        }
    }

    /// The newest checkpoint (`CheckpointFile.list`'s naming rule), if any.
    public var latestCheckpoint: String? { CheckpointFile.latest(in: path) }
}

/// Everything that decides a run's numbers besides its data: the training
/// configuration, the SAE shape, the precision, the shuffling buffer and
/// which rows are trained on. A checkpoint stores all of it; a resume
/// compares all of it.
public struct TrainingSettings: Sendable {
    public var config: TrainConfig
    public var d: Int, m: Int, k: Int
    /// `T.precisionName` of the run: "float" or "double".
    public var precision: String
    public var bufferBatches: Int
    /// Rows [0, trainingRowsEnd) of /x (nil: all of them) ...
    public var trainingRowsEnd: Int?
    /// ... without the rows /text/special marks, when true.
    public var excludesSpecial: Bool

    public init(config: TrainConfig, d: Int, m: Int, k: Int, precision: String, bufferBatches: Int,
                trainingRowsEnd: Int?, excludesSpecial: Bool) {
        self.config = config; self.d = d; self.m = m; self.k = k; self.precision = precision
        self.bufferBatches = bufferBatches; self.trainingRowsEnd = trainingRowsEnd; self.excludesSpecial = excludesSpecial
    }

    /// The settings a checkpoint holds. The buffer is stored in tokens.
    init<T: JSAEScalar>(stored state: TrainState<T>, _ c: TrainConfig, _ p: CheckpointFile.Provenance, precision: String) {
        self.init(config: c, d: state.model.d, m: state.model.saeIn.m, k: state.model.k, precision: precision,
                  bufferBatches: max(1, p.shuffleBufferTokens / max(c.batch, 1)),
                  trainingRowsEnd: p.trainingRowsEnd, excludesSpecial: p.trainingExcludesSpecial == true)
    }

    /// Each setting by name (the `jsae train` flag without its dashes), as
    /// text: one list, so that nothing is left out of a comparison.
    public var described: [(name: String, value: String)] {
        let c = config
        return [
            ("d", "d = \(d)"), ("expansion", "m = \(m) (expansion \(m / max(d, 1)))"), ("k", "k = \(k)"),
            ("precision", "precision \(precision)"), ("single", c.single ? "a single SAE" : "a pair"),
            ("lambda", "lambda = \(c.lambda)"), ("batch", "batch = \(c.batch)"), ("steps", "total_steps = \(c.totalSteps)"),
            ("lr", "lr = \(c.lr)"), ("lr-warmup", "lr_warmup_fraction = \(c.lrWarmupFraction)"),
            ("lr-decay", "lr_decay_fraction = \(c.lrDecayFraction)"),
            ("lambda-warmup", "lambda_warmup_fraction = \(c.lambdaWarmupFraction)"), ("clip-norm", "clip_norm = \(c.clipNorm)"),
            ("seed", "seed = \(c.seed)"), ("evaluation-point", "evaluation_point = \(c.evaluationPoint.rawValue)"),
            ("jacobian-chunk", "jacobian_chunk = \(c.jacobianChunk)"),
            ("adam", "adam_beta1 = \(c.adam.beta1), adam_beta2 = \(c.adam.beta2), adam_eps = \(c.adam.eps)"),
            ("buffer-batches", "\(bufferBatches) buffered batches"),
            ("rows", trainingRowsEnd.map { "the rows before \($0)" } ?? "all rows"),
            ("include-special", excludesSpecial ? "special-token rows left out" : "special-token rows kept"),
        ]
    }

    /// The first setting in which `self` differs from `other`: its name and
    /// both values.
    public func firstDifference(from other: TrainingSettings) -> (name: String, mine: String, other: String)? {
        for (a, b) in zip(described, other.described) where a.value != b.value { return (a.name, a.value, b.value) }
        return nil
    }

    /// The refusals that come before any memory is given to a run: k in
    /// [1, m], the buffers fit this machine, steps × batch fits an Int, and
    /// the configuration's own rules (TrainConfig.validate: lambda >= 0, ...).
    public func validate(file: String? = nil, flags: String = "--expansion, --batch or --buffer-batches") throws {
        try RunRules.requireK(k, m: m, d: d, file: file)
        try RunRules.requireMemory(d: d, m: m, saes: config.single ? 1 : 2, batch: max(config.batch, 1),
                                   bufferBatches: max(bufferBatches, 1), scalarBytes: precision == "double" ? 8 : 4, flags: flags)
        guard !config.totalSteps.multipliedReportingOverflow(by: max(config.batch, 1)).overflow else {
            throw JSAEError("total_steps \(config.totalSteps) × batch \(config.batch) tokens overflows a 64-bit integer")
        }
        guard bufferBatches >= 1 else { throw JSAEError("--buffer-batches must be at least 1") }
        try config.validate()
    }
}

/// A run in its folder: resumed from the folder's newest checkpoint or
/// started afresh, with its batch stream and provenance, trained in
/// segments until done or stopped.
public final class Training<T: JSAEScalar> {
    public let folder: RunFolder
    public let settings: TrainingSettings
    public private(set) var state: TrainState<T>
    public let stream: BatchStream<T>
    public let provenance: CheckpointFile.Provenance
    /// The checkpoint this run continued from; nil for a new run.
    public let resumedFrom: String?

    /// - settings: the settings wanted, given the ones of the folder's newest
    ///   checkpoint (nil when it has none). A resume is refused, in one line
    ///   naming the checkpoint and the setting, when they differ in anything
    ///   or the activations are not the ones it was trained on; `name` turns
    ///   a setting's name into what the caller calls it (a flag).
    /// - initial: the state of a new run.
    public init(folder: RunFolder, data reader: ActivationsReader,
                settings: (_ stored: TrainingSettings?) throws -> TrainingSettings,
                initial: (TrainingSettings) throws -> TrainState<T>,
                name: (String) -> String = { $0 }, hint: (String) -> String = { _ in "" }) throws {
        self.folder = folder
        var wanted: TrainingSettings
        if let latest = folder.latestCheckpoint {
            let precision = try CheckpointFile.storedPrecision(latest) ?? "float"
            guard precision == T.precisionName else {
                throw JSAEError(file: latest, "\(name("precision")) \(T.precisionName) conflicts with the checkpoint (precision \(precision))"
                                + hint("precision"))
            }
            let loaded: (state: TrainState<T>, config: TrainConfig, provenance: CheckpointFile.Provenance) = try CheckpointFile.read(latest)
            let stored = TrainingSettings(stored: loaded.state, loaded.config, loaded.provenance, precision: precision)
            // The checkpoint's own sizes are checked before they size any buffer.
            do {
                try stored.validate(flags: "batch or shuffle_buffer_tokens")
                guard loaded.state.completedSteps <= stored.config.totalSteps else {
                    throw JSAEError("step \(loaded.state.completedSteps) is beyond total_steps \(stored.config.totalSteps)")
                }
            } catch let e as JSAEError { throw JSAEError(file: latest, "corrupt or unreadable checkpoint: \(e.message)") }
            wanted = try settings(stored)
            if let diff = wanted.firstDifference(from: stored) {
                throw JSAEError(file: latest, "\(name(diff.name)) conflicts with the checkpoint (\(diff.other), here \(diff.mine))" + hint(diff.name))
            }
            try loaded.provenance.requireSameActivations(reader, checkpoint: latest)
            guard reader.d == stored.d else {
                throw JSAEError(file: reader.path, "/x has d = \(reader.d) but the checkpoint \(latest) has d = \(stored.d)")
            }
            state = loaded.state
            resumedFrom = latest
        } else {
            wanted = try settings(nil)
            try wanted.validate()
            state = try initial(wanted)
            resumedFrom = nil
        }
        self.settings = wanted
        var record = CheckpointFile.Provenance(activationsFile: reader.path, shuffleBufferTokens: 0)
        record.trainingRowsEnd = wanted.trainingRowsEnd
        record.trainingExcludesSpecial = wanted.excludesSpecial
        let rows = try record.trainingRows(of: reader, checkpoint: resumedFrom)
        stream = BatchStream<T>(reader: reader, batch: wanted.config.batch, bufferBatches: wanted.bufferBatches,
                                seed: wanted.config.seed, rows: rows)
        var p = try CheckpointFile.Provenance(reader: reader, shuffleBufferTokens: stream.bufferTokens)
        (p.trainingRowsEnd, p.trainingExcludesSpecial) = (record.trainingRowsEnd, record.trainingExcludesSpecial)
        provenance = p
    }

    /// Trains until the end of the run, `options.pauseAtStep`, or
    /// `shouldStop()` (checked between steps), each with a checkpoint; at the
    /// end model.h5 is written too. `options.outDir` is the folder's.
    /// Specialised here: callers in other modules cannot specialise a method
    /// of this class, and the generic path runs every step through value
    /// witnesses (measured: 9x slower).
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public func run(_ options: TrainRunOptions, shouldStop: () -> Bool = { false },
                    status: (_ step: Int) -> String = { _ in "" }, log: (String) -> Void = { _ in }) throws -> RunOutcome {
        var o = options
        o.outDir = folder.path
        return try runTraining(state: &state, config: settings.config, stream: stream, provenance: provenance, options: o,
                               shouldStop: shouldStop, status: status, log: log)
    }
}
