/// Metrics (docs/jsae-spec.md, "Metrics"), used by training and by the
/// reproduction report alike: explained variance, L0, dead latents, the
/// shares of |J| above the paper's thresholds, and the per-connection
/// analyses of f_s (linearity, ablation).

/// Per-batch quality metrics of a training step.
public struct BatchMetrics: Sendable {
    public var explainedVarianceIn = 0.0
    public var explainedVarianceOut: Double?
    public var l0In = 0.0
    public var l0Out: Double?
    /// Share of |J| entries above 0.005, 0.01, 0.015, 0.02 (at the configured point).
    public var jacobianShares: SIMD4<Double>?
}

/// Mean over tokens of 1 − ‖a − â‖² / ‖a − mean_batch(a)‖².
/// - a, aHat: [B, d]
@_specialize(exported: true, where T == Float)
@_specialize(exported: true, where T == Double)
public func explainedVariance<T: JSAEScalar>(_ a: Matrix<T>, _ aHat: Matrix<T>) -> Double {
    precondition(a.rows == aHat.rows && a.cols == aHat.cols)
    var mean = [Double](repeating: 0, count: a.cols)
    return a.data.withUnsafeBufferPointer { pa in
        aHat.data.withUnsafeBufferPointer { ph in
            explainedVariance(pa.baseAddress!, ph.baseAddress!, tokens: a.rows, d: a.cols, means: &mean)
        }
    }
}

/// The same on raw rows, with the per-feature means in `mean` ([d], scratch).
func explainedVariance<T: JSAEScalar>(_ a: UnsafePointer<T>, _ aHat: UnsafePointer<T>, tokens B: Int, d: Int,
                                      means mean: UnsafeMutablePointer<Double>) -> Double {
    do {
        for c in 0..<d { mean[c] = 0 }
        for b in 0..<B { for c in 0..<d { mean[c] += Double(a[b * d + c]) } }
        for c in 0..<d { mean[c] /= Double(max(B, 1)) }
        var total = 0.0
        for b in 0..<B {
            var err = 0.0, v = 0.0
            for c in 0..<d {
                let e = Double(a[b * d + c] - aHat[b * d + c]); err += e * e
                let u = Double(a[b * d + c]) - mean[c]; v += u * u
            }
            total += v > 0 ? 1 - err / v : 0
        }
        return total / Double(max(B, 1))
    }
}

/// Mean number of non-zero latent values per token (L0 ≤ k).
/// - values: [tokens, k] post-ReLU values
package func meanL0<T: JSAEScalar>(values: UnsafeBufferPointer<T>, tokens: Int) -> Double {
    var n = 0
    for v in values where v > 0 { n += 1 }
    return Double(n) / Double(max(tokens, 1))
}

/// Latents that have not fired (value > 0) within a window of steps. The
/// report counts latents dead over a whole evaluation with one `record`.
public final class DeadLatentTracker: @unchecked Sendable {
    // @unchecked: owned by one run, never shared between threads.
    public private(set) var lastActiveIn: [Int]
    public private(set) var lastActiveOut: [Int]
    public init(mIn: Int, mOut: Int, startStep: Int) {
        lastActiveIn = [Int](repeating: startStep, count: mIn)
        lastActiveOut = [Int](repeating: startStep, count: mOut)
    }
    /// Marks the latents active in these codes ([tokens, k] indices and values) at `step`.
    public func record<T: JSAEScalar>(indices: UnsafeBufferPointer<Int>, values: UnsafeBufferPointer<T>, output: Bool, step: Int) {
        for (i, v) in zip(indices, values) where v > 0 {
            if output { lastActiveOut[i] = step + 1 } else { lastActiveIn[i] = step + 1 }
        }
    }
    public func record<T: JSAEScalar>(_ codes: SparseCodes<T>, output: Bool, step: Int) {
        codes.indices.withUnsafeBufferPointer { i in codes.values.withUnsafeBufferPointer { record(indices: i, values: $0, output: output, step: step) } }
    }
    /// Counts of latents with no activation in the last `window` steps
    /// before `step` (a fresh tracker reports none until `window` steps pass).
    public func dead(atStep step: Int, window: Int) -> (input: Int, output: Int) {
        (lastActiveIn.filter { step - $0 >= window }.count, lastActiveOut.filter { step - $0 >= window }.count)
    }
}

