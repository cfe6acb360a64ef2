// What a training run is (docs/jsae-spec.md, "Training"): its configuration
// and state, both stored in checkpoints (docs/file-format.md), and what a
// step reports. The step itself is in Step.swift.

/// Everything that defines a training run (stored in checkpoints).
public struct TrainConfig: Sendable, Equatable {
    public var lr = 5e-4
    public var lambda = 1.0
    public var lrWarmupFraction = 0.01
    public var lrDecayFraction = 0.2
    public var lambdaWarmupFraction = 0.05
    public var batch = 4096
    public var totalSteps = 1
    public var clipNorm = 1.0
    public var seed: UInt64 = 0
    /// Where the reported Jacobian sparsity is measured. The objective is
    /// always the reference code's (at the true input).
    public var evaluationPoint: EvaluationPoint = .trueInput
    /// One SAE on x only (no output SAE, no Jacobian term).
    public var single = false
    public var jacobianChunk = defaultJacobianChunk
    public var adam = AdamConfig()
    public init() {}

    /// The paper's rule of thumb for λ (docs/jsae-spec.md, "Loss"): 0.5·k²/d,
    /// 1 for Pythia-70m (k 32, d 512).
    public static func paperLambda(k: Int, d: Int) -> Double { 0.5 * Double(k * k) / Double(d) }

    public var schedule: Schedule {
        Schedule(totalSteps: totalSteps, lrWarmupFraction: lrWarmupFraction,
                 lrDecayFraction: lrDecayFraction, lambdaWarmupFraction: lambdaWarmupFraction)
    }

    /// λ's rule: a finite number >= 0 (0 trains a traditional pair). The one
    /// statement of it; the command line's check (`RunRules`) names the flag.
    public static func isValidLambda(_ lambda: Double) -> Bool { lambda >= 0 && lambda.isFinite }

    /// Rejects configurations that cannot train, before any work.
    public func validate() throws {
        guard batch >= 1 else { throw JSAEError("batch must be at least 1, got \(batch)") }
        guard totalSteps >= 1 else { throw JSAEError("the run must have at least one step, got \(totalSteps)") }
        guard Self.isValidLambda(lambda) else { throw JSAEError("lambda must be a finite number >= 0, got \(lambda)") }
        guard lr > 0 && lr.isFinite else { throw JSAEError("lr must be a finite number > 0, got \(lr)") }
        guard clipNorm > 0 && clipNorm.isFinite else { throw JSAEError("clip norm must be > 0, got \(clipNorm)") }
        for (name, f) in [("lr warm-up", lrWarmupFraction), ("lr decay", lrDecayFraction), ("lambda warm-up", lambdaWarmupFraction)] {
            guard f >= 0 && f <= 1 else { throw JSAEError("\(name) fraction must be in [0, 1], got \(f)") }
        }
        guard lrWarmupFraction + lrDecayFraction <= 1 else { throw JSAEError("lr warm-up and decay fractions add up to more than 1") }
        guard jacobianChunk >= 1 else { throw JSAEError("Jacobian chunk must be at least 1") }
    }
}

/// Parameters, optimizer state and position of a run: all a checkpoint holds.
public struct TrainState<T: JSAEScalar>: Sendable {
    public var model: JSAEModel<T>
    public var adamIn: AdamMoments<T>
    public var adamOut: AdamMoments<T>?
    /// Optimizer steps completed (the checkpoint's `step` attribute).
    public var completedSteps: Int

    public init(model: JSAEModel<T>, adamIn: AdamMoments<T>, adamOut: AdamMoments<T>?, completedSteps: Int) {
        self.model = model; self.adamIn = adamIn; self.adamOut = adamOut; self.completedSteps = completedSteps
    }

    /// A fresh run: the paper's initialisation from `seed`, zero moments.
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public static func initial(d: Int, mIn: Int, mOut: Int, k: Int, mlp: MLP<T>?, single: Bool, seed: UInt64) throws -> TrainState<T> {
        var g = SeededGenerator(seed: seed)
        let saeIn = try TopKSAE<T>.initialised(d: d, m: mIn, k: k, using: &g)
        let saeOut = single ? nil : try TopKSAE<T>.initialised(d: d, m: mOut, k: k, using: &g)
        if !single && mlp == nil { throw JSAEError("a JSAE pair needs the MLP (from the model or the activations file)") }
        let model = try JSAEModel(saeIn: saeIn, saeOut: saeOut, mlp: mlp)
        return TrainState(model: model, adamIn: AdamMoments(d: d, dLatent: mIn),
                          adamOut: single ? nil : AdamMoments(d: d, dLatent: mOut), completedSteps: 0)
    }

    /// A fresh state from a model: zero moments, step 0.
    public init(model: JSAEModel<T>) {
        self.init(model: model, adamIn: AdamMoments(d: model.d, dLatent: model.saeIn.m),
                  adamOut: model.saeOut.map { AdamMoments(d: model.d, dLatent: $0.m) }, completedSteps: 0)
    }

    /// A workspace for this state's steps of `config.batch` tokens.
    public func workspace(config: TrainConfig, threads: Int = Parallel.onlineCores) -> Workspace<T> {
        Workspace(model.workspaceShape(tokens: config.batch, jacobianChunk: config.jacobianChunk), purpose: .training, threads: threads)
    }
}

/// What one optimizer step reports.
public struct StepReport: Sendable {
    public var step: Int
    public var lr: Double
    public var lambda: Double
    public var components: LossComponents
    /// Global gradient norm before clipping, and the factor applied.
    public var gradNorm: Double
    public var clipFactor: Double
    public var metrics: BatchMetrics
}


public enum TrainingError: Error, CustomStringConvertible {
    case nonFiniteLoss(step: Int, components: LossComponents)
    case nonFiniteGradient(step: Int, components: LossComponents)
    public var description: String {
        switch self {
        case .nonFiniteLoss(let s, let c):
            return "step \(s): the loss is not finite (mse_in \(c.mseIn), mse_out \(c.mseOut), jacobian_l1 \(c.jacobianL1)); parameters left at the last good step"
        case .nonFiniteGradient(let s, let c):
            return "step \(s): the loss is finite (\(c.loss)) but its gradient is not finite; parameters left at the last good step"
        }
    }
}

