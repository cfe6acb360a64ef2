import Testing
import JSAECore
import _JSAETestSupport

/// The training loss with K1 and K2 frozen, in plain loops (no BLAS, no
/// wd1/w2e): the function whose central differences the analytic gradient
/// must match. y = f(x) and φ' = act'(x W_in + b_in) do not depend on the
/// SAE parameters.
func frozenLoss(_ model: JSAEModel<Double>, x: Matrix<Double>, k1: [Int], k2: [Int], lambda: Double) -> Double {
    let B = x.rows, d = model.d, k = model.k
    let sIn = model.saeIn, sOut = model.saeOut!, mlp = model.mlp!
    func recon(_ v: [Double], _ sae: TopKSAE<Double>, _ K: ArraySlice<Int>) -> Double {
        var out = sae.bDec
        for j in K {
            var h = sae.bEnc[j]
            for i in 0..<d { h += v[i] * sae.wEnc[i, j] }
            let s = max(h, 0)
            for c in 0..<d { out[c] += s * sae.wDec[j, c] }
        }
        var e = 0.0
        for c in 0..<d { e += (out[c] - v[c]) * (out[c] - v[c]) }
        return e
    }
    var sqIn = 0.0, sqOut = 0.0, jac = 0.0
    for b in 0..<B {
        let xb = x.row(b)
        let K1 = k1[(b * k)..<((b + 1) * k)], K2 = k2[(b * k)..<((b + 1) * k)]
        sqIn += recon(xb, sIn, K1)
        let (y, phi) = naiveMLP(xb, mlp)
        sqOut += recon(y, sOut, K2)
        let J = denseChainJacobian(model: model, phi: phi, k1: Array(K1), k2: Array(K2))
        jac += J.map { abs($0) }.reduce(0, +)
    }
    return sqIn / Double(B * d) + sqOut / Double(B * d) + lambda * jac / Double(B * k * k)
}

/// Every tensor of a pair, as "group/name".
var modelTensors: [String] {
    ["sae_in", "sae_out"].flatMap { g in SAETensors<Double>.Name.allCases.map { "\(g)/\($0.rawValue)" } }
}

/// The group ("sae_in" or "sae_out") and tensor of "group/name".
func split(_ name: String) -> (input: Bool, tensor: SAETensors<Double>.Name) {
    let parts = name.split(separator: "/")
    return (parts[0] == "sae_in", SAETensors<Double>.Name(rawValue: String(parts[1]))!)
}

/// Flat values of one tensor of the model.
func tensor(_ m: JSAEModel<Double>, _ name: String) -> [Double] {
    let (input, t) = split(name)
    return input ? m.saeIn.tensors[t] : m.saeOut!.tensors[t]
}

/// The model with `delta` added to one tensor.
func perturbed(_ m: JSAEModel<Double>, _ name: String, _ delta: [Double]) -> JSAEModel<Double> {
    let (input, t) = split(name)
    var out = m
    var values = tensor(m, name)
    for i in delta.indices { values[i] += delta[i] }
    if input { out.saeIn.tensors[t] = values } else { out.saeOut!.tensors[t] = values }
    return out
}

func gradient(_ g: PairGradients<Double>, _ name: String) -> [Double] {
    let (input, t) = split(name)
    return input ? g.saeIn[t] : g.saeOut![t]
}

@Suite("Gradients")
struct GradientTests {
    static let lambda = 0.8

    // ε = 1e-5: the frozen loss is a degree-4 polynomial in the parameters
    // plus |·| (kinks avoided: random data puts no J entry or selected
    // pre-activation within ε·|direction| of 0), so central-difference
    // truncation is ≲ 1e-10 and rounding ≈ 1e-16/ε ≈ 1e-11 on an O(1) loss.
    static let eps = 1e-5, rtol = 1e-6, atol = 1e-9

    @Test("Directional derivatives of the total loss match central differences, every tensor",
          arguments: PairShape.sweep)
    func directional(_ s: PairShape) {
        let (model, x) = randomModel(s, seed: 71)
        let pass = model.lossAndGradients(x, lambda: Self.lambda)
        let k1 = pass.forward.codesIn.indices, k2 = pass.forward.codesOut!.indices
        // The frozen loss is the real loss at the base point.
        #expect(abs(frozenLoss(model, x: x, k1: k1, k2: k2, lambda: Self.lambda) - pass.components.loss) <= 1e-12)
        var g = SeededGenerator(seed: 72)
        for name in modelTensors {
            for _ in 0..<2 {
                let dir = g.normals(tensor(model, name).count)
                let plus = perturbed(model, name, dir.map { Self.eps * $0 })
                let minus = perturbed(model, name, dir.map { -Self.eps * $0 })
                let fd = (frozenLoss(plus, x: x, k1: k1, k2: k2, lambda: Self.lambda)
                          - frozenLoss(minus, x: x, k1: k1, k2: k2, lambda: Self.lambda)) / (2 * Self.eps)
                let an = zip(gradient(pass.gradients, name), dir).reduce(0) { $0 + $1.0 * $1.1 }
                #expect(abs(an - fd) <= Self.atol + Self.rtol * abs(fd), "\(s) \(name): analytic \(an) vs fd \(fd)")
            }
        }
    }

