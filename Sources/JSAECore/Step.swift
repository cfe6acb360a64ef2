/// One optimizer step of the paper's recipe (docs/jsae-spec.md, "Training"),
/// read top to bottom: renormalise, forward, Jacobian, loss, backward,
/// metrics, clip, Adam. Every kernel it names writes into the run's
/// `Workspace`, so a step allocates nothing.
extension TrainState {
    /// - x: [B, d]; yTarget: [B, d] the MLP output as the model computed it, or nil for f(x)
    /// - workspace: the run's (`workspace(config:)`); nil makes one for this step
    /// - report: also measure the share of |J| above the paper's thresholds
    /// - deadLatents: records which latents fired
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public mutating func step(_ x: Matrix<T>, yTarget: Matrix<T>? = nil, config: TrainConfig, workspace: Workspace<T>? = nil,
                              report: Bool = true, deadLatents: DeadLatentTracker? = nil, timer: PhaseTimer? = nil) throws -> StepReport {
        try stepImpl(x, yTarget: yTarget, config: config, ws: workspace ?? self.workspace(config: config),
                     report: report, deadLatents: deadLatents, timer: timer)
    }

    /// The body of the public `step`, which is prespecialised and so must not
    /// be called from inside the module (Parallel.swift, "Specialisation").
    mutating func stepImpl(_ x: Matrix<T>, yTarget: Matrix<T>?, config: TrainConfig, ws: Workspace<T>,
                           report: Bool, deadLatents: DeadLatentTracker?, timer: PhaseTimer?) throws -> StepReport {
        let t = completedSteps, threads = ws.threads
        let lr = config.lr * config.schedule.lrFactor(t)
        let lambda = config.single ? 0 : config.lambda * config.schedule.lambdaFactor(t)
        // 1. Decoder rows to unit norm.
        timed(timer, .optimizer) {
            model.saeIn.normaliseDecoderRows(threads: threads)
            model.saeOut?.normaliseDecoderRows(threads: threads)
        }
        // 2. Forward pass at the true input: both SAEs and the MLP, into the cache.
        ws.load(x, yTarget: yTarget)
        model.forwardPass(ws, point: .trueInput, timer: timer)
        // 3. The Jacobian term: wd1/w2eᵀ, then J fused with its backward (λ_t > 0);
        //    with λ_t = 0 (the traditional pair, the first warm-up step) only if reported.
        let stats = model.jacobianTerm(ws, lambda: lambda, report: report, timer: timer)
        let loss = model.lossSums(ws, jacobian: stats).components(lambda: lambda)
        guard loss.loss.isFinite else { throw TrainingError.nonFiniteLoss(step: t, components: loss) }
        // 4. Backward pass: both reconstruction terms, then the chain through wd1 and w2e.
        model.backwardPass(ws, lambda: lambda, timer: timer)
        // 5. Metrics of this batch, with the parameters the loss saw.
        var metrics = timed(timer, .metrics) { model.batchMetrics(ws, deadLatents: deadLatents, step: t) }
        if report && model.saeOut != nil {
            metrics.jacobianShares = config.evaluationPoint == .trueInput ? stats?.shares
                : timed(timer, .metrics) { model.jacobianShares(ws, point: config.evaluationPoint) }
        }
        // 6. Global-norm clipping, then Adam.
        let t0 = PhaseTimer.now()
        // A single SAE's gradOut is empty: its norm is 0 and scaling it does nothing.
        let norm = (squaredNorm(ws.gradIn, partials: ws.partials.p, threads: threads)
                    + squaredNorm(ws.gradOut, partials: ws.partials.p, threads: threads)).squareRoot()
        guard norm.isFinite else { throw TrainingError.nonFiniteGradient(step: t, components: loss) }
        let factor = clipFactor(norm: norm, maxNorm: config.clipNorm)
        if factor < 1 {
            scale(&ws.gradIn, by: T(factor), threads: threads)
            scale(&ws.gradOut, by: T(factor), threads: threads)
        }
        adamStep(&model.saeIn.tensors, grads: ws.gradIn, moments: &adamIn, lr: lr, step: t, config: config.adam, threads: threads)
        if model.saeOut != nil {
            adamStep(&model.saeOut!.tensors, grads: ws.gradOut, moments: &adamOut!, lr: lr, step: t, config: config.adam, threads: threads)
        }
        timer?.add(.optimizer, PhaseTimer.now() - t0)
        completedSteps += 1
        return StepReport(step: t, lr: lr, lambda: lambda, components: loss, gradNorm: norm, clipFactor: factor, metrics: metrics)
    }
}
