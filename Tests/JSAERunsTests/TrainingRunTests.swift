import Foundation
import Testing
import JSAECore
import JSAEIO
import JSAERuns
import _JSAETestSupport

/// A small pair, its activations file (with /mlp) and a configuration whose
/// 20 steps cross several buffer refills and an epoch boundary.
func trainingFixture(_ dir: String, badRows: Range<Int>? = nil) throws -> (acts: String, config: TrainConfig, mlp: MLP<Double>) {
    let (model, _) = randomModel(PairShape(d: 6, dMlp: 10, mIn: 12, mOut: 12, k: 3, tokens: 1), seed: 91)
    var g = SeededGenerator(seed: 92)
    var x = g.matrix(48, 6)
    if let badRows { for r in badRows { for c in 0..<6 { x[r, c] = 1e30 } } }
    let path = dir + "/acts.h5"
    try writeActivations(x, to: path, mlp: model.mlp!)
    var c = TrainConfig()
    c.totalSteps = 20; c.batch = 4; c.lr = 0.01; c.lambda = 0.5; c.seed = 93
    c.lrWarmupFraction = 0.1; c.lambdaWarmupFraction = 0.2
    return (path, c, model.mlp!)
}

func freshState<T: JSAEScalar>(_ c: TrainConfig, mlp: MLP<Double>, _: T.Type) throws -> TrainState<T> {
    try TrainState<T>.initial(d: 6, mIn: 12, mOut: 12, k: 3, mlp: mlp.converted(), single: false, seed: c.seed)
}

@Suite("Training runs: streaming, checkpoints, resume")
struct TrainingRunTests {
    func resumeMatches<T: JSAEScalar>(_: T.Type) throws {
        let root = temporaryDirectory()
        let (acts, config, mlp) = try trainingFixture(root)
        let reader = try ActivationsReader(acts)
        let prov = CheckpointFile.Provenance(activationsFile: acts, shuffleBufferTokens: 12)

        // Uninterrupted.
        var a = try freshState(config, mlp: mlp, T.self)
        try FileManager.default.createDirectory(atPath: root + "/a", withIntermediateDirectories: true)
        let outA = try runTraining(state: &a, config: config, stream: BatchStream<T>(reader: reader, batch: 4, bufferBatches: 3, seed: config.seed),
                                   provenance: prov, options: TrainRunOptions(outDir: root + "/a"))
        #expect(outA == .finished(checkpoint: CheckpointFile.path(in: root + "/a", step: 20)))

        // Interrupted before step 7 (mid-refill), then resumed from disk in a new state and stream.
        var b = try freshState(config, mlp: mlp, T.self)
        try FileManager.default.createDirectory(atPath: root + "/b", withIntermediateDirectories: true)
        var calls = 0
        let outB = try runTraining(state: &b, config: config, stream: BatchStream<T>(reader: reader, batch: 4, bufferBatches: 3, seed: config.seed),
                                   provenance: prov, options: TrainRunOptions(outDir: root + "/b"),
                                   shouldStop: { calls += 1; return calls == 8 })
        #expect(outB == .interrupted(step: 7, checkpoint: CheckpointFile.path(in: root + "/b", step: 7)))
        var (resumed, rconfig, rprov) = try CheckpointFile.read(CheckpointFile.latest(in: root + "/b")!, as: T.self)
        #expect(resumed.completedSteps == 7 && rconfig == config && rprov.shuffleBufferTokens == 12)
        _ = try runTraining(state: &resumed, config: rconfig,
                            stream: BatchStream<T>(reader: try ActivationsReader(acts), batch: 4, bufferBatches: 3, seed: rconfig.seed),
                            provenance: rprov, options: TrainRunOptions(outDir: root + "/b"))
        // Bit-identical: same batches, same arithmetic, moments restored exactly.
        #expect(resumed.completedSteps == a.completedSteps)
        #expect(resumed.model.saeIn == a.model.saeIn && resumed.model.saeOut == a.model.saeOut)
        #expect(resumed.adamIn == a.adamIn && resumed.adamOut == a.adamOut)
        // Older checkpoints were pruned to the newest two.
        let names = try FileManager.default.contentsOfDirectory(atPath: root + "/b").filter { $0.hasPrefix("checkpoint-") }
        #expect(names.count == 2)
    }

