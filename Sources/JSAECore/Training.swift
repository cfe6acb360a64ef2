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

    public var schedule: Schedule {
        Schedule(totalSteps: totalSteps, lrWarmupFraction: lrWarmupFraction,
                 lrDecayFraction: lrDecayFraction, lambdaWarmupFraction: lambdaWarmupFraction)
    }

    /// Rejects configurations that cannot train, before any work.
    public func validate() throws {
        guard batch >= 1 else { throw JSAEError("batch must be at least 1, got \(batch)") }
        guard totalSteps >= 1 else { throw JSAEError("the run must have at least one step, got \(totalSteps)") }
        guard lambda >= 0 && lambda.isFinite else { throw JSAEError("lambda must be a finite number >= 0, got \(lambda)") }
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
    /// Steps completed.
    public var step: Int

    public init(model: JSAEModel<T>, adamIn: AdamMoments<T>, adamOut: AdamMoments<T>?, step: Int) {
        self.model = model; self.adamIn = adamIn; self.adamOut = adamOut; self.step = step
    }

    /// A fresh run: the paper's initialisation from `seed`, zero moments.
    public static func initial(d: Int, mIn: Int, mOut: Int, k: Int, mlp: MLP<T>?, single: Bool, seed: UInt64) throws -> TrainState<T> {
        var g = SeededGenerator(seed: seed)
        let saeIn = try TopKSAE<T>.initialised(d: d, m: mIn, k: k, using: &g)
        let saeOut = single ? nil : try TopKSAE<T>.initialised(d: d, m: mOut, k: k, using: &g)
        if !single && mlp == nil { throw JSAEError("a JSAE pair needs the MLP (from the model or the activations file)") }
        let model = try JSAEModel(saeIn: saeIn, saeOut: saeOut, mlp: mlp)
        return TrainState(model: model, adamIn: AdamMoments(d: d, dLatent: mIn),
                          adamOut: single ? nil : AdamMoments(d: d, dLatent: mOut), step: 0)
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

/// Per-batch quality metrics.
public struct BatchMetrics: Sendable {
    public var explainedVarianceIn = 0.0
    public var explainedVarianceOut: Double?
    public var l0In = 0.0
    public var l0Out: Double?
    /// Share of |J| entries above 0.005, 0.01, 0.015, 0.02 (at the configured point).
    public var jacobianShares: [Double]?
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

/// Mean over tokens of 1 − ‖a − â‖² / ‖a − mean_batch(a)‖².
public func explainedVariance<T: JSAEScalar>(_ a: Matrix<T>, _ aHat: Matrix<T>) -> Double {
    let B = a.rows, d = a.cols
    var mean = [Double](repeating: 0, count: d)
    for b in 0..<B { for c in 0..<d { mean[c] += Double(a[b, c]) } }
    for c in 0..<d { mean[c] /= Double(max(B, 1)) }
    var total = 0.0
    for b in 0..<B {
        var err = 0.0, v = 0.0
        for c in 0..<d {
            let e = Double(a[b, c] - aHat[b, c]); err += e * e
            let u = Double(a[b, c]) - mean[c]; v += u * u
        }
        total += v > 0 ? 1 - err / v : 0
    }
    return total / Double(max(B, 1))
}

func meanL0<T: JSAEScalar>(_ c: SparseCodes<T>) -> Double {
    Double(c.values.reduce(0) { $0 + ($1 > 0 ? 1 : 0) }) / Double(max(c.tokens, 1))
}

extension TrainState {
    /// One optimizer step of the paper's recipe on a batch:
    /// renormalise decoder rows → loss and gradients at λ_t → (stop if not
    /// finite) → global-norm clipping → Adam at lr_t.
    /// - x: [B, d]; yTarget: [B, d] MLP output as the model computed it, or nil for f(x)
    /// - onCodes: sees both SAEs' codes (e.g. for dead-latent tracking)
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public mutating func step(_ x: Matrix<T>, yTarget: Matrix<T>? = nil, config: TrainConfig,
                              wantJacobianShares: Bool = true,
                              onCodes: ((SparseCodes<T>, SparseCodes<T>?) -> Void)? = nil,
                              timer: PhaseTimer? = nil) throws -> StepReport {
        let sched = config.schedule
        let t = step
        let lr = config.lr * sched.lrFactor(t)
        let lam = config.single ? 0 : config.lambda * sched.lambdaFactor(t)
        timed(timer, .optimizer) {
            model.saeIn.normaliseDecoderRows()
            model.saeOut?.normaliseDecoderRows()
        }

        // With λ_t = 0 (traditional pair, or the first warm-up step) J is
        // needed only when this step reports it.
        var pass = model.lossAndGradientsImpl(x, yTarget: yTarget, lambda: lam, chunk: config.jacobianChunk,
                                              keepJacobian: false, factors: nil, timer: timer,
                                              needJacobian: wantJacobianShares)
        guard pass.components.loss.isFinite else { throw TrainingError.nonFiniteLoss(step: t, components: pass.components) }
        onCodes?(pass.forward.codesIn, pass.forward.codesOut)
        // The reported sparsity at the paper's point needs J at x̂, taken
        // with the parameters this step's loss saw (before the update).
        var shares: [Double]? = pass.jacobianStats.map { s in (0..<4).map { s.share($0) } }
        if wantJacobianShares && config.evaluationPoint == .reconstruction && model.saeOut != nil {
            shares = timed(timer, .metrics) { model.jacobianShares(x, point: .reconstruction, chunk: config.jacobianChunk) }
        }
        let t0 = timer == nil ? 0 : PhaseTimer.now()

        // torch.nn.utils.clip_grad_norm_: factor = min(1, max_norm / (norm + 1e-6)).
        let norm = pass.gradients.squaredNorm.squareRoot()
        guard norm.isFinite else { throw TrainingError.nonFiniteGradient(step: t, components: pass.components) }
        let factor = min(1, config.clipNorm / (norm + 1e-6))
        if factor < 1 {
            pass.gradients.saeIn.scale(by: T(factor))
            pass.gradients.saeOut?.scale(by: T(factor))
        }
        adamStep(&model.saeIn, grads: pass.gradients.saeIn, moments: &adamIn, lr: lr, step: t, config: config.adam)
        if var so = model.saeOut, let g = pass.gradients.saeOut, var mo = adamOut {
            model.saeOut = nil  // keep the stored copy unique so the update is in place
            adamOut = nil
            adamStep(&so, grads: g, moments: &mo, lr: lr, step: t, config: config.adam)
            model.saeOut = so
            adamOut = mo
        }
        step += 1
        let t1 = timer == nil ? 0 : PhaseTimer.now()
        timer?.add(.optimizer, t1 - t0)
        defer { timer?.add(.metrics, PhaseTimer.now() - t1) }

        var metrics = BatchMetrics()
        let f = pass.forward
        metrics.explainedVarianceIn = explainedVariance(f.x, f.xHat)
        metrics.l0In = meanL0(f.codesIn)
        if let y = f.y, let yHat = f.yHat, let co = f.codesOut {
            metrics.explainedVarianceOut = explainedVariance(y, yHat)
            metrics.l0Out = meanL0(co)
            if wantJacobianShares { metrics.jacobianShares = shares }
        }
        return StepReport(step: t, lr: lr, lambda: lam, components: pass.components,
                          gradNorm: norm, clipFactor: factor, metrics: metrics)
    }
}

extension JSAEModel {
    /// Share of |J| entries above each of `JacobianStats.thresholds` on x,
    /// with J at the given evaluation point.
    public func jacobianShares(_ x: Matrix<T>, point: EvaluationPoint, chunk: Int = defaultJacobianChunk) -> [Double]? {
        guard saeOut != nil, mlp != nil else { return nil }
        return forwardImpl(x, point: point, factors: nil, chunk: chunk).jacobian.map { JSAECore.jacobianShares($0) }
    }
}

/// Latents that have not fired (value > 0) within a window of steps.
public struct DeadLatentTracker: Sendable {
    public var lastActiveIn: [Int]
    public var lastActiveOut: [Int]
    public init(mIn: Int, mOut: Int, startStep: Int) {
        lastActiveIn = [Int](repeating: startStep, count: mIn)
        lastActiveOut = [Int](repeating: startStep, count: mOut)
    }
    public mutating func record<T: JSAEScalar>(_ codesIn: SparseCodes<T>, _ codesOut: SparseCodes<T>?, step: Int) {
        for (i, v) in zip(codesIn.indices, codesIn.values) where v > 0 { lastActiveIn[i] = step + 1 }
        if let c = codesOut { for (i, v) in zip(c.indices, c.values) where v > 0 { lastActiveOut[i] = step + 1 } }
    }
    /// Counts of latents with no activation in the last `window` steps
    /// before `step` (a fresh tracker reports none until `window` steps pass).
    public func dead(atStep step: Int, window: Int) -> (input: Int, output: Int) {
        (lastActiveIn.filter { step - $0 >= window }.count, lastActiveOut.filter { step - $0 >= window }.count)
    }
}
