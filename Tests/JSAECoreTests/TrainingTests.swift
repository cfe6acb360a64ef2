import Testing
import JSAECore
import _JSAETestSupport

@Suite("Training recipe")
struct TrainingTests {
    @Test("Initialisation: kaiming-uniform decoder, encoder = decoderᵀ, zero biases, seeded")
    func initialisation() throws {
        var g = SeededGenerator(seed: 5)
        let sae = try TopKSAE<Double>.initialised(d: 16, m: 64, k: 4, using: &g)
        let bound = (6.0 / 16).squareRoot()
        #expect(sae.wDec.data.allSatisfy { abs($0) < bound })
        #expect(sae.wEnc == sae.wDec.transposed)
        #expect(sae.bEnc.allSatisfy { $0 == 0 } && sae.bDec.allSatisfy { $0 == 0 })
        // Uniform on [−b, b): mean 0, variance b²/3 (1024 draws: 4σ bands).
        let n = Double(sae.wDec.count), mean = sae.wDec.data.reduce(0, +) / n
        let variance = sae.wDec.data.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / n
        #expect(abs(mean) < 4 * (bound * bound / 3 / n).squareRoot())
        #expect(abs(variance - bound * bound / 3) < 0.1 * bound * bound / 3)
        var g2 = SeededGenerator(seed: 5)
        #expect(try TopKSAE<Double>.initialised(d: 16, m: 64, k: 4, using: &g2) == sae)
    }

    @Test("Schedule step counts and end points at the paper's scale (73,243 steps)")
    func paperSchedule() {
        let s = Schedule(totalSteps: 73_243, lrWarmupFraction: 0.01, lrDecayFraction: 0.2, lambdaWarmupFraction: 0.05)
        #expect(s.lrWarmupSteps == 732 && s.lrDecaySteps == 14_648 && s.lambdaWarmupSteps == 3_662)
        #expect(s.lrFactor(0) == 1.0 / 732)
        #expect(abs(s.lrFactor(731) - 1) < 1e-15 && s.lrFactor(732) == 1 && s.lrFactor(73_243 - 14_649) == 1)
        #expect(s.lrFactor(73_243 - 14_648) == 1)
        #expect(abs(s.lrFactor(73_242) - 1.0 / 14_648) < 1e-15)
        #expect(s.lambdaFactor(0) == 0 && s.lambdaFactor(1831) == 1831.0 / 3662 && s.lambdaFactor(3662) == 1 && s.lambdaFactor(50_000) == 1)
    }

    @Test("Decoder rows are renormalised to unit norm at the start of a step; the MLP never changes")
    func stepInvariants() throws {
        var (model, x) = randomModel(PairShape.sweep[0], seed: 81)
        // Rows of norm ≈ 3: only the step's renormalisation brings them near 1.
        model.saeIn.wDec.data = model.saeIn.wDec.data.map { 3 * $0 }
        model.saeOut!.wDec.data = model.saeOut!.wDec.data.map { 3 * $0 }
        var state = TrainState(model: model, adamIn: AdamMoments(d: model.d, dLatent: model.saeIn.m),
                               adamOut: AdamMoments(d: model.d, dLatent: model.saeOut!.m), completedSteps: 0)
        var c = TrainConfig()
        c.totalSteps = 10; c.lr = 1e-4; c.lrWarmupFraction = 0
        _ = try state.step(x, config: c)
        // After renormalising, Adam moves each entry by at most ~lr, so each
        // row norm is within √d·lr of 1.
        for sae in [state.model.saeIn, state.model.saeOut!] {
            for i in 0..<sae.m {
                let n = sae.wDec.row(i).map { $0 * $0 }.reduce(0, +).squareRoot()
                #expect(abs(n - 1) < Double(sae.d).squareRoot() * 1.5e-4, "row \(i) norm \(n)")
            }
        }
        #expect(state.model.mlp == model.mlp)
        #expect(state.completedSteps == 1)
    }

    @Test("A step with a non-finite gradient throws before touching the parameters")
    func nonFinite() throws {
        let (model, x0) = randomModel(PairShape.sweep[0], seed: 82)
        var f = model.converted(to: Float.self)
        var x = x0.converted(to: Float.self)
        x[0, 0] = 1e30   // finite input whose square overflows Float
        var state = TrainState(model: f, adamIn: AdamMoments(d: f.d, dLatent: f.saeIn.m),
                               adamOut: AdamMoments(d: f.d, dLatent: f.saeOut!.m), completedSteps: 0)
        var c = TrainConfig()
        c.totalSteps = 10
        #expect(throws: TrainingError.self) { try state.step(x, config: c) }
        #expect(state.completedSteps == 0)
        f.saeIn.normaliseDecoderRows(); f.saeOut!.normaliseDecoderRows()
        #expect(state.model.saeIn == f.saeIn && state.adamIn == AdamMoments(d: f.d, dLatent: f.saeIn.m))
    }

    @Test("Configuration is validated before any work")
    func validation() {
        var c = TrainConfig()
        c.batch = 0
        #expect(throws: JSAEError("batch must be at least 1, got 0")) { try c.validate() }
        c = TrainConfig(); c.lambda = -1
        #expect(throws: JSAEError("lambda must be a finite number >= 0, got -1.0")) { try c.validate() }
        c = TrainConfig(); c.totalSteps = 0
        #expect(throws: JSAEError.self) { try c.validate() }
        c = TrainConfig(); c.lrWarmupFraction = 0.9
        #expect(throws: JSAEError("lr warm-up and decay fractions add up to more than 1")) { try c.validate() }
    }
}