    @Test("An interrupted and resumed run reaches exactly the uninterrupted parameters (Double)")
    func resumeDouble() throws { try resumeMatches(Double.self) }

    @Test("An interrupted and resumed run reaches exactly the uninterrupted parameters (Float)")
    func resumeFloat() throws { try resumeMatches(Float.self) }

    @Test("A truncated checkpoint is reported as corrupt, not loaded")
    func truncatedCheckpoint() throws {
        let root = temporaryDirectory()
        let (acts, config, mlp) = try trainingFixture(root)
        let s = try freshState(config, mlp: mlp, Float.self)
        let path = root + "/cp.h5"
        try CheckpointFile.write(s, config: config, provenance: .init(activationsFile: acts, shuffleBufferTokens: 12), to: path)
        _ = try CheckpointFile.read(path, as: Float.self)  // intact: loads
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        for cut in [data.count - 100, data.count / 2, 512] {
            try data.prefix(cut).write(to: URL(fileURLWithPath: path))
            #expect {
                _ = try CheckpointFile.read(path, as: Float.self)
            } throws: { e in
                "\(e)".contains(path) && "\(e)".contains("corrupt")
            }
        }
    }

    @Test("A diverging run stops with an error and keeps the last good checkpoint")
    func divergence() throws {
        let root = temporaryDirectory()
        // Rows 16..<24 overflow Float when squared; with one batch of 4 per
        // buffer, refill r reads rows 4r..<4r+4, so step 4 is the first to see them.
        let (acts, config, mlp) = try trainingFixture(root, badRows: 16..<24)
        var s = try freshState(config, mlp: mlp, Float.self)
        var opts = TrainRunOptions(outDir: root)
        opts.checkpointEvery = 1
        #expect {
            _ = try runTraining(state: &s, config: config,
                                stream: BatchStream<Float>(reader: try ActivationsReader(acts), batch: 4, bufferBatches: 1, seed: 1),
                                provenance: .init(activationsFile: acts, shuffleBufferTokens: 4), options: opts)
        } throws: { e in
            e is TrainingDiverged && "\(e)".contains("step 4") && "\(e)".contains("checkpoint-000000004.h5")
        }
        let (good, _, _) = try CheckpointFile.read(CheckpointFile.latest(in: root)!, as: Float.self)
        #expect(good.completedSteps == 4)
        #expect(good.model.saeIn.wEnc.allFinite && good.model.saeOut!.wDec.allFinite)
    }

    @Test("Batches are a pure function of the step; each refill is a permutation of its rows; y stays aligned")
    func stream() throws {
        let dir = temporaryDirectory()
        var g = SeededGenerator(seed: 94)
        let x = g.matrix(10, 3)
        var y = x
        y.data = y.data.map { 2 * $0 + 1 }
        try writeActivations(x, to: dir + "/a.h5", y: y)
        let r = try ActivationsReader(dir + "/a.h5")
        let s1 = BatchStream<Double>(reader: r, batch: 2, bufferBatches: 3, seed: 7)
        let s2 = BatchStream<Double>(reader: r, batch: 2, bufferBatches: 3, seed: 7)
        var rows: [[Double]] = []
        for step in 0..<6 {
            let (bx, by) = try s1.batch(forStep: step)
            // y = 2x + 1 row by row (both stored as float32: rounding only).
            #expect(allClose(by!.data, bx.data.map { 2 * $0 + 1 }, rtol: 1e-6, atol: 1e-6))
            for i in 0..<2 { rows.append(bx.row(i)) }
        }
        // Backwards, from a fresh stream: the same batches.
        for step in (0..<6).reversed() { #expect(try s2.batch(forStep: step).x == s1.batch(forStep: step).x) }
        // Refill 0 covers rows 0..<6, refill 1 rows 6..<10 then 0..<2 (wrapping), each once.
        let xf = x.converted(to: Float.self).converted(to: Double.self)
        let want0 = Set((0..<6).map { xf.row($0) }), got0 = Set(rows[0..<6])
        let want1 = (6..<10).map { xf.row($0) } + (0..<2).map { xf.row($0) }
        #expect(got0 == want0)
        #expect(Set(rows[6..<12]) == Set(want1))
        #expect(rows[0..<6] != ArraySlice((0..<6).map { xf.row($0) }))  // actually shuffled
    }
}