/// Counts of Jacobian entries against the paper's thresholds, three ways:
/// |J| > t (this package's headline), |J| ≥ t, and t ≤ |J| ≤ 1.1 (the
/// authors' headline: their histogram spans [0, 1.1] in 0.001 bins and
/// counts the bins from t up, so entries above 1.1 fall outside it).
/// Accumulated in integers, so any split of J into parts adds up exactly.
public struct ThresholdCounts: Codable, Sendable, Equatable {
    /// The upper edge of the authors' histogram.
    public static let authorsHistogramMax = 1.1
    public var entries = 0
    /// For each t of `JacobianStats.thresholds`.
    public var above: [Int], atLeast: [Int], atLeastWithinHistogram: [Int]
    public init() {
        let n = JacobianStats.thresholds.count
        above = [Int](repeating: 0, count: n); atLeast = above; atLeastWithinHistogram = above
    }
    /// One pass over J (a final evaluation's is 67M entries).
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public init<T: JSAEScalar>(_ J: [T]) {
        self.init()
        add(J)
    }
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public mutating func add<T: JSAEScalar>(_ J: [T]) {
        let t = JacobianStats.thresholds, cap = Self.authorsHistogramMax
        for v in J {
            let a = Double(abs(v))
            for i in t.indices where a >= t[i] {
                atLeast[i] += 1
                if a > t[i] { above[i] += 1 }
                if a <= cap { atLeastWithinHistogram[i] += 1 }
            }
        }
        entries += J.count
    }
    func shares(_ counts: [Int]) -> [Double] { counts.map { Double($0) / Double(max(entries, 1)) } }
    /// Shares of |J| > t: the report's headline.
    public var sharesAbove: [Double] { shares(above) }
    /// Shares of |J| ≥ t.
    public var sharesAtLeast: [Double] { shares(atLeast) }
    /// Shares of t ≤ |J| ≤ 1.1, as the authors' histogram counts them.
    public var sharesAuthors: [Double] { shares(atLeastWithinHistogram) }
}

/// Share of the entries of J (any number of tokens) with |J| > t, for each t
/// of `JacobianStats.thresholds`.
public func jacobianShares<T: JSAEScalar>(_ J: [T]) -> [Double] { ThresholdCounts(J).sharesAbove }

extension JSAEModel {
    /// EV and L0 of both SAEs on the batch in `ws`; records active latents.
    func batchMetrics(_ ws: Workspace<T>, deadLatents: DeadLatentTracker?, step: Int) -> BatchMetrics {
        let B = ws.tokens, k = self.k
        var m = BatchMetrics()
        m.explainedVarianceIn = explainedVariance(ws.x.p, ws.xHat.p, tokens: B, d: d, means: ws.featureMeans.p)
        let inIdx = UnsafeBufferPointer(start: ws.codesIn.indices.p, count: B * k)
        let inVal = UnsafeBufferPointer(start: ws.codesIn.values.p, count: B * k)
        m.l0In = meanL0(values: inVal, tokens: B)
        deadLatents?.record(indices: inIdx, values: inVal, output: false, step: step)
        guard saeOut != nil && mlp != nil else { return m }
        m.explainedVarianceOut = explainedVariance(ws.outputTarget, ws.yHat.p, tokens: B, d: d, means: ws.featureMeans.p)
        let outVal = UnsafeBufferPointer(start: ws.codesOut.values.p, count: B * k)
        m.l0Out = meanL0(values: outVal, tokens: B)
        deadLatents?.record(indices: UnsafeBufferPointer(start: ws.codesOut.indices.p, count: B * k), values: outVal, output: true, step: step)
        return m
    }
}

// MARK: f_s per connection: linearity and ablation


/// How an output latent responds as one input latent varies.
public enum ResponseShape: String, Sendable, CaseIterable {
    /// Least-squares residuals all below the tolerance.
    case linear
    /// A stretch of exact zeros touching one end of the range, linear elsewhere.
    case jumpReLU = "JumpReLU"
    case other
}

