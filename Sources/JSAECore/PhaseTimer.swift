#if canImport(Glibc)
import Glibc
#endif

/// The phases of a training step, as jsae-bench reports them.
public enum Phase: String, CaseIterable, Sendable {
    case encoderGemm = "encoder gemm (dense)"
    case topK = "TopK selection"
    case mlp = "MLP f(x)"
    case sparseDecoder = "sparse decode + recon backward"
    case precompute = "wd1/w2e precompute"
    case jacobianForward = "Jacobian forward"
    case jacobianBackward = "Jacobian backward"
    case weightGradients = "dW_dec_x, dW_enc_y gemms"
    case optimizer = "normalise, clip, Adam"
    case metrics = "metrics"
}

/// Wall-clock seconds spent per phase, accumulated over steps. Passing nil
/// where a timer is accepted costs nothing.
public final class PhaseTimer: @unchecked Sendable {
    public private(set) var seconds: [Phase: Double] = [:]
    public init() {}

    public static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    public func add(_ p: Phase, _ s: Double) { seconds[p, default: 0] += s }
    public func reset() { seconds = [:] }
}

/// Runs `body`, charging its wall time to `phase` when a timer is given.
@inline(__always)
public func timed<R>(_ timer: PhaseTimer?, _ phase: Phase, _ body: () throws -> R) rethrows -> R {
    guard let timer else { return try body() }
    let t0 = PhaseTimer.now()
    defer { timer.add(phase, PhaseTimer.now() - t0) }
    return try body()
}
