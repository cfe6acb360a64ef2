import Foundation
import JSAECore

/// The rules a run's sizes and settings must meet, in one place for
/// `jsae train`, `jsae reproduce`, `evaluate` and `forward`: each is checked
/// before any work, and a violation is one line naming the flag.
public enum RunRules {
    /// m = expansion × d, refused when it overflows.
    public static func latents(expansion: Int, d: Int, flag: String = "--expansion") throws -> Int {
        guard expansion >= 1 else { throw JSAEError("\(flag) must be at least 1, got \(expansion)") }
        let (m, o) = expansion.multipliedReportingOverflow(by: d)
        guard !o else { throw JSAEError("\(flag) \(expansion) × d \(d) overflows a 64-bit integer") }
        return m
    }

    /// k in [1, m]: top-k of m latents. `file` is the data that gave d.
    public static func requireK(_ k: Int, m: Int, d: Int, file: String? = nil) throws {
        guard k >= 1 && k <= m else {
            throw JSAEError(file: file, "k = \(k) must be between 1 and m = expansion \(m / max(d, 1)) × d \(d) = \(m)")
        }
    }

    /// λ a finite number >= 0 (0: a traditional pair).
    public static func requireLambda(_ lambda: Double, flag: String = "--lambda") throws {
        guard TrainConfig.isValidLambda(lambda) else { throw JSAEError("\(flag) must be a finite number >= 0, got \(lambda)") }
    }

    /// Whole steps covering `tokens`, without overflow for any Int.
    public static func steps(tokens: Int, batch: Int) -> Int {
        let b = max(batch, 1)
        return tokens / b + (tokens % b > 0 ? 1 : 0)
    }

    /// The bytes `requireMemory` counts (see there), in Double, which cannot
    /// overflow here. Also the base of a cluster job's memory request.
    public static func trainingBytes(d: Int, m: Int, saes: Int, batch: Int, bufferBatches: Int, scalarBytes: Int) -> Double {
        let D = Double(d), M = Double(m), B = Double(batch), S = Double(saes)
        let elements = S * 4 * 2 * M * D + S * B * M + 2 * B * Double(bufferBatches) * D
        return elements * Double(scalarBytes)
    }

    /// Refuses a configuration whose buffers would not fit in this machine's
    /// memory (and, on the way, any size product that would overflow).
    /// Counted in Double, which cannot overflow here: parameters, Adam's two
    /// moments and the gradient (4 copies of 2·m·d per SAE), the pre-
    /// activations of a batch (B·m per SAE) and the shuffling buffer (x and
    /// y, 2·B·buffers·d), plus `otherElements` a caller holds besides (the
    /// benchmark's MLP and its activations). A lower bound of what a step
    /// uses, which is all a refusal needs.
    public static func requireMemory(d: Int, m: Int, saes: Int, batch: Int, bufferBatches: Int, scalarBytes: Int,
                                     otherElements: Double = 0, flags: String) throws {
        let bytes = trainingBytes(d: d, m: m, saes: saes, batch: batch, bufferBatches: bufferBatches, scalarBytes: scalarBytes)
            + otherElements * Double(scalarBytes)
        let limit = Double(ProcessInfo.processInfo.physicalMemory)
        guard bytes <= limit else {
            func gib(_ v: Double) -> String { v >= 1e6 * 1073741824 ? String(format: "%.2g", v / 1073741824) : String(format: "%.1f", v / 1073741824) }
            throw JSAEError("d \(d), m \(m), batch \(batch)" + (bufferBatches > 0 ? " and \(bufferBatches) buffered batches" : "") + " would need at least "
                            + "\(gib(bytes)) GiB of memory, more than this machine's \(gib(limit)) GiB: lower \(flags)")
        }
    }
}
