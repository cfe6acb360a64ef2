import ArgumentParser
import Foundation
import JSAECore
import JSAEIO
import JSAECLIOptions
import _JSAETestSupport
import CAllocationCounter

enum Preset: String, ExpressibleByArgument, CaseIterable {
    case pythia70m = "pythia-70m", pythia160m = "pythia-160m", pythia410m = "pythia-410m", ci

    var shape: Shape {
        switch self {
        case .pythia70m: return Shape(d: 512, dMlp: 2048, expansion: 32, k: 32, batch: 4096)
        case .pythia160m: return Shape(d: 768, dMlp: 3072, expansion: 32, k: 32, batch: 4096)
        case .pythia410m: return Shape(d: 1024, dMlp: 4096, expansion: 64, k: 32, batch: 4096)
        case .ci: return Shape(d: 256, dMlp: 1024, expansion: 16, k: 32, batch: 2048)
        }
    }
    var steps: Int { self == .pythia410m ? 3 : (self == .ci ? 9 : 5) }
}

/// The paper's timing (jsae-spec.md): Pythia-70m, expansion 32, 100M tokens, one RTX 3090.
enum Paper {
    static let saeMinutes = 33.0, jsaeMinutes = 72.0
    static let saeTokensPerSecond = 50_500.0, jsaeTokensPerSecond = 23_100.0
    static let rtx3090PeakTFLOPs = 35.6
    static let tokens = 100_000_000.0
}

