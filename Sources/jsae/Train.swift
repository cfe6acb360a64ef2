import ArgumentParser
import Dispatch
import Foundation
import JSAECore
import JSAEIO
import JSAERuns
import JSAECLIOptions

/// Set from a signal source on another queue; read between training steps.
enum TrainingRowsChoice: String, ExpressibleByArgument, CaseIterable { case training, all }

final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var signal: Int32 = 0
    func set(_ s: Int32) { lock.lock(); if signal == 0 { signal = s }; lock.unlock() }
    var value: Int32 { lock.lock(); defer { lock.unlock() }; return signal }
}

struct Train: ParsableCommand, PrecisionCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a JSAE pair (or, with --lambda 0, a traditional pair; with --single, one SAE) with the paper's recipe.",
        discussion: """
        Progress goes to stderr; checkpoints (kind = checkpoint) go to --out every --checkpoint-every steps, \
        on SIGINT/SIGTERM and at the end, beside the final model.h5. --resume DIR continues from DIR's latest \
        checkpoint with the configuration stored in it and reaches the same parameters as an uninterrupted run.
        Exit status: 0 done, 2 bad input or configuration, 3 training diverged (non-finite loss), 130/143 interrupted.
        """)

    @Option(help: "Activations file (kind = activations). With --resume, defaults to the one the run used.")
    var activations: String?

    @Option(help: "A model file to take the MLP from (otherwise the activations file's /mlp).")
    var model: String?

    @Option(help: "Output folder for checkpoints and model.h5 (created if missing).")
    var out: String?

    @Option(help: "Continue the run whose checkpoints are in this folder.")
    var resume: String?

    @OptionGroup var shape: SAEShapeOptions
    @OptionGroup var threadOptions: ThreadOptions
    @OptionGroup var seedOption: SeedOption
    @Option(help: "Jacobian penalty λ (0 = traditional SAE pair). Default: the paper's rule 0.5·k²/d.") var lambda: Double?
    @Flag(help: "Train one SAE on x (no output SAE, no Jacobian term).") var single = false
    @Option(help: "Total tokens (rounded up to whole steps).") var tokens: Int?
    @Option(help: "Total optimizer steps (default: one pass over the activations).") var steps: Int?
    @Option(help: "Peak learning rate.") var lr: Double = 5e-4
    @Option(help: "LR warm-up fraction of steps.") var lrWarmup: Double = 0.01
    @Option(help: "LR linear-decay fraction of steps (at the end).") var lrDecay: Double = 0.2
    @Option(help: "λ warm-up fraction of steps.") var lambdaWarmup: Double = 0.05
    @Option(help: "Global gradient-norm clip.") var clipNorm: Double = 1.0
    @Option(help: "Where the reported Jacobian sparsity is measured (the objective is always at the true input).")
    var evaluationPoint: EvaluationPoint = .trueInput
    @Option(help: "Train in float (paper: fp32 parameters) or double.") var precision: Precision = .float
    @Option(help: "Steps between checkpoints (0: only at the end and on a signal).") var checkpointEvery: Int = 1000
    @Option(help: "Steps between progress lines.") var logEvery: Int = 10
    @Option(help: "Window (steps) for counting dead latents.") var deadWindow: Int = 1000
    @Option(help: "Batches held in the shuffling buffer.") var bufferBatches: Int = 16
    @Option(help: "Tokens per Jacobian chunk.") var jacobianChunk: Int = defaultJacobianChunk
    @Option(help: "Rows trained on: 'training' (rows before the file's heldout_start_row, all rows when it has none) or 'all'.")
    var rows: TrainingRowsChoice = .training
    @Flag(help: "Train on special-token rows too (by default rows marked in /text/special are left out).")
    var includeSpecial = false

    var expansion: Int { shape.expansion ?? 32 }
    var k: Int { shape.k ?? 32 }
    var batch: Int { shape.batch ?? 4096 }
    var seed: UInt64 { seedOption.seed }

    func validate() throws {
        if resume == nil {
            guard activations != nil else { throw ValidationError("--activations is required (or --resume DIR)") }
            guard out != nil else { throw ValidationError("--out DIR is required (or --resume DIR)") }
        }
        guard tokens == nil || steps == nil else { throw ValidationError("give --tokens or --steps, not both") }
    }

    func run() throws {
        try reportingErrors {
            switch try resumePrecision() ?? precision {   // on resume, the checkpoint's precision wins
            case .float: try run(Float.self)
            case .double: try run(Double.self)
            }
        }
    }

    func run<T: JSAEScalar>(_: T.Type) throws {
        var state: TrainState<T>
        var config: TrainConfig
        let reader: ActivationsReader
        let dir: String
        let bufferBatches: Int
        let lock: RunLock
        let selection: RowSelection
        let provenanceRows: (Int?, Bool?)
        if let resumeDir = resume {
            guard let latest = CheckpointFile.latest(in: resumeDir) else {
                throw JSAEError(file: resumeDir, "no checkpoint-*.h5 to resume from")
            }
            lock = try lockRunFolder(resumeDir)
            let loaded: (state: TrainState<T>, config: TrainConfig, provenance: CheckpointFile.Provenance) = try CheckpointFile.read(latest)
            state = loaded.state; config = loaded.config
            try requireResumeFlagsAgree(state, config, loaded.provenance, checkpoint: latest)
            reader = try openActivations(recordedIn: loaded.provenance, checkpoint: latest)
            try loaded.provenance.requireSameActivations(reader, checkpoint: latest)
            guard reader.d == state.model.d else {
                throw JSAEError(file: reader.path, "/x has d = \(reader.d) but the checkpoint \(latest) has d = \(state.model.d)")
            }
            bufferBatches = max(1, loaded.provenance.shuffleBufferTokens / config.batch)
            selection = try loaded.provenance.trainingRows(of: reader, checkpoint: latest)
            provenanceRows = (loaded.provenance.trainingRowsEnd, loaded.provenance.trainingExcludesSpecial)
            dir = resumeDir
            log("resuming from \(latest) at step \(state.step)/\(config.totalSteps) (configuration from the checkpoint)")
        } else {
            dir = out!
            (state, config, reader, bufferBatches, lock, selection, provenanceRows) = try fresh(T.self)
        }
        defer { withExtendedLifetime(lock) {} }
        let stream = BatchStream<T>(reader: reader, batch: config.batch, bufferBatches: bufferBatches, seed: config.seed, rows: selection)
        var provenance = try CheckpointFile.Provenance(reader: reader, shuffleBufferTokens: stream.bufferTokens)
        (provenance.trainingRowsEnd, provenance.trainingExcludesSpecial) = provenanceRows
        var options = TrainRunOptions(outDir: dir)
        options.threads = threadOptions.apply()
        options.checkpointEvery = checkpointEvery
        options.logEvery = logEvery
        options.deadWindow = deadWindow

        let stop = StopFlag()
        var sources: [DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let src = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            src.setEventHandler { stop.set(sig) }
            src.resume()
            sources.append(src)
        }
        let outcome = try runTraining(state: &state, config: config, stream: stream,
                                      provenance: provenance,
                                      options: options, shouldStop: { stop.value != 0 }, log: log)
        sources.forEach { $0.cancel() }
        switch outcome {
        case .finished(let cp):
            print("trained \(config.totalSteps) steps (\(config.totalSteps * config.batch) tokens): \(dir)/model.h5, checkpoint \(cp)")
        case .interrupted(let step, let cp):
            log("interrupted at step \(step)/\(config.totalSteps): checkpoint \(cp); continue with: jsae train --resume \(dir)")
            throw ExitCode(128 + stop.value)
        }
    }

    /// A new run: configuration from the flags, checked before any work.
    private func fresh<T: JSAEScalar>(_: T.Type) throws -> (TrainState<T>, TrainConfig, ActivationsReader, Int, RunLock, RowSelection, (Int?, Bool?)) {
        let dir = out!
        if CheckpointFile.latest(in: dir) != nil {
            throw JSAEError(file: dir, "already holds checkpoints: continue with --resume \(dir), or choose another --out")
        }
        let reader = try ActivationsReader(activations!)
        let d = reader.d
        // Held-out documents are never trained on; special-token rows are left
        // out unless asked for (the same rules as jsae reproduce).
        var rowsRecord = CheckpointFile.Provenance(activationsFile: reader.path, shuffleBufferTokens: 0)
        if rows == .training, case let (end, true) = try reader.heldOutStart(fallbackFraction: 0) { rowsRecord.trainingRowsEnd = end }
        if !includeSpecial, try reader.specialRows() != nil { rowsRecord.trainingExcludesSpecial = true }
        let selection = try rowsRecord.trainingRows(of: reader)
        guard selection.count >= 1 else { throw JSAEError(file: reader.path, "has no rows to train on") }
        let m = try RunLimits.latents(expansion: expansion, d: d)
        try requireFreshRunFits(d: d, m: m, scalarBytes: MemoryLayout<T>.size)
        guard k >= 1 && k <= m else {
            throw JSAEError(file: reader.path, "k = \(k) must be between 1 and m = expansion \(expansion) × d \(d) = \(m)")
        }
        var mlp: MLP<T>? = nil
        if let model {
            let f = try HDF5File.open(model)
            guard f.exists("/mlp") else { throw JSAEError(file: model, "has no /mlp") }
            mlp = try MLPFile.read(f, d: d)
        } else if reader.file.exists("/mlp") {
            mlp = try MLPFile.read(reader.file, d: d)
        }
        if !single && mlp == nil {
            throw JSAEError(file: reader.path, "has no /mlp and no --model was given: a JSAE pair needs the MLP (or use --single)")
        }
        var c = TrainConfig()
        c.lr = lr; c.lambda = single ? 0 : (lambda ?? TrainConfig.paperLambda(k: k, d: d))
        c.lrWarmupFraction = lrWarmup; c.lrDecayFraction = lrDecay; c.lambdaWarmupFraction = lambdaWarmup
        c.batch = batch; c.clipNorm = clipNorm; c.seed = seed; c.evaluationPoint = evaluationPoint
        c.single = single; c.jacobianChunk = jacobianChunk
        c.totalSteps = steps ?? tokens.map { RunLimits.steps(tokens: $0, batch: batch) } ?? max(1, selection.count / max(batch, 1))
        try c.validate()
        guard bufferBatches >= 1 else { throw JSAEError("--buffer-batches must be at least 1") }
        let state = try TrainState<T>.initial(d: d, mIn: m, mOut: m, k: k, mlp: mlp, single: single, seed: seed)
        // Only now, with everything checked, is anything written.
        try createOutputFolder(dir)
        let lock = try lockRunFolder(dir)
        log("training \(single ? "one SAE" : (c.lambda == 0 ? "a traditional SAE pair (λ = 0)" : "a JSAE pair (λ = \(c.lambda))")) "
            + "d \(d) m \(m) k \(k) batch \(batch) steps \(c.totalSteps) on \(reader.path) (\(selection.count) of its \(reader.tokens) rows"
            + (rowsRecord.trainingRowsEnd.map { ": the training documents before row \($0)" } ?? "")
            + (rowsRecord.trainingExcludesSpecial == true ? ", special-token rows left out" : "") + ") in \(T.precisionName)")
        return (state, c, reader, bufferBatches, lock, selection, (rowsRecord.trainingRowsEnd, rowsRecord.trainingExcludesSpecial))
    }

    private func log(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }
}
