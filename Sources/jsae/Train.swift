import ArgumentParser
import Foundation
import JSAECore
import JSAEIO
import JSAERuns
import JSAECLIOptions

/// --rows: the training documents only, or every row of the file.
enum TrainingRowsChoice: String, ExpressibleByArgument, CaseIterable { case training, all }

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
        let dir: String
        let folder: RunFolder
        let reader: ActivationsReader
        var fresh: (settings: TrainingSettings, mlp: MLP<T>?)? = nil
        if let resumeDir = resume {
            try requireResumeFlags(resumeDir)
            dir = resumeDir
            // Locked before the checkpoint is read: a run still writing here is refused first.
            folder = try RunFolder(dir, log: log)
            guard let latest = folder.latestCheckpoint else { throw JSAEError(file: dir, "no checkpoint-<9 digits>.h5 to resume from") }
            reader = try openActivations(recordedIn: latest)
        } else {
            dir = out!
            if CheckpointFile.latest(in: dir) != nil {
                throw JSAEError(file: dir, "already holds checkpoints: continue with --resume \(dir), or choose another --out")
            }
            reader = try ActivationsReader(activations!)
            fresh = try freshRun(reader, T.self)
            // Only now, with everything checked, is anything written.
            folder = try RunFolder(dir, log: log)
        }
        let training = try Training<T>(
            folder: folder, data: reader,
            settings: { stored in
                if let stored { return try applyingGivenFlags(to: stored, reader: reader) }
                guard let fresh else { throw JSAEError(file: dir, "no checkpoint-<9 digits>.h5 to resume from") }
                return fresh.settings
            },
            initial: { s in
                try TrainState<T>.initial(d: s.d, mIn: s.m, mOut: s.m, k: s.k, mlp: fresh?.mlp, single: s.config.single, seed: s.config.seed)
            },
            name: { flag($0) },
            hint: { "; a resumed run keeps its configuration; drop \(flag($0))" })
        let config = training.settings.config
        if let cp = training.resumedFrom {
            log("resuming from \(cp) at step \(training.state.completedSteps)/\(config.totalSteps) (configuration from the checkpoint)")
        } else {
            let s = training.settings
            let what = s.config.single ? "one SAE" : (config.lambda == 0 ? "a traditional SAE pair (λ = 0)" : "a JSAE pair (λ = \(config.lambda))")
            let rows: String = s.trainingRowsEnd.map { ": the training documents before row \($0)" } ?? ""
            let special: String = s.excludesSpecial ? ", special-token rows left out" : ""
            log("training \(what) d \(s.d) m \(s.m) k \(s.k) batch \(config.batch) steps \(config.totalSteps) on \(reader.path) "
                + "(\(training.stream.rows.count) of its \(reader.tokens) rows\(rows)\(special)) in \(T.precisionName)")
        }
        var options = TrainRunOptions(outDir: dir)
        options.threads = threadOptions.apply()
        options.checkpointEvery = checkpointEvery
        options.logEvery = logEvery
        options.deadWindow = deadWindow
        let stop = StopOnSignals()
        let outcome = try training.run(options, shouldStop: { stop.stopped }, log: log)
        switch outcome {
        case .finished(let cp):
            print("trained \(config.totalSteps) steps (\(config.totalSteps * config.batch) tokens): \(dir)/model.h5, checkpoint \(cp)")
        case .interrupted(let step, let cp):
            log("interrupted at step \(step)/\(config.totalSteps): checkpoint \(cp); continue with: jsae train --resume \(dir)")
            throw ExitCode(128 + stop.signal)
        }
    }

    /// A new run's settings and MLP from the flags, checked before anything is written.
    private func freshRun<T: JSAEScalar>(_ reader: ActivationsReader, _: T.Type) throws -> (settings: TrainingSettings, mlp: MLP<T>?) {
        let d = reader.d
        // Held-out documents are never trained on; special-token rows are left
        // out unless asked for (the same rules as jsae reproduce).
        let rows = try trainingRows(reader, rows: rows, includeSpecial: includeSpecial)
        var record = CheckpointFile.Provenance(activationsFile: reader.path, shuffleBufferTokens: 0)
        (record.trainingRowsEnd, record.trainingExcludesSpecial) = (rows.end, rows.excludesSpecial)
        let selection = try record.trainingRows(of: reader)
        guard selection.count >= 1 else { throw JSAEError(file: reader.path, "has no rows to train on") }
        let m = try RunRules.latents(expansion: expansion, d: d)
        try requireStepsFit()
        var c = TrainConfig()
        c.lr = lr; c.lambda = single ? 0 : (lambda ?? TrainConfig.paperLambda(k: k, d: d))
        c.lrWarmupFraction = lrWarmup; c.lrDecayFraction = lrDecay; c.lambdaWarmupFraction = lambdaWarmup
        c.batch = batch; c.clipNorm = clipNorm; c.seed = seed; c.evaluationPoint = evaluationPoint
        c.single = single; c.jacobianChunk = jacobianChunk
        c.totalSteps = steps ?? tokens.map { RunRules.steps(tokens: $0, batch: batch) } ?? max(1, selection.count / max(batch, 1))
        let settings = TrainingSettings(config: c, d: d, m: m, k: k, precision: T.precisionName, bufferBatches: bufferBatches,
                                        trainingRowsEnd: rows.end, excludesSpecial: rows.excludesSpecial)
        try settings.validate(file: reader.path)
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
        return (settings, mlp)
    }

    private func log(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }
}