    @Test("Element-wise gradients match central differences on the smallest shapes",
          arguments: [PairShape.sweep[1], PairShape.sweep[3]])
    func elementwise(_ s: PairShape) {
        let (model, x) = randomModel(s, seed: 73)
        let pass = model.lossAndGradients(x, lambda: Self.lambda)
        let k1 = pass.forward.codesIn.indices, k2 = pass.forward.codesOut!.indices
        for name in modelTensors {
            let an = gradient(pass.gradients, name)
            var fd = [Double](repeating: 0, count: an.count)
            for i in an.indices {
                var e = [Double](repeating: 0, count: an.count)
                e[i] = Self.eps
                let plus = perturbed(model, name, e), minus = perturbed(model, name, e.map { -$0 })
                fd[i] = (frozenLoss(plus, x: x, k1: k1, k2: k2, lambda: Self.lambda)
                         - frozenLoss(minus, x: x, k1: k1, k2: k2, lambda: Self.lambda)) / (2 * Self.eps)
            }
            let c = closeness(an, fd, rtol: Self.rtol, atol: Self.atol)
            #expect(c.ratio <= 1, "\(s) \(name)[\(c.index)]: analytic \(c.a) vs fd \(c.b)")
        }
    }

    @Test("Running backward twice gives identical results")
    func deterministic() {
        let (model, x) = randomModel(PairShape.sweep[4], seed: 74)
        let a = model.lossAndGradients(x, lambda: Self.lambda, chunk: 3)
        let b = model.lossAndGradients(x, lambda: Self.lambda, chunk: 3)
        #expect(a.gradients == b.gradients)
        #expect(a.components == b.components)
    }

    @Test("Jacobian-term gradient reaches only W_dec_x rows in ∪K1 and W_enc_y columns in ∪K2",
          arguments: PairShape.sweep)
    func routing(_ s: PairShape) {
        let (model, x) = randomModel(s, seed: 75)
        let with = model.lossAndGradients(x, lambda: Self.lambda).gradients
        let without = model.lossAndGradients(x, lambda: 0)
        let k1 = Set(without.forward.codesIn.indices), k2 = Set(without.forward.codesOut!.indices)
        // The reconstruction parts are computed by the same code on the same
        // data in both calls, so the differences below are exact.
        for name in ["sae_in/W_enc", "sae_in/b_enc", "sae_in/b_dec", "sae_out/W_dec", "sae_out/b_enc", "sae_out/b_dec"] {
            #expect(gradient(with, name) == gradient(without.gradients, name), "\(name) got Jacobian gradient")
        }
        let dDec = zip(with.saeIn.wDec.data, without.gradients.saeIn.wDec.data).map { $0 - $1 }
        let dEnc = zip(with.saeOut!.wEnc.data, without.gradients.saeOut!.wEnc.data).map { $0 - $1 }
        var touchedRows = Set<Int>(), touchedCols = Set<Int>()
        for (i, v) in dDec.enumerated() where v != 0 { touchedRows.insert(i / s.d) }
        for (i, v) in dEnc.enumerated() where v != 0 { touchedCols.insert(i % s.mOut) }
        #expect(touchedRows.isSubset(of: k1) && !touchedRows.isEmpty)
        #expect(touchedCols.isSubset(of: k2) && !touchedCols.isEmpty)
    }

    @Test("Float gradients agree with Double", arguments: PairShape.sweep)
    func floatVsDouble(_ s: PairShape) throws {
        let (model, x) = randomModel(s, seed: 76)
        let d = model.lossAndGradients(x, lambda: Self.lambda)
        let f = model.converted(to: Float.self).lossAndGradients(x.converted(to: Float.self), lambda: Self.lambda)
        try #require(f.forward.codesIn.indices == d.forward.codesIn.indices)
        try #require(f.forward.codesOut!.indices == d.forward.codesOut!.indices)
        // Float ε ≈ 6e-8 over sums of ≤ ~10³ O(1) terms: ≲ 1e-4 relative on
        // the largest entries; atol 1e-5 covers entries that nearly cancel.
        for name in modelTensors {
            let gf = gradient(PairGradients(saeIn: f.gradients.saeIn.converted(), saeOut: f.gradients.saeOut!.converted()), name)
            let c = closeness(gf, gradient(d.gradients, name), rtol: 1e-3, atol: 1e-5)
            #expect(c.ratio <= 1, "\(s) \(name)[\(c.index)]: float \(c.a) vs double \(c.b)")
        }
    }
}
