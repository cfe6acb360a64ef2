#if canImport(Glibc)
import Glibc
#endif

// The paper's optimizer recipe (docs/jsae-spec.md, "Training"): schedules,
// Adam, global-norm clipping, decoder renormalisation and initialisation.

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

/// Adam moments for one SAE: the same layout as its parameters.
/// Named as PyTorch's Adam names them (exp_avg, exp_avg_sq); files store
/// them as `.../m` and `.../v` (docs/file-format.md).
public struct AdamMoments<T: JSAEScalar>: Sendable, Equatable {
    public var expAvg: SAETensors<T>
    public var expAvgSq: SAETensors<T>
    public init(d: Int, dLatent: Int) { expAvg = SAETensors(d: d, m: dLatent); expAvgSq = expAvg }
    public init(expAvg: SAETensors<T>, expAvgSq: SAETensors<T>) { self.expAvg = expAvg; self.expAvgSq = expAvgSq }
}

public struct AdamConfig: Sendable, Equatable {
    public var beta1 = 0.9, beta2 = 0.999, eps = 1e-8
    public init() {}
}

/// One Adam step over every entry of an SAE, in PyTorch's single-tensor form:
/// a ← a + (1−β1)(g − a); s ← β2·s + (1−β2)·g²   (a = exp_avg, s = exp_avg_sq);
/// p ← p − (lr / (1−β1ᵗ)) · a / (√s / √(1−β2ᵗ) + ε), with t = step + 1.
/// One flat loop: parameters, gradient and moments share one layout.
func adamStep<T: JSAEScalar>(_ params: inout SAETensors<T>, grads: SAETensors<T>, moments: inout AdamMoments<T>,
                             lr: Double, step: Int, config: AdamConfig, threads: Int) {
    precondition(params.count == grads.count && moments.expAvg.count == params.count)
    let t = Double(step + 1)
    let bc1 = 1 - Glibc.pow(config.beta1, t), bc2 = 1 - Glibc.pow(config.beta2, t)
    let c = AdamCoefficients(stepSize: T(lr / bc1), bc2Sqrt: T(bc2.squareRoot()),
                             beta1: T(config.beta1), beta2: T(config.beta2), eps: T(config.eps))
    let w = SharedPointer(params.mutableBase()), g = grads.base
    let avg = SharedPointer(moments.expAvg.mutableBase()), avgSq = SharedPointer(moments.expAvgSq.mutableBase())
    Parallel.forRanges(params.count, threads: threads) { _, r in
        let o = r.lowerBound
        T.adamUpdate(r.count, params: w.p + o, grads: g + o, expAvg: avg.p + o, expAvgSq: avgSq.p + o, c)
    }
}

/// `adamStep`'s per-step constants in the parameters' type.
public struct AdamCoefficients<T: JSAEScalar>: Sendable {
    /// lr / (1−β1ᵗ) and √(1−β2ᵗ).
    public var stepSize: T, bc2Sqrt: T
    public var beta1: T, beta2: T, eps: T
    public init(stepSize: T, bc2Sqrt: T, beta1: T, beta2: T, eps: T) {
        self.stepSize = stepSize; self.bc2Sqrt = bc2Sqrt; self.beta1 = beta1; self.beta2 = beta2; self.eps = eps
    }
}

/// `adamStep`'s update of `n` entries, a vector V of them at a time, then the
/// rest one by one. Every lane does the scalar formula's operations in its
/// order (IEEE +, −, ×, ÷ and √ are correctly rounded, and Swift fuses no
/// multiply-add), so the bits do not depend on where a thread's range starts.
/// Instantiated by each `JSAEScalar` with a concrete V: written through a
/// generic scalar type the loop is not vectorised (one libm `sqrt` call per
/// entry) and runs at about a fifth of this one's speed.
@inline(__always)
func adamUpdateVectorised<V: SIMD>(_: V.Type, _ n: Int, params w: UnsafeMutablePointer<V.Scalar>, grads g: UnsafePointer<V.Scalar>,
                                   expAvg a: UnsafeMutablePointer<V.Scalar>, expAvgSq s: UnsafeMutablePointer<V.Scalar>,
                                   _ c: AdamCoefficients<V.Scalar>) where V.Scalar: JSAEScalar {
    let oneMinusB1 = 1 - c.beta1, oneMinusB2 = 1 - c.beta2
    let vB1 = V(repeating: oneMinusB1), vB2 = V(repeating: c.beta2), vOneMinusB2 = V(repeating: oneMinusB2)
    let vStep = V(repeating: c.stepSize), vBc2 = V(repeating: c.bc2Sqrt), vEps = V(repeating: c.eps)
    let rw = UnsafeMutableRawPointer(w), rg = UnsafeRawPointer(g), ra = UnsafeMutableRawPointer(a), rs = UnsafeMutableRawPointer(s)
    let width = V.scalarCount, stride = MemoryLayout<V.Scalar>.stride
    var j = 0
    while j + width <= n {
        let o = j * stride
        let gj = rg.loadUnaligned(fromByteOffset: o, as: V.self)
        var aj = ra.loadUnaligned(fromByteOffset: o, as: V.self)
        var sj = rs.loadUnaligned(fromByteOffset: o, as: V.self)
        var wj = rw.loadUnaligned(fromByteOffset: o, as: V.self)
        aj += vB1 * (gj - aj)
        sj = vB2 * sj + vOneMinusB2 * gj * gj
        wj -= vStep * aj / (sj.squareRoot() / vBc2 + vEps)
        ra.storeBytes(of: aj, toByteOffset: o, as: V.self)
        rs.storeBytes(of: sj, toByteOffset: o, as: V.self)
        rw.storeBytes(of: wj, toByteOffset: o, as: V.self)
        j += width
    }
    while j < n {
        let gj = g[j]
        a[j] += oneMinusB1 * (gj - a[j])
        s[j] = c.beta2 * s[j] + oneMinusB2 * gj * gj
        w[j] -= c.stepSize * a[j] / (s[j].squareRoot() / c.bc2Sqrt + c.eps)
        j += 1
    }
}