/// Classifies a response curve `values` over `grid`.
/// - tolerance: the spec's 1e-2 on least-squares residuals
public func classifyResponse(grid: [Double], values: [Double], tolerance: Double = 1e-2) -> ResponseShape {
    precondition(grid.count == values.count && grid.count >= 2)
    if isLinear(grid[...], values[...], tolerance) { return .linear }
    let n = values.count
    let leading = values.prefix { $0 == 0 }.count, trailing = values.reversed().prefix { $0 == 0 }.count
    // A zero stretch at one end, and the remaining non-zero part a line.
    if leading > 0 && leading < n - 1 && isLinear(grid[leading...], values[leading...], tolerance) { return .jumpReLU }
    if trailing > 0 && trailing < n - 1 && isLinear(grid[..<(n - trailing)], values[..<(n - trailing)], tolerance) { return .jumpReLU }
    return .other
}

/// `runners/linear.py`'s classification, as written there: linear when every
/// least-squares residual is below the tolerance; else JumpReLU when the
/// exact zeros form one contiguous run that includes the first or the last
/// point and the (at least 2) points outside that run's u-range are linear;
/// else other.
public func classifyResponseAsAuthors(grid: [Double], values: [Double], tolerance: Double = 1e-2) -> ResponseShape {
    precondition(grid.count == values.count && grid.count >= 2)
    if isLinear(grid[...], values[...], tolerance) { return .linear }
    guard let first = values.firstIndex(of: 0), let last = values.lastIndex(of: 0) else { return .other }
    guard values[first...last].allSatisfy({ $0 == 0 }), values.first == 0 || values.last == 0 else { return .other }
    let lo = grid[first], hi = grid[last]
    let outside = grid.indices.filter { grid[$0] > hi || grid[$0] < lo }
    guard outside.count >= 2 else { return .other }
    return isLinear(ArraySlice(outside.map { grid[$0] }), ArraySlice(outside.map { values[$0] }), tolerance) ? .jumpReLU : .other
}

func isLinear(_ x: ArraySlice<Double>, _ y: ArraySlice<Double>, _ tol: Double) -> Bool {
    let n = Double(x.count)
    let mx = x.reduce(0, +) / n, my = y.reduce(0, +) / n
    var sxx = 0.0, sxy = 0.0
    for (a, b) in zip(x, y) { sxx += (a - mx) * (a - mx); sxy += (a - mx) * (b - my) }
    let slope = sxx > 0 ? sxy / sxx : 0
    return zip(x, y).allSatisfy { abs($1 - (my + slope * ($0 - mx))) < tol }
}

extension JSAEModel {
    /// The MLP input for one token at the evaluation point, and its codes:
    /// x for `trueInput`, x̂ = d_x(τ_k(e_x(x))) for `reconstruction`.
    func basePoint(_ x: [T], point: EvaluationPoint) -> (base: [T], codesIn: SparseCodes<T>) {
        let xm = Matrix(rows: 1, cols: d, data: x)
        let codes = saeIn.encode(xm)
        return (point == .trueInput ? x : saeIn.decode(codes).data, codes)
    }

    /// Output latent `latents[r]`'s value (post-TopK, post-ReLU; 0 when not
    /// selected) at each row r of the MLP inputs `inputs` [n, d]. The
    /// per-connection analyses, one token or a batch of many, read f_s here.
    /// Prespecialised (see Parallel.swift): the report's analyses send ~10⁶
    /// rows per run through it.
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public func outputLatentValues(_ inputs: Matrix<T>, latents: [Int], threads: Int = Parallel.onlineCores) -> [T] {
        latentValues(inputs, latents: latents, threads: threads)
    }

