/// One optimizer step of the paper's recipe (docs/jsae-spec.md, "Training"),
/// read top to bottom. Every kernel it names writes into the run's
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

    mutating func stepImpl(_ x: Matrix<T>, yTarget: Matrix<T>?, config: TrainConfig, ws: Workspace<T>,
                           report: Bool, deadLatents: DeadLatentTracker?, timer: PhaseTimer?) throws -> StepReport {
        let t = step, threads = ws.threads
        let lr = config.lr * config.schedule.lrFactor(t)
        let lambda = config.single ? 0 : config.lambda * config.schedule.lambdaFactor(t)
        // 1. Decoder rows to unit norm.
        timed(timer, .optimizer) {
            model.saeIn.normaliseDecoderRows(threads: threads)
            model.saeOut?.normaliseDecoderRows(threads: threads)
        }
        // 2. Forward, loss and backward at the true input. With λ_t = 0 (the
        //    traditional pair, or the first warm-up step) J is needed only to report it.
        ws.load(x, yTarget: yTarget)
        let needJacobian = model.saeOut != nil && (lambda > 0 || report)
        if needJacobian { timed(timer, .precompute) { model.computeJacobianFactors(ws) } }
        let (sums, stats) = model.forwardAndBackward(ws, lambda: lambda, jacobian: needJacobian, timer: timer)
        let loss = sums.components(lambda: lambda)
        guard loss.loss.isFinite else { throw TrainingError.nonFiniteLoss(step: t, components: loss) }
        // 3. Metrics of this batch, with the parameters the loss saw.
        var metrics = timed(timer, .metrics) { model.batchMetrics(ws, deadLatents: deadLatents, step: t) }
        if report && model.saeOut != nil {
            metrics.jacobianShares = config.evaluationPoint == .trueInput ? stats?.shares
                : timed(timer, .metrics) { model.jacobianShares(ws, point: config.evaluationPoint) }
        }
        // 4. Global-norm clipping, then Adam.
        let t0 = PhaseTimer.now()
        let norm = (squaredNorm(ws.gradIn, threads: threads) + (model.saeOut != nil ? squaredNorm(ws.gradOut, threads: threads) : 0)).squareRoot()
        guard norm.isFinite else { throw TrainingError.nonFiniteGradient(step: t, components: loss) }
        let factor = clipFactor(norm: norm, maxNorm: config.clipNorm)
        if factor < 1 {
            scale(&ws.gradIn, by: T(factor), threads: threads)
            if model.saeOut != nil { scale(&ws.gradOut, by: T(factor), threads: threads) }
        }
        adamStep(&model.saeIn.tensors, grads: ws.gradIn, moments: &adamIn, lr: lr, step: t, config: config.adam, threads: threads)
        if model.saeOut != nil {
            adamStep(&model.saeOut!.tensors, grads: ws.gradOut, moments: &adamOut!, lr: lr, step: t, config: config.adam, threads: threads)
        }
        timer?.add(.optimizer, PhaseTimer.now() - t0)
        step += 1
        return StepReport(step: t, lr: lr, lambda: lambda, components: loss, gradNorm: norm, clipFactor: factor, metrics: metrics)
    }
}

extension JSAEModel {
    /// The forward pass, J (fused with its backward when λ > 0), the loss
    /// sums and the backward pass, on the batch in `ws`; the Jacobian factors
    /// must be current when `jacobian` is true.
    func forwardAndBackward(_ ws: Workspace<T>, lambda: Double, jacobian: Bool, timer: PhaseTimer?) -> (LossSums, JacobianStats?) {
        forwardPass(ws, point: .trueInput, timer: timer)
        var stats: JacobianStats? = nil
        if jacobian && lambda > 0 {
            timed(timer, .jacobianBackward) {
                ws.dwd1.p.update(repeating: 0, count: ws.dwd1.count)
                ws.dw2eT.p.update(repeating: 0, count: ws.dw2eT.count)
            }
            stats = jacobianForwardBackward(dwd1: ws.dwd1.p, dw2eT: ws.dw2eT.p, coef: T(lambda / Double(ws.tokens * k * k)),
                                            store: ws.jacobian.count > 0 ? ws.jacobian.p : nil, tokenAbs: ws.jacobianAbs.p,
                                            tokenCounts: ws.jacobianCounts.p, scratch: ws.arena.p, jacobianInputs(ws),
                                            chunk: ws.shape.jacobianChunk, threads: ws.threads)
        } else if jacobian {
            stats = jacobianStats(ws)
        }
        timer?.add(.jacobianForward, stats?.forwardSeconds ?? 0)
        timer?.add(.jacobianBackward, stats?.backwardSeconds ?? 0)
        let sums = lossSums(ws, jacobian: stats)
        backwardPass(ws, lambda: jacobian ? lambda : 0, timer: timer)
        return (sums, stats)
    }

    /// Shares of |J| above the thresholds on the batch in `ws` with J at
    /// `point` (factors current). Overwrites the activation cache.
    func jacobianShares(_ ws: Workspace<T>, point: EvaluationPoint) -> SIMD4<Double> {
        ws.hasYTarget = false   // the output SAE reads f at the point, as in evaluation
        forwardPass(ws, point: point)
        return jacobianStats(ws).shares
    }
}
