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

    /// The shapes of a workspace for batches of up to `tokens` tokens.
    public func workspaceShape(tokens: Int, jacobianChunk: Int = defaultJacobianChunk) -> WorkspaceShape {
        WorkspaceShape(tokens: tokens, d: d, mIn: saeIn.m, mOut: saeOut?.m ?? 0, dMlp: mlp?.dMlp ?? 0, k: k,
                           jacobianChunk: jacobianChunk)
    }
}

/// Everything one forward pass produces on a batch of B tokens (a copy of
/// the workspace's activation cache, for evaluation and tests).
public struct PairForward<T: JSAEScalar>: Sendable {
    public var point: EvaluationPoint
    /// [B, d]
    public var x: Matrix<T>
    public var codesIn: SparseCodes<T>
    /// [B, d] input SAE reconstruction.
    public var xHat: Matrix<T>
    /// [B, d] the output SAE's input: the MLP output at the evaluation point,
    /// or the target given to the training loss (nil without MLP/sae_out).
    public var y: Matrix<T>?
    /// [B, d_mlp] act'(z) at the evaluation point.
    public var phiPrime: Matrix<T>?
    public var codesOut: SparseCodes<T>?
    /// [B, d]
    public var yHat: Matrix<T>?
    /// [B, k, k] flat; rows K2 order, columns K1 order.
    public var jacobian: [T]?

    /// Sums over this batch, so that batches can be combined exactly.
    /// (Prespecialised: evaluations call it from other modules on every chunk.)
    public var sums: LossSums {
        @_specialize(exported: true, where T == Float)
        @_specialize(exported: true, where T == Double)
        get {
            var s = LossSums()
            s.tokens = x.rows
            s.d = x.cols
            s.k = codesIn.k
            s.sqErrIn = matrixSquaredDistance(xHat, x)
            if let y, let yHat { s.sqErrOut = matrixSquaredDistance(yHat, y) }
            if let jacobian { s.jacAbs = jacobian.reduce(0.0) { $0 + Double(abs($1)) } }
            return s
        }
    }
}

// MARK: The forward pass (docs/jsae-spec.md, "Forward pass" and "Evaluation point")

extension JSAEModel {
    /// The forward pass on the batch loaded into `ws`, at `point`, filling
    /// the activation cache: input codes and x̂, then (for a pair) the MLP at
    /// x or x̂ with φ', the output codes and ŷ. The output SAE encodes the
    /// loaded target when there is one, else the MLP output.
    func forwardPass(_ ws: Workspace<T>, point: EvaluationPoint, timer: PhaseTimer? = nil) {
        let B = ws.tokens, d = self.d, k = self.k, threads = ws.threads
        saeIn.encode(into: ws.codesIn, x: ws.x.p, tokens: B, scratch: ws.arena.p, threads: threads, timer: timer)
        timed(timer, .sparseDecoder) {
            sparseDecode(out: ws.xHat.p, order: ws.latentPairs.p, starts: ws.latentStarts.p,
                         indices: ws.codesIn.indices.p, values: ws.codesIn.values.p, wDec: saeIn.tensors.pointer(.wDec),
                         bDec: saeIn.tensors.pointer(.bDec), tokens: B, d: d, k: k, m: saeIn.m, threads: threads)
        }
        guard let saeOut, let mlp else { return }
        timed(timer, .mlp) {
            mlpForward(y: ws.y.p, act: ws.arena.p, phi: ws.phi.p, x: point == .trueInput ? ws.x.p : ws.xHat.p, mlp.pointers,
                       activation: mlp.activation, tokens: B, d: d, dMlp: mlp.dMlp, threads: threads)
        }
        saeOut.encode(into: ws.codesOut, x: ws.outputTarget, tokens: B, scratch: ws.arena.p, threads: threads, timer: timer)
        timed(timer, .sparseDecoder) {
            sparseDecode(out: ws.yHat.p, order: ws.latentPairs.p, starts: ws.latentStarts.p,
                         indices: ws.codesOut.indices.p, values: ws.codesOut.values.p, wDec: saeOut.tensors.pointer(.wDec),
                         bDec: saeOut.tensors.pointer(.bDec), tokens: B, d: d, k: k, m: saeOut.m, threads: threads)
        }
    }

    /// The cache as values (copies).
    func forwardResult(_ ws: Workspace<T>, point: EvaluationPoint) -> PairForward<T> {
        let B = ws.tokens, d = self.d
        var r = PairForward(point: point, x: Matrix(rows: B, cols: d, data: ws.x.array(B * d)), codesIn: ws.codesIn.codes(B),
                            xHat: Matrix(rows: B, cols: d, data: ws.xHat.array(B * d)),
                            y: nil, phiPrime: nil, codesOut: nil, yHat: nil, jacobian: nil)
        guard let mlp, saeOut != nil else { return r }
        r.y = Matrix(rows: B, cols: d, data: Array(UnsafeBufferPointer(start: ws.outputTarget, count: B * d)))
        r.phiPrime = Matrix(rows: B, cols: mlp.dMlp, data: ws.phi.array(B * mlp.dMlp))
        r.codesOut = ws.codesOut.codes(B)
        r.yHat = Matrix(rows: B, cols: d, data: ws.yHat.array(B * d))
        if ws.jacobian.count > 0 { r.jacobian = ws.jacobian.array(B * k * k) }
        return r
    }

    /// One forward pass of the pair on x at the given evaluation point, with
    /// every token's J (allocates a workspace for x; for evaluation and tests).
    /// - x: [B, d]; chunk: tokens per Jacobian chunk
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public func forward(_ x: Matrix<T>, point: EvaluationPoint, chunk: Int = defaultJacobianChunk,
                        threads: Int = Parallel.onlineCores) -> PairForward<T> {
        let ws = Workspace<T>(workspaceShape(tokens: x.rows, jacobianChunk: chunk), purpose: .storeJacobian, threads: threads)
        computeJacobianFactors(ws)
        return evaluateImpl(x, point: point, ws: ws)
    }

    /// The forward pass and J of a batch x ([B ≤ workspace tokens, d]) in a
    /// reused workspace whose factors are current (`updateJacobianFactors`,
    /// Jacobian.swift).
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public func evaluate(_ x: Matrix<T>, point: EvaluationPoint, workspace ws: Workspace<T>) -> PairForward<T> {
        evaluateImpl(x, point: point, ws: ws)
    }

    /// The body of the public `evaluate`, which is prespecialised and so must
    /// not be called from inside the module (Parallel.swift, "Specialisation").
    func evaluateImpl(_ x: Matrix<T>, point: EvaluationPoint, ws: Workspace<T>) -> PairForward<T> {
        ws.load(x, yTarget: nil)
        forwardPass(ws, point: point)
        if saeOut != nil && mlp != nil { _ = jacobianStats(ws) }
        return forwardResult(ws, point: point)
    }
}
