/// The paper's per-connection analyses of f_s (jsae-spec.md, "Metrics").

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

    /// Output latent `i`'s value (post-TopK, post-ReLU; 0 when not selected)
    /// for each row of the MLP inputs `inputs` [n, d].
    func outputLatent(_ inputs: Matrix<T>, _ i: Int) -> [T] {
        let codes = saeOut!.encode(mlp!.forward(inputs).y)
        return (0..<inputs.rows).map { r in
            let slots = (r * codes.k)..<((r + 1) * codes.k)
            return slots.first { codes.indices[$0] == i }.map { codes.values[$0] } ?? 0
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
        for (r, s) in g.enumerated() {
            for c in 0..<d { inputs[r, c] = base[c] + T(s - sj) * saeIn.wDec[j, c] }
        }
        return (g, outputLatent(inputs, i).map { Double($0) })
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
        for c in 0..<d { inputs[0, c] = base[c]; inputs[1, c] = base[c] - saeIn.wDec[j, c] }
        let v = outputLatent(inputs, i).map { Double($0) }
        let delta = v[1] - v[0]
        return (delta, abs(jacobianEntry + delta) < threshold)
    }
}
