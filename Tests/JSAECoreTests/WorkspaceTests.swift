import Testing
@testable import JSAECore
import _JSAETestSupport

@Suite("Workspace and fused kernels")
struct WorkspaceTests {
    /// A Float pair whose batch spans several encoder and Jacobian chunks.
    static func fixture() -> (state: TrainState<Float>, x: Matrix<Float>, config: TrainConfig) {
        let s = PairShape(d: 16, dMlp: 40, mIn: 96, mOut: 80, k: 5, tokens: 48)
        let (model, x) = randomModel(s, seed: 91)
        var c = TrainConfig()
        c.batch = s.tokens; c.totalSteps = 50; c.lambda = 0.7; c.jacobianChunk = 7
        c.lrWarmupFraction = 0; c.lambdaWarmupFraction = 0
        return (TrainState(model: model.converted(to: Float.self)), x.converted(to: Float.self), c)
    }

    @Test("The fused Jacobian forward+backward equals its plain-loop definition", arguments: [1, 3, 100])
    func fusedJacobian(_ chunk: Int) {
        let (state, x, _) = Self.fixture()
        let model = state.model.converted(to: Double.self)
        let ws = Workspace<Double>(model.workspaceShape(tokens: x.rows, jacobianChunk: chunk),
                                   purpose: [.training, .storeJacobian], threads: 2)
        ws.load(x.converted(to: Double.self), yTarget: nil)
        model.forwardPass(ws, point: .trueInput)
        model.computeJacobianFactors(ws)
        let coef = 0.37
        ws.dwd1.p.update(repeating: 0, count: ws.dwd1.count)
        ws.dw2eT.p.update(repeating: 0, count: ws.dw2eT.count)
        let stats = jacobianForwardBackward(dwd1: ws.dwd1.p, dw2eT: ws.dw2eT.p, coef: coef, store: ws.jacobian.p,
                                            tokenAbs: ws.jacobianAbs.p, tokenCounts: ws.jacobianCounts.p, scratch: ws.arena.p,
                                            model.jacobianInputs(ws), chunk: chunk, threads: 2)
        let want = jacobianForwardBackwardReference(model.jacobianInputs(ws), coef: coef)
        // The same Double sums in another association order (BLAS blocks vs
        // one running sum over d_mlp = 40 terms): rounding only, ≲ 1e-14 relative.
        let J = ws.jacobian.array(want.J.count)
        #expect(allClose(J, want.J, rtol: 1e-12, atol: 1e-14))
        #expect(allClose(ws.dwd1.array(want.dwd1.count), want.dwd1, rtol: 1e-12, atol: 1e-14))
        #expect(allClose(ws.dw2eT.array(want.dw2eT.count), want.dw2eT, rtol: 1e-12, atol: 1e-14))
        #expect(want.dwd1.contains { $0 != 0 } && want.dw2eT.contains { $0 != 0 })
        #expect(abs(stats.absSum - want.J.reduce(0) { $0 + abs($1) }) <= 1e-12 * stats.absSum)
        #expect(stats.entries == J.count && stats.above[1] == J.filter { abs($0) > 0.01 }.count)
    }
}
