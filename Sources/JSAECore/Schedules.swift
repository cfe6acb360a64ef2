#if canImport(Glibc)
import Glibc
#endif

/// The paper's schedules (SAELens 4.0.9 semantics), as pure functions of the
/// step index t = 0, 1, …, totalSteps − 1 (the value used by optimizer step t).
public struct Schedule: Sendable, Equatable {
    public var totalSteps: Int
    public var lrWarmupSteps: Int
    public var lrDecaySteps: Int
    public var lambdaWarmupSteps: Int

    /// Step counts are floor(fraction · totalSteps): 1% of 73,243 is 732.
    public init(totalSteps: Int, lrWarmupFraction: Double, lrDecayFraction: Double, lambdaWarmupFraction: Double) {
        func steps(_ f: Double) -> Int { Int((f * Double(totalSteps) + 1e-9).rounded(.down)) }
        self.totalSteps = totalSteps
        lrWarmupSteps = steps(lrWarmupFraction)
        lrDecaySteps = steps(lrDecayFraction)
        lambdaWarmupSteps = steps(lambdaWarmupFraction)
    }

    /// LR multiplier. Warm-up is PyTorch LinearLR(start 1/W, end 1,
    /// total_iters W − 1); then constant; from step T − D, LinearLR(1 → 0,
    /// total_iters D), so the last step uses 1/D and 0 is never reached.
    public func lrFactor(_ t: Int) -> Double {
        let W = lrWarmupSteps, D = lrDecaySteps
        if D > 0 && t >= totalSteps - D {
            return 1 - Double(t - (totalSteps - D)) / Double(D)
        }
        if W > 1 && t < W {
            let start = 1 / Double(W)
            return start + (1 - start) * Double(t) / Double(W - 1)
        }
        if W == 1 && t == 0 { return 1 }  // LinearLR(start 1/1): factor 1
        return 1
    }

    /// λ multiplier: min(t, W_λ) / W_λ (step 0 uses 0); 1 without warm-up.
    public func lambdaFactor(_ t: Int) -> Double {
        lambdaWarmupSteps > 0 ? Double(min(t, lambdaWarmupSteps)) / Double(lambdaWarmupSteps) : 1
    }
}

/// Adam moments for one SAE.
public struct AdamMoments<T: JSAEScalar>: Sendable, Equatable {
    public var m: SAETensors<T>
    public var v: SAETensors<T>
    public init(d: Int, dLatent: Int) { m = SAETensors(d: d, m: dLatent); v = m }
    public init(m: SAETensors<T>, v: SAETensors<T>) { self.m = m; self.v = v }
}

public struct AdamConfig: Sendable, Equatable {
    public var beta1 = 0.9, beta2 = 0.999, eps = 1e-8
    public init() {}
}

/// One Adam step on every tensor of an SAE, in PyTorch's single-tensor form:
/// m ← m + (1−β1)(g − m); v ← β2·v + (1−β2)·g²;
/// p ← p − (lr / (1−β1ᵗ)) · m / (√v / √(1−β2ᵗ) + ε), with t = step + 1.
public func adamStep<T: JSAEScalar>(_ sae: inout TopKSAE<T>, grads: SAETensors<T>, moments: inout AdamMoments<T>,
                                    lr: Double, step: Int, config: AdamConfig = AdamConfig()) {
    let t = Double(step + 1)
    let bc1 = 1 - Glibc.pow(config.beta1, t), bc2 = 1 - Glibc.pow(config.beta2, t)
    let stepSize = T(lr / bc1), bc2Sqrt = T(bc2.squareRoot())
    let b1 = T(config.beta1), b2 = T(config.beta2), eps = T(config.eps)
    for (i, p) in TopKSAE<T>.parameterPaths.enumerated() {
        let gp = SAETensors<T>.paths[i].path
        grads[keyPath: gp].withUnsafeBufferPointer { g in
            moments.m[keyPath: gp].withUnsafeMutableBufferPointer { m in
                moments.v[keyPath: gp].withUnsafeMutableBufferPointer { v in
                    sae[keyPath: p.path].withUnsafeMutableBufferPointer { w in
                        Parallel.forRanges(w.count) { _, range in
                            for j in range {
                                let gj = g[j]
                                m[j] += (1 - b1) * (gj - m[j])
                                v[j] = b2 * v[j] + (1 - b2) * gj * gj
                                w[j] -= stepSize * m[j] / (T.sqrt(v[j]) / bc2Sqrt + eps)
                            }
                        }
                    }
                }
            }
        }
    }
}


extension TopKSAE {
    /// Rescales every decoder row to unit L2 norm (done at the start of every
    /// training step). A zero row is left as it is.
    public mutating func normaliseDecoderRows() {
        let d = self.d
        wDec.data.withUnsafeMutableBufferPointer { w in
            Parallel.forRanges(w.count / d) { _, rows in
                for i in rows {
                    var s: T = 0
                    for c in 0..<d { s += w[i * d + c] * w[i * d + c] }
                    let n = T.sqrt(s)
                    if n > 0 { for c in 0..<d { w[i * d + c] /= n } }
                }
            }
        }
    }

    /// The paper's initialisation: W_dec ~ U(−√(6/d), √(6/d)) (kaiming-uniform
    /// on [m, d]), W_enc = W_decᵀ taken before any normalisation, biases 0.
    public static func initialised(d: Int, m: Int, k: Int, using g: inout SeededGenerator) throws -> TopKSAE<T> {
        let bound = (6.0 / Double(d)).squareRoot()
        let dec = Matrix<T>(rows: m, cols: d, data: (0..<(m * d)).map { _ in T(Double.random(in: -bound..<bound, using: &g)) })
        return try TopKSAE(wEnc: dec.transposed, bEnc: [T](repeating: 0, count: m),
                           wDec: dec, bDec: [T](repeating: 0, count: d), k: k)
    }
}