/// torch.nn.utils.clip_grad_norm_'s factor: min(1, max_norm / (norm + 1e-6)).
func clipFactor(norm: Double, maxNorm: Double) -> Double { min(1, maxNorm / (norm + 1e-6)) }

/// Σ of squares of every entry of an SAE's tensors, in Double, tensor by
/// tensor in file order, each summed in fixed blocks whose partial sums are
/// added in block order: the value does not depend on the thread count.
/// - partials: scratch for one Double per 64Ki-entry block of the largest tensor
func squaredNorm<T: JSAEScalar>(_ g: SAETensors<T>, partials: UnsafeMutablePointer<Double>, threads: Int) -> Double {
    func sum(_ name: SAETensors<T>.Name) -> Double {
        blockedSquaredSum(g.pointer(name), count: g.range(name).count, partials: partials, threads: threads)
    }
    // File order, from 0, as PyTorch's clip_grad_norm_ visits them.
    return (((0 + sum(.wEnc)) + sum(.bEnc)) + sum(.wDec)) + sum(.bDec)
}

/// Blocks of `blockedSquaredSum` in `count` entries.
func squaredSumBlocks(_ count: Int) -> Int { (count + (1 << 16) - 1) >> 16 }

/// Multiplies every entry by s.
func scale<T: JSAEScalar>(_ g: inout SAETensors<T>, by s: T, threads: Int) {
    let p = SharedPointer(g.mutableBase())
    Parallel.forRanges(g.count, threads: threads) { _, r in for i in r { p.p[i] *= s } }
}

/// Σ v² in Double over 64Ki-element blocks, the blocks summed in order.
func blockedSquaredSum<T: JSAEScalar>(_ p: UnsafePointer<T>, count: Int, partials partial: UnsafeMutablePointer<Double>,
                                      threads: Int) -> Double {
    let block = 1 << 16
    let nBlocks = squaredSumBlocks(count)
    let out = SharedPointer(partial)
    do {
        Parallel.forRanges(nBlocks, threads: threads) { _, blocks in
            for bl in blocks {
                // Four independent accumulators break the add-latency chain;
                // the order is fixed, so the value is reproducible.
                var s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
                let lo = bl * block, hi = min((bl + 1) * block, count)
                var i = lo
                while i + 4 <= hi {
                    let a = Double(p[i]), b = Double(p[i + 1]), c = Double(p[i + 2]), e = Double(p[i + 3])
                    s0 += a * a; s1 += b * b; s2 += c * c; s3 += e * e
                    i += 4
                }
                while i < hi { let a = Double(p[i]); s0 += a * a; i += 1 }
                out.p[bl] = (s0 + s1) + (s2 + s3)
            }
        }
    }
    var total = 0.0
    for i in 0..<nBlocks { total += partial[i] }
    return total
}

extension TopKSAE {
    /// Rescales every decoder row to unit L2 norm (done at the start of every
    /// training step). A zero row is left as it is.
    public mutating func normaliseDecoderRows(threads: Int = Parallel.onlineCores) {
        let d = self.d
        let w = SharedPointer(tensors.mutablePointer(.wDec))
        Parallel.forRanges(m, threads: threads) { _, rows in
            for i in rows {
                var s: T = 0
                for c in 0..<d { s += w.p[i * d + c] * w.p[i * d + c] }
                let n = T.sqrt(s)
                if n > 0 { for c in 0..<d { w.p[i * d + c] /= n } }
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