@main
struct JSAEBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "jsae-bench",
        abstract: "JSAE training throughput against the paper's Pythia-70m timing, with a phase breakdown and a CPU profile.",
        discussion: "Progress goes to stderr; the table (or --json) is the result. Exit status 0 unless the run itself fails.")

    @Option(help: "Preset: pythia-70m (default, the paper's timing setting), pythia-160m, pythia-410m, ci.")
    var preset: Preset = .pythia70m
    @Option(help: "Override d (model width).") var d: Int?
    @Option(help: "Override d_mlp.") var dMlp: Int?
    @OptionGroup var shapeOptions: SAEShapeOptions
    @OptionGroup var threadOptions: ThreadOptions
    @Option(help: "Timed steps per measurement (median reported).") var steps: Int?
    @Option(help: "Timed steps of the single SAE (default: --steps). Its steps are a fifth as long as the pair's, so the CI gate times more of them for a median that holds as still.")
    var saeSteps: Int?
    @Option(help: "Warm-up steps before timing.") var warmup: Int = 1
    @Option(help: "Tokens per Jacobian chunk (default: the library's).") var jacobianChunk: Int?
    @Option(help: "Use the first batch of /x (and /mlp) from this activations file instead of synthetic data.")
    var activations: String?
    @Option(help: "Start from the SAEs of this model or checkpoint file (trained SAEs give realistic index sets K1/K2) instead of seeded initial weights; its shape replaces the preset's. The MLP comes from --activations when given, else from this file.")
    var model: String?
    @Option(help: "Token order of the Jacobian pass in the timed steps: batch (the library's default) or shared-latents.")
    var jacobianOrder: JacobianOrder = .batch
    @Flag(help: "Instead of the sections: the JSAE pair's steps alternately with the library's Jacobian settings (batch order, default chunk) and with this run's --jacobian-order and --jacobian-chunk (A B B A, --steps pairs): the Jacobian phases' medians, their ratio, and the rows the chunks of each order gather.")
    var compareJacobian = false
    @Option(help: "Write every figure and the environment as JSON here.") var json: String?
    @Flag(help: "Do not run the gperftools CPU profiler around the timed JSAE steps.") var noProfile = false
    @Option(help: "Where the CPU profile is written.") var profilePath: String = "jsae-bench.prof"
    @Option(help: "Run tcmalloc's heap profiler over the JSAE steps, writing PREFIX.NNNN.heap (read with google-pprof --text).")
    var heapProfile: String?
    @Flag(help: "Skip the fingerprint (20-step golden training run loss curve).") var noFingerprint = false
    @Flag(help: "For the CI gate: time one ceiling sgemm before every timed step and after the last, and report each step's share of the ceiling measured beside it (median over steps). The probe's buffers stay allocated meanwhile, so peak memory is not comparable with a run without this flag.")
    var interleaveCeiling = false
    @Option(help: "Test hook for the CI gate: add this many ms of busy work (CPU time, one thread) to every timed step.")
    var injectDelayMs: Double = 0
    @Option(help: "Test hook for the CI gate: add busy work (one thread) of this many percent of each timed step's CPU time to that step.")
    var injectSlowdownPercent: Double = 0
    @Option(help: "Test hook for the CI gate: scale the fingerprint run's lr by (1 + this).") var perturbFingerprint: Double = 0
    @Option(help: "Test hook for the allocation count: allocate this many arrays inside every timed step.")
    var injectAllocations: Int = 0
    @Flag(help: "Print the OpenBLAS core (kernel set) this executable runs with and exit: the one OpenBLAS chose, or the one it is started again with when OpenBLAS fell back to its generic Prescott kernels on a CPU it does not know. The CI gate exports it so that the reference build runs the same kernels.")
    var printOpenblasCore = false
    @Flag(help: "Instead of the steps: time each dense product of a step at the preset's shape, tiled on the package's threads against one call on OpenBLAS's own threads, alternately, --steps pairs each (medians and the median ratio).")
    var gemms = false

    func validate() throws {
        for (name, v) in [("d", d), ("d-mlp", dMlp), ("steps", steps), ("sae-steps", saeSteps), ("jacobian-chunk", jacobianChunk)] {
            if let v, v < 1 { throw ValidationError("--\(name) must be at least 1") }
        }
        if warmup < 0 { throw ValidationError("--warmup must be >= 0") }
        if !(injectDelayMs >= 0) { throw ValidationError("--inject-delay-ms must be >= 0") }
        if !(injectSlowdownPercent >= 0) { throw ValidationError("--inject-slowdown-percent must be >= 0") }
    }

    func run() throws {
        if printOpenblasCore { print(BLASThreads.coreName); return }
        do { try bench() } catch let e as JSAEError {
            FileHandle.standardError.write(Data("jsae-bench: error: \(e.description)\n".utf8))
            throw ExitCode(2)
        }
    }

    func log(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

    func bench() throws {
        // Outputs are checked before the minutes of work whose results they hold.
        for (path, wanted) in [(json, json != nil), (profilePath, !noProfile), (heapProfile, heapProfile != nil)] where wanted {
            guard let path else { continue }
            let parent = (path as NSString).deletingLastPathComponent
            try requireFolder(parent.isEmpty ? "." : parent, for: path)
        }
        let threads = threadOptions.apply()
        var shape = preset.shape
        if let d { shape.d = d }
        if let dMlp { shape.dMlp = dMlp }
        if let expansion = shapeOptions.expansion { shape.expansion = expansion }
        if let k = shapeOptions.k { shape.k = k }
        if let batch = shapeOptions.batch { shape.batch = batch }
        let nSteps = steps ?? preset.steps
        let nSAESteps = saeSteps ?? nSteps
        try requireFits(shape)

        // Data and MLP: synthetic and seeded, or the first batch of a real file.
        var (x, mlp) = synthetic(shape)
        if let path = activations {
            let r = try ActivationsReader(path)
            guard r.tokens >= shape.batch else { throw JSAEError(file: path, "/x has \(r.tokens) tokens, fewer than one batch of \(shape.batch)") }
            shape.d = r.d
            x = try r.x(0..<shape.batch)
            guard r.file.exists("/mlp") else { throw JSAEError(file: path, "has no /mlp") }
            mlp = try MLPFile.read(r.file, d: r.d)
            try adoptFileShape(&shape, fileD: r.d, mlp: mlp, path: path)
        }
        var trained: JSAEModel<Float>? = nil
        if let path = model {
            let m = try ModelFile.read(path, as: Float.self, mlpFallback: activations == nil ? nil : try ActivationsReader(activations!).file)
            guard let saeOut = m.saeOut, let fileMLP = m.mlp else { throw JSAEError(file: path, "is not a JSAE pair with an MLP (here or in --activations)") }
            guard m.saeIn.m == saeOut.m, m.saeIn.m % m.d == 0, m.d == shape.d || activations == nil else {
                throw JSAEError(file: path, "needs both SAEs of m = expansion × d, and d equal to the activations' (m_in \(m.saeIn.m), m_out \(saeOut.m), d \(m.d))")
            }
            shape.d = m.d; shape.dMlp = fileMLP.dMlp; shape.expansion = m.saeIn.m / m.d; shape.k = m.k
            try requireFits(shape)
            if activations == nil { mlp = fileMLP; x = synthetic(shape).0 }
            trained = m
        }
        log("jsae-bench: \(preset.rawValue) d \(shape.d) d_mlp \(shape.dMlp) m \(shape.m) k \(shape.k) batch \(shape.batch), "
            + "\(warmup) warm-up + \(nSteps) timed steps, \(threads) threads, OpenBLAS \(BLASThreads.coreName)")

        if gemms {
            print(gemmComparison(shape, threads: threads, pairs: nSteps, log: log))
            return
        }
        if compareJacobian {
            print(try compareJacobianSettings(shape, mlp, x, trained: trained, threads: threads, pairs: nSteps))
            return
        }
        log("ceiling: sgemm \(shape.batch)×\(shape.m)×\(shape.d) …")
        let ceilingReps = max(nSteps, 5)
        let before = ceilingSamples(rows: shape.batch, cols: shape.m, inner: shape.d, threads: threads, reps: ceilingReps)
        let probe = interleaveCeiling ? CeilingProbe(rows: shape.batch, cols: shape.m, inner: shape.d, threads: threads) : nil
        log("bandwidth: copy and triad over \(Bandwidth.arrayBytes() >> 20) MiB arrays …")
        let bandwidth = try Bandwidth.measure(threads: threads, reps: max(nSteps, 5), gathers: GatherShape.step(shape))

        var config = TrainConfig()
        config.totalSteps = 1_000_000; config.batch = shape.batch; config.lambda = 1
        config.lrWarmupFraction = 0; config.lambdaWarmupFraction = 0   // λ > 0 from the first timed step
        if let jacobianChunk { config.jacobianChunk = jacobianChunk }
        let start = trained

        // One traditional SAE (single, on x).
        log("single SAE: \(warmup + nSAESteps) steps …")
        var sc = config; sc.single = true
        PeakMemory.reset()
        let saeTimer = PhaseTimer()
        let (saeTimes, saeCPU, saeAllocations, saePaired, _) = try timeSteps(shape, mlp, x, sc, saeTimer, steps: nSAESteps, threads: threads, probe: probe, start: start)
        // VmHWM, read after the state is freed. With --interleave-ceiling the
        // probe's arrays (296 MiB at Pythia-70m) are resident throughout; they
        // are the bench's, not the step's, so they are taken off.
        let probeBytes = probe?.bytes ?? 0
        let saePeak = PeakMemory.bytes() - probeBytes

        // The JSAE pair, profiled.
        log("JSAE pair: \(warmup + nSteps) steps …")
        PeakMemory.reset()
        let timer = PhaseTimer()
        var profiled = false
        let (jsaeTimes, jsaeCPU, jsaeAllocations, jsaePaired, parameterBits) = try timeSteps(shape, mlp, x, config, timer, steps: nSteps, threads: threads, probe: probe, start: start, beforeTimed: {
            if !noProfile { profiled = CPUProfiler.start(profilePath) }
            if let heapProfile { HeapProfiler.start(heapProfile) }
        })
        if profiled { CPUProfiler.stop() }
        if let heapProfile {
            HeapProfiler.stop(reason: "end of the timed JSAE steps")
            log("heap profiles: \(heapProfile).*.heap (google-pprof --text --inuse_space <exe> <file>)")
        }
        let jsaePeak = PeakMemory.bytes() - probeBytes
        log("parameters after the JSAE steps: \(parameterBits)")
        log("ceiling: \(ceilingReps) more products after the timed sections …")
        let after = ceilingSamples(rows: shape.batch, cols: shape.m, inner: shape.d, threads: threads, reps: ceilingReps)
        var sets = ["before": before.map(\.wall), "after": after.map(\.wall)]
        var cpuSamples = (before + after).map(\.cpu)
        for (name, p) in [("beside SAE steps", saePaired), ("beside JSAE steps", jsaePaired)] {
            if let p { sets[name] = p.ceiling.map(\.wall); cpuSamples += p.ceiling.map(\.cpu) }
        }
        let ceiling = CeilingSpread(flops: 2 * Double(shape.batch) * Double(shape.m) * Double(shape.d), sets: sets, cpuSeconds: cpuSamples)

        var fingerprint: [Double]? = nil
        if !noFingerprint {
            log("fingerprint: 20-step golden training run …")
            fingerprint = try goldenFingerprint(lrScale: 1 + perturbFingerprint)
        }

        let report = Report(preset: preset.rawValue, shape: shape, steps: nSteps, saeSteps: nSAESteps, warmup: warmup,
                            ceilingGFLOPs: ceiling.bestGFLOPs, ceilingCPUGFLOPs: ceiling.bestCPUGFLOPs, ceiling: ceiling, bandwidth: bandwidth,
                            saeSeconds: median(saeTimes), jsaeSeconds: median(jsaeTimes),
                            saeCPUSeconds: median(saeCPU), jsaeCPUSeconds: median(jsaeCPU),
                            saePaired: saePaired.map { $0.shares(flops: shape.saeFlops, probeFlops: probe!.flops) },
                            jsaePaired: jsaePaired.map { $0.shares(flops: shape.jsaeFlops, probeFlops: probe!.flops) },
                            saeStepSeconds: saeTimes, jsaeStepSeconds: jsaeTimes,
                            phases: Phase.allCases.map { ($0.rawValue, (timer.seconds[$0] ?? 0) / Double(nSteps)) },
                            saePhases: Phase.allCases.map { ($0.rawValue, (saeTimer.seconds[$0] ?? 0) / Double(nSAESteps)) },
                            saePeakBytes: saePeak, jsaePeakBytes: jsaePeak,
                            saeAllocations: saeAllocations, jsaeAllocations: jsaeAllocations, fingerprint: fingerprint,
                            parameterFingerprint: parameterBits,
                            profile: profiled ? profilePath : nil, environment: Environment.current(threads: threads))
        print(report.table())
        if profiled {
            print("CPU profile (gperftools, timed JSAE steps): \(profilePath)")
            if let top = CPUProfiler.summary(profile: profilePath, count: 15) {
                print("top functions by samples (google-pprof --text):\n" + top)
            } else {
                print("(install google-pprof to print the top functions here)")
            }
        }
        if let json {
            let data = try JSONEncoder.pretty.encode(report.json())
            try atomicWrite(to: json) { tmp in try data.write(to: URL(fileURLWithPath: tmp)) }
            log("wrote \(json)")
        }
    }

    /// A fresh seeded state (a single SAE when `c.single`), warm-up, then timed
    /// optimizer steps; returns each timed step's wall and CPU seconds. The state lives only
    /// here, so the next section starts without it.
    func timeSteps(_ shape: Shape, _ mlp: MLP<Float>, _ x: Matrix<Float>, _ c: TrainConfig, _ timer: PhaseTimer?,
                   steps n: Int, threads: Int, probe: CeilingProbe? = nil, start: JSAEModel<Float>? = nil,
                   beforeTimed: () -> Void = {}) throws -> ([Double], [Double], Allocations, PairedSamples?, String) {
        var state = try initialState(shape, mlp, c, start: start)
        let ws = state.workspace(config: c, threads: threads)
        ws.jacobianOrder = jacobianOrder
        for _ in 0..<warmup { _ = try state.step(x, config: c, workspace: ws, report: false) }
        beforeTimed()
        var times: [Double] = [], cpu: [Double] = []
        times.reserveCapacity(n); cpu.reserveCapacity(n)
        var allocations = Allocations()
        guard jsae_allocation_counter_install() == 0 else { throw JSAEError("cannot install tcmalloc's allocation hook") }
        var before = jsae_allocation_counts(), after = jsae_allocation_counts()
        var paired = probe.map { _ in PairedSamples() }
        for i in 0..<n {
            if let probe { paired?.ceiling.append(probe.sample()) }
            jsae_allocation_counter_read(&before)
            let t0 = Clock.now(), c0 = Clock.cpu()
            _ = try state.step(x, config: c, workspace: ws, report: false, timer: timer)
            if injectSlowdownPercent > 0 { Clock.burn((Clock.cpu() - c0) * injectSlowdownPercent / 100) }
            if injectDelayMs > 0 { Clock.burn(injectDelayMs / 1000) }
            for j in 0..<injectAllocations { blackHole([Int](repeating: j, count: 1000 + j)) }
            times.append(Clock.now() - t0); cpu.append(Clock.cpu() - c0)
            jsae_allocation_counter_read(&after)
            allocations.perStep = max(allocations.perStep, after.count - before.count)
            allocations.largest = max(allocations.largest, after.largest)
            log("  step \(i + 1): \(String(format: "%.1f", times.last! * 1000)) ms")
        }
        if let probe {
            paired?.ceiling.append(probe.sample())
            paired?.steps = zip(times, cpu).map { (wall: $0, cpu: $1) }
        }
        return (times, cpu, allocations, paired, parameterFingerprint(state.model))
    }

    /// FNV-1a over the bit patterns of every parameter of both SAEs, in
    /// storage order: equal strings mean bit-identical parameters, which is
    /// what a change meant to keep the step's arithmetic must show at the
    /// bench's own shape (the golden loss curve checks a small one).
    func parameterFingerprint(_ model: JSAEModel<Float>) -> String {
        var h: UInt64 = 0xcbf29ce484222325
        for sae in [model.saeIn] + (model.saeOut.map { [$0] } ?? []) {
            // Storage order is the names' order; read in place, since copies
            // of the tensors would raise the section's peak memory.
            sae.tensors.withFlatValues { for v in $0 { h = (h ^ UInt64(v.bitPattern)) &* 0x100000001b3 } }
        }
        return String(h, radix: 16)
    }

    /// The seeded initial state, or the given SAEs (the input SAE alone for
    /// a single SAE) with `mlp` and fresh Adam moments.
    func initialState(_ shape: Shape, _ mlp: MLP<Float>, _ c: TrainConfig, start: JSAEModel<Float>?) throws -> TrainState<Float> {
        guard let start else {
            return try TrainState<Float>.initial(d: shape.d, mIn: shape.m, mOut: shape.m, k: shape.k, mlp: mlp, single: c.single, seed: 1)
        }
        return TrainState(model: try JSAEModel(saeIn: start.saeIn, saeOut: c.single ? nil : start.saeOut, mlp: c.single ? nil : mlp))
    }

    /// `--compare-jacobian` (JacobianComparison.swift): one warm-up step per
    /// setting, then `pairs` blocks of A B (or B A) steps on one state, each
    /// setting with its own workspace; limits from the in-run ceiling and
    /// bandwidth as in the phase table.
    func compareJacobianSettings(_ shape: Shape, _ mlp: MLP<Float>, _ x: Matrix<Float>, trained: JSAEModel<Float>?,
                                 threads: Int, pairs: Int) throws -> String {
        log("ceiling and bandwidth …")
        let ceiling = ceilingSamples(rows: shape.batch, cols: shape.m, inner: shape.d, threads: threads, reps: 5)
        let gflops = 2 * Double(shape.batch) * Double(shape.m) * Double(shape.d) / ceiling.map(\.wall).min()! / 1e9
        let bandwidth = try Bandwidth.measure(threads: threads, reps: 5)
        var library = TrainConfig()
        library.totalSteps = 1_000_000; library.batch = shape.batch; library.lambda = 1
        library.lrWarmupFraction = 0; library.lambdaWarmupFraction = 0
        var variant = library
        if let jacobianChunk { variant.jacobianChunk = jacobianChunk }
        var state = try initialState(shape, mlp, library, start: trained)
        let wsLibrary = state.workspace(config: library, threads: threads)
        let wsVariant = variant.jacobianChunk == library.jacobianChunk ? wsLibrary : state.workspace(config: variant, threads: threads)
        let variantName = "\(jacobianOrder.rawValue) order, chunk \(variant.jacobianChunk)"
        var comparison = JacobianComparison(names: ("batch order, chunk \(library.jacobianChunk)", variantName))
        let codes = state.model.forward(x, point: .trueInput, chunk: library.jacobianChunk, threads: threads)
        comparison.countRows(k1: codes.codesIn.indices, k2: codes.codesOut!.indices, tokens: shape.batch, k: shape.k, m: shape.m,
                             chunk: library.jacobianChunk)
        func step(variantSide: Bool, timed: Bool) throws {
            let ws = variantSide ? wsVariant : wsLibrary
            ws.jacobianOrder = variantSide ? jacobianOrder : .batch
            let timer = PhaseTimer()
            let t0 = Clock.now(), c0 = Clock.cpu()
            _ = try state.step(x, config: variantSide ? variant : library, workspace: ws, report: false, timer: timer)
            let sample = JacobianComparison.Sample(forward: timer.seconds[.jacobianForward] ?? 0, backward: timer.seconds[.jacobianBackward] ?? 0,
                                                   step: Clock.now() - t0, stepCPU: Clock.cpu() - c0)
            if timed { comparison.add(sample, variant: variantSide) }
            log("  \(variantSide ? variantName : "library"): forward \(String(format: "%.1f", sample.forward * 1000)) ms, "
                + "backward \(String(format: "%.1f", sample.backward * 1000)) ms")
        }
        for side in [false, true] { try step(variantSide: side, timed: false) }
        for i in 0..<pairs {
            for side in i % 2 == 0 ? [false, true] : [true, false] { try step(variantSide: side, timed: true) }
        }
        let costs = shape.phaseCosts(pair: true)
        func limit(_ p: Phase) -> Double? { costs[p].map { 1000 * $0.limitSeconds(ceilingGFLOPs: gflops, bandwidthGBs: bandwidth.gbs) } }
        func perToken(_ p: Phase) -> Double? { costs[p]?.perTokenBytes.map { 1000 * $0 / (bandwidth.gbs * 1e9) } }
        return String(format: "in-run ceiling %.1f GFLOP/s, triad %.2f GB/s; ", gflops, bandwidth.gbs)
            + (trained == nil ? "seeded initial SAEs\n" : "SAEs of \(model!)\n")
            + comparison.table(forwardLimitMs: limit(.jacobianForward), backwardLimitMs: limit(.jacobianBackward),
                               perTokenForwardMs: perToken(.jacobianForward), perTokenBackwardMs: perToken(.jacobianBackward))
    }

    func synthetic(_ s: Shape) -> (Matrix<Float>, MLP<Float>) {
        var g = SeededGenerator(seed: 7)
        func mat(_ r: Int, _ c: Int, _ scale: Double) -> Matrix<Float> {
            Matrix(rows: r, cols: c, data: (0..<(r * c)).map { _ in Float(scale * g.normal()) })
        }
        let x = mat(s.batch, s.d, 1)
        let mlp = try! MLP<Float>(wIn: mat(s.d, s.dMlp, 1 / Double(s.d).squareRoot()), bIn: [Float](repeating: 0, count: s.dMlp),
                                  wOut: mat(s.dMlp, s.d, 1 / Double(s.dMlp).squareRoot()), bOut: [Float](repeating: 0, count: s.d),
                                  activation: .gelu)
        return (x, mlp)
    }

    /// Loss curve of the golden 20-step run (golden/train) in Float: the
    /// numerical fingerprint the CI gate compares.
    func goldenFingerprint(lrScale: Double) throws -> [Double] {
        try GoldenRun().run(Float.self, lrScale: lrScale).reports.map(\.components.loss)
    }
}

extension JSONEncoder {
    static var pretty: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        return e
    }
}

/// Keeps a value alive so the optimiser cannot drop the work that made it.
@inline(never)
func blackHole<T>(_ x: T) { withExtendedLifetime(x) {} }
