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

    /// Position in `allCases`, without building that array.
    var index: Int {
        switch self {
        case .encoderGemm: return 0
        case .topK: return 1
        case .mlp: return 2
        case .sparseDecoder: return 3
        case .precompute: return 4
        case .jacobianForward: return 5
        case .jacobianBackward: return 6
        case .weightGradients: return 7
        case .optimizer: return 8
        case .metrics: return 9
        }
    }
}

/// Wall-clock seconds spent per phase, accumulated over steps. Passing nil
/// where a timer is accepted costs nothing; adding to one allocates nothing.
public final class PhaseTimer: @unchecked Sendable {
    private var totals = [Double](repeating: 0, count: Phase.allCases.count)
    public init() {}

    /// Seconds per phase that has been timed.
    public var seconds: [Phase: Double] {
        Dictionary(uniqueKeysWithValues: Phase.allCases.enumerated().filter { totals[$0.offset] > 0 }.map { ($0.element, totals[$0.offset]) })
    }

    public static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    public func add(_ p: Phase, _ s: Double) { totals[p.index] += s }
    public func reset() { for i in totals.indices { totals[i] = 0 } }
}

/// Runs `body`, charging its wall time to `phase` when a timer is given.
@inline(__always)
public func timed<R>(_ timer: PhaseTimer?, _ phase: Phase, _ body: () throws -> R) rethrows -> R {
    guard let timer else { return try body() }
    let t0 = PhaseTimer.now()
    defer { timer.add(phase, PhaseTimer.now() - t0) }
    return try body()
}