    /// `outputLatentValues`: the MLP without φ', then the output SAE's
    /// encoder and full TopK.
    func latentValues(_ inputs: Matrix<T>, latents: [Int], threads: Int) -> [T] {
        precondition(saeOut != nil && mlp != nil && latents.count == inputs.rows && inputs.cols == d)
        let mlp = mlp!, sae = saeOut!, B = inputs.rows
        let y = Buffer<T>(B * d), act = Buffer<T>(mlpScratchCount(tokens: B, dMlp: mlp.dMlp))
        mlpForward(y: y.p, act: act.p, phi: nil, x: inputs.data, mlp.pointers, activation: mlp.activation,
                   tokens: B, d: d, dMlp: mlp.dMlp, threads: threads)
        let codes = CodesBuffer<T>(tokens: B, k: sae.k), scratch = Buffer<T>(encodeScratchCount(tokens: B, m: sae.m))
        sae.encode(into: codes, x: y.p, tokens: B, scratch: scratch.p, threads: threads)
        let k = sae.k
        return latents.enumerated().map { r, i in
            for s in (r * k)..<((r + 1) * k) where codes.indices.p[s] == i { return codes.values.p[s] }
            return 0
        }
    }

    /// Writes `base + o·W_dec_x[j]` for each o of `offsets` into `inputs`
    /// from row `at`: the MLP input with input latent j moved by o units,
    /// everything else held (o = u − s_j sets it to u; o = −1 removes one unit).
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public func moveAlongInputLatent(_ inputs: inout Matrix<T>, at: Int, base: [T], inputLatent j: Int, offsets: [Double]) {
        moveAlong(&inputs, at: at, base: base, inputLatent: j, offsets: offsets)
    }

    func moveAlong(_ inputs: inout Matrix<T>, at: Int, base: [T], inputLatent j: Int, offsets: [Double]) {
        precondition(base.count == d && at >= 0 && at + offsets.count <= inputs.rows && inputs.cols == d)
        let row = saeIn.tensors.pointer(.wDec) + j * d, d = d
        inputs.data.withUnsafeMutableBufferPointer { out in
            base.withUnsafeBufferPointer { b in
                for (r, o) in offsets.enumerated() {
                    let dst = out.baseAddress! + (at + r) * d, t = T(o)
                    for c in 0..<d { dst[c] = b[c] + t * row[c] }
                }
            }
        }
    }

    /// f_s along one input latent: s_j takes every value of `grid` while the
    /// MLP input moves along W_dec_x[j] from the evaluation point (the other
    /// latents and, for trueInput, the SAE error held fixed); output latent
    /// `i` is read through the output SAE's full TopK at every point.
    /// The spec's grid is linspace(0, max(5, s_j + 1), 100).
    /// - x: one token [d]; j: an active input latent; i: an output latent
    public func response(token x: [T], inputLatent j: Int, outputLatent i: Int, grid: [Double]? = nil,
                         point: EvaluationPoint = .reconstruction) -> (grid: [Double], values: [Double]) {
        precondition(saeOut != nil && mlp != nil, "response needs the output SAE and the MLP")
        let (base, codes) = basePoint(x, point: point)
        let sj = Double(zip(codes.indices, codes.values).first { $0.0 == j }?.1 ?? 0)
        let g = grid ?? (0..<100).map { Double($0) * max(5, sj + 1) / 99 }
        var inputs = Matrix<T>(rows: g.count, cols: d)
        moveAlong(&inputs, at: 0, base: base, inputLatent: j, offsets: g.map { $0 - sj })
        return (g, latentValues(inputs, latents: Array(repeating: i, count: g.count), threads: Parallel.onlineCores).map { Double($0) })
    }

    /// The ablation check: remove one unit of input latent j (MLP input minus
    /// W_dec_x[j]) and compare output latent i's change Δ through the full
    /// TopK with the Jacobian's prediction −J_ij: agreement when |J_ij + Δ| < 0.1.
    /// - returns Δ and whether it agrees with `jacobianEntry`
    public func ablation(token x: [T], inputLatent j: Int, outputLatent i: Int, jacobianEntry: Double,
                         point: EvaluationPoint = .reconstruction, threshold: Double = 0.1) -> (delta: Double, agrees: Bool) {
        precondition(saeOut != nil && mlp != nil, "ablation needs the output SAE and the MLP")
        let (base, _) = basePoint(x, point: point)
        var inputs = Matrix<T>(rows: 2, cols: d)
        moveAlong(&inputs, at: 0, base: base, inputLatent: j, offsets: [0, -1])
        let v = latentValues(inputs, latents: [i, i], threads: Parallel.onlineCores).map { Double($0) }
        let delta = v[1] - v[0]
        return (delta, abs(jacobianEntry + delta) < threshold)
    }
}
