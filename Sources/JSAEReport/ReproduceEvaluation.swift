import Foundation
import JSAECore
import JSAEIO
import JSAERuns

/// A held-out evaluation at the true input, in memory (no forward files):
/// the scale curve's point. The same measures as the final evaluation, by
/// the same functions (explainedVariance, meanL0, LossSums).
func evaluateSnapshot(_ model: JSAEModel<Float>, eval: EvalSet, step: Int, batch: Int, threads: Int) -> Snapshot {
    let n = eval.x.rows, d = model.d, chunk = 1024
    let ws = Workspace<Float>(model.workspaceShape(tokens: min(chunk, n)), purpose: .storeJacobian, threads: threads)
    model.updateJacobianFactors(ws)
    var xHat = Matrix<Float>(rows: n, cols: d), yHat = Matrix<Float>(rows: n, cols: d), y = Matrix<Float>(rows: n, cols: d)
    var counts = ThresholdCounts()
    var codes = HeldOutMetrics.Codes()
    var sums = LossSums()
    for start in stride(from: 0, to: n, by: chunk) {
        let rows = start..<min(n, start + chunk)
        let r = model.evaluate(eval.x.rows(rows), point: .trueInput, workspace: ws)
        xHat.data.replaceSubrange((rows.lowerBound * d)..<(rows.upperBound * d), with: r.xHat.data)
        yHat.data.replaceSubrange((rows.lowerBound * d)..<(rows.upperBound * d), with: r.yHat!.data)
        y.data.replaceSubrange((rows.lowerBound * d)..<(rows.upperBound * d), with: r.y!.data)
        counts.add(r.jacobian!)
        codes.indicesIn += r.codesIn.indices; codes.valuesIn += r.codesIn.values
        codes.indicesOut += r.codesOut!.indices; codes.valuesOut += r.codesOut!.values
        sums.add(r.sums)
    }
    let c = sums.components(lambda: 0)
    return Snapshot(step: step, tokens: step * batch, shares: JacobianShares(counts),
                    metrics: HeldOutMetrics(x: eval.x, xHat: xHat, y: y, yHat: yHat, codes: codes,
                                            mIn: model.saeIn.m, mOut: model.saeOut!.m, mseIn: c.mseIn, mseOut: c.mseOut, jacobianL1: c.jacobianL1))
}

/// The final evaluation: forward files at both evaluation points (and, on
/// pre-trained data with /ln_in, of the processed model), the threshold
/// counts, the reconstruction metrics, and f_s linearity and ablation in
/// both variants.
/// - modelPath: the model file the forward files name (nil: the run's runs/NAME/model.h5)
func evaluate(_ model: JSAEModel<Float>, name: String, data: String, lambda: Double, eval: EvalSet, o: ReproduceOptions,
              modelPath: String? = nil) throws -> RunSummary {
    var files: [EvaluationKey: String] = [:], shares: [EvaluationKey: JacobianShares] = [:], counts: [EvaluationKey: ThresholdCounts] = [:]
    var forwards: [EvaluationPoint: ForwardFile<Float>] = [:]
    let reader = try ActivationsReader(eval.path)
    var jacobianL1 = 0.0
    func forward(_ m: JSAEModel<Float>, _ r: ActivationsReader, point: EvaluationPoint, key: EvaluationKey) throws -> (ForwardFile<Float>, LossComponents) {
        let path = o.outDir + "/forward/\(name).\(key).h5"
        var fo = ForwardOptions()
        fo.point = point; fo.lambda = lambda; fo.threads = o.threads
        let c = try runForward(model: m, activations: r, modelPath: modelPath ?? o.outDir + "/runs/\(name)/model.h5", outPath: path, options: fo)
        let f = try ForwardFile<Float>(path)
        let n = ThresholdCounts(f.jacobian ?? [])
        files[key] = path; counts[key] = n; shares[key] = JacobianShares(n)
        return (f, c)
    }
    for point in EvaluationPoint.allCases {
        let (f, c) = try forward(model, reader, point: point, key: EvaluationKey(point))
        if point == .trueInput { jacobianL1 = c.jacobianL1 }
        forwards[point] = f
    }
    // Reconstruction metrics at the true input (the output SAE's target is f(x)).
    let t = forwards[.trueInput]!
    let x = eval.x
    func analysis(_ m: JSAEModel<Float>, _ v: AnalysisVariant, _ path: ModelPath, bases: Matrix<Float>, _ f: ForwardFile<Float>) -> ConnectionAnalysis {
        connectionAnalysis(m, variant: v, path: path, bases: bases, forward: f, linearitySamples: o.linearitySamples,
                           ablationSamples: o.ablationSamples, seed: o.seed, threads: o.threads)
    }
    var analyses = [analysis(model, .authors, .consistent, bases: x, t),
                    analysis(model, .reconstruction, .consistent, bases: forwards[.reconstruction]!.xHat, forwards[.reconstruction]!)]
    if let processed = eval.processed {
        let pm = try JSAEModel(saeIn: model.saeIn, saeOut: model.saeOut, mlp: processed.mlp)
        let (f, _) = try forward(pm, try ActivationsReader(processed.path), point: .trueInput, key: .processedTrueInput)
        analyses.append(analysis(pm, .authors, .processed, bases: processed.x, f))
    }
    let xhatVariant = analyses[1]
    return RunSummary(name: name, data: data, lambda: lambda, forwardFiles: files, shares: shares,
                      metrics: HeldOutMetrics(x: x, xHat: t.xHat, y: t.y!, yHat: t.yHat!,
                                              codes: .init(indicesIn: t.inIndices, valuesIn: t.inValues, indicesOut: t.outIndices!, valuesOut: t.outValues!),
                                              mIn: model.saeIn.m, mOut: model.saeOut!.m, mseIn: t.mseIn, mseOut: t.mseOut ?? 0, jacobianL1: jacobianL1),
                      linearity: ["linear": xhatVariant.linear.share, "JumpReLU": xhatVariant.jumpReLU.share, "other": xhatVariant.other.share],
                      ablationAgreement: xhatVariant.ablationAgrees.share, samples: xhatVariant.linear.total,
                      thresholdCounts: counts, analyses: analyses)
}
