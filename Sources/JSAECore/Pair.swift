/// Where the MLP (and so φ' and the output SAE's index set K2) is evaluated.
/// The reference code trains with `trueInput`; the paper's formal
/// f_s = e_y ∘ f ∘ d_x ∘ τ_k is `reconstruction`.
public enum EvaluationPoint: String, Sendable, CaseIterable {
    /// y = f(x), φ' = act'(x @ W_in + b_in), K2 = TopK(e_y(f(x))).
    case trueInput
    /// The same with x replaced by x̂: y = f(x̂), K2 = TopK(e_y(f(x̂))).
    case reconstruction
}

/// A JSAE pair and the frozen MLP it wraps. `saeOut` may be absent (a single
/// traditional SAE on x); then only the input side is evaluated.
public struct JSAEModel<T: JSAEScalar>: Sendable {
    public var saeIn: TopKSAE<T>
    public var saeOut: TopKSAE<T>?
    public var mlp: MLP<T>?

    public var k: Int { saeIn.k }
    public var d: Int { saeIn.d }

    /// Checks that the SAEs and the MLP agree on d and on k.
    public init(saeIn: TopKSAE<T>, saeOut: TopKSAE<T>?, mlp: MLP<T>?) throws {
        if let saeOut {
            guard saeOut.d == saeIn.d else { throw JSAEError("sae_out has d = \(saeOut.d) but sae_in has d = \(saeIn.d)") }
            guard saeOut.k == saeIn.k else { throw JSAEError("sae_out has k = \(saeOut.k) but sae_in has k = \(saeIn.k)") }
        }
        if let mlp {
            guard mlp.d == saeIn.d else { throw JSAEError("the MLP has d = \(mlp.d) but the SAEs have d = \(saeIn.d)") }
        }
        self.saeIn = saeIn; self.saeOut = saeOut; self.mlp = mlp
    }

    public func converted<U: JSAEScalar>(to: U.Type = U.self) -> JSAEModel<U> {
        try! JSAEModel<U>(saeIn: saeIn.converted(), saeOut: saeOut?.converted(), mlp: mlp?.converted())
    }

    /// The Jacobian factors for the current weights (nil without sae_out or MLP).
    public func jacobianFactors() -> JacobianFactors<T>? {
        guard let saeOut, let mlp else { return nil }
        return JacobianFactors(saeIn: saeIn, mlp: mlp, saeOut: saeOut)
    }
}

/// Everything one forward pass produces on a batch of B tokens.
public struct PairForward<T: JSAEScalar>: Sendable {
    public var point: EvaluationPoint
    /// [B, d]
    public var x: Matrix<T>
    public var codesIn: SparseCodes<T>
    /// [B, d] input SAE reconstruction.
    public var xHat: Matrix<T>
    /// [B, d] MLP output at the evaluation point (nil without MLP/sae_out).
    public var y: Matrix<T>?
    /// [B, d_mlp] act'(z) at the evaluation point.
    public var phiPrime: Matrix<T>?
    public var codesOut: SparseCodes<T>?
    /// [B, d]
    public var yHat: Matrix<T>?
    /// [B, k, k] flat; rows K2 order, columns K1 order.
    public var jacobian: [T]?

    /// Sums over this batch, so that batches can be combined exactly.
    public var sums: LossSums {
        var s = LossSums()
        s.tokens = x.rows
        s.d = x.cols
        s.k = codesIn.k
        s.sqErrIn = squaredDistance(xHat, x)
        if let y, let yHat { s.sqErrOut = squaredDistance(yHat, y) }
        if let jacobian { s.jacAbs = jacobian.reduce(0.0) { $0 + Double(abs($1)) } }
        return s
    }
}

/// Σ (a − b)² accumulated in Double.
public func squaredDistance<T: JSAEScalar>(_ a: Matrix<T>, _ b: Matrix<T>) -> Double {
    precondition(a.count == b.count)
    var s = 0.0
    for i in 0..<a.count { let e = Double(a.data[i] - b.data[i]); s += e * e }
    return s
}

/// Loss sums over any number of tokens; `components(lambda:)` turns them into
/// the reference code's normalised loss terms.
public struct LossSums: Sendable, Equatable {
    public var tokens = 0
    public var d = 0
    public var k = 0
    public var sqErrIn = 0.0
    public var sqErrOut = 0.0
    public var jacAbs = 0.0

    public init() {}

    public mutating func add(_ o: LossSums) {
        if tokens == 0 { d = o.d; k = o.k }
        tokens += o.tokens; sqErrIn += o.sqErrIn; sqErrOut += o.sqErrOut; jacAbs += o.jacAbs
    }

    /// mse_in = Σ(x̂−x)²/(B·d); mse_out = Σ(ŷ−y)²/(B·d); jacobian_l1 = Σ|J|/(B·k²);
    /// loss = mse_in + mse_out + λ·jacobian_l1.
    public func components(lambda: Double) -> LossComponents {
        let n = Double(max(tokens, 1))
        let mseIn = sqErrIn / (n * Double(d))
        let mseOut = sqErrOut / (n * Double(d))
        let jac = jacAbs / (n * Double(k * k))
        return LossComponents(mseIn: mseIn, mseOut: mseOut, jacobianL1: jac, lambda: lambda,
                              loss: mseIn + mseOut + lambda * jac)
    }
}

public struct LossComponents: Sendable, Equatable {
    public var mseIn: Double
    public var mseOut: Double
    public var jacobianL1: Double
    public var lambda: Double
    public var loss: Double
}

extension JSAEModel {
    /// One forward pass of the pair on x at the given evaluation point.
    /// - x: [B, d]; factors: from `jacobianFactors()` (pass it in to reuse it
    ///   across chunks); chunk: tokens per Jacobian chunk
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public func forward(_ x: Matrix<T>, point: EvaluationPoint,
                        factors: JacobianFactors<T>? = nil,
                        chunk: Int = defaultJacobianChunk) -> PairForward<T> {
        forwardImpl(x, point: point, factors: factors, chunk: chunk)
    }

    func forwardImpl(_ x: Matrix<T>, point: EvaluationPoint, factors: JacobianFactors<T>?, chunk: Int) -> PairForward<T> {
        let codesIn = saeIn.encode(x)
        let xHat = saeIn.decode(codesIn)
        var result = PairForward(point: point, x: x, codesIn: codesIn, xHat: xHat,
                                 y: nil, phiPrime: nil, codesOut: nil, yHat: nil, jacobian: nil)
        guard let saeOut, let mlp else { return result }
        let (y, phi) = mlp.forward(point == .trueInput ? x : xHat)
        let codesOut = saeOut.encode(y)
        result.y = y
        result.phiPrime = phi
        result.codesOut = codesOut
        result.yHat = saeOut.decode(codesOut)
        let f = factors ?? JacobianFactors(saeIn: saeIn, mlp: mlp, saeOut: saeOut)
        result.jacobian = jacobian(factors: f, k1: codesIn.indices, k2: codesOut.indices,
                                   phiPrime: phi, k: k, chunk: chunk)
        return result
    }
}
