/// The training objective (docs/jsae-spec.md, "Loss") and its backward
/// (docs/jsae-spec.md, "Gradients"):
///
///     loss = mse_in + mse_out + λ · Σ|J| / (B·k²)
///
/// at the true input, with the index sets constant. The Jacobian term reaches
/// only W_dec_x (through wd1) and W_enc_y (through w2e); nothing reaches the MLP.

/// Σ (a − b)² accumulated in Double. (Prespecialised entry for other
/// modules; see "Specialisation" in Parallel.swift.)
@_specialize(exported: true, where T == Float)
@_specialize(exported: true, where T == Double)
package func squaredDistance<T: JSAEScalar>(_ a: Matrix<T>, _ b: Matrix<T>) -> Double { matrixSquaredDistance(a, b) }

func matrixSquaredDistance<T: JSAEScalar>(_ a: Matrix<T>, _ b: Matrix<T>) -> Double {
    precondition(a.count == b.count)
    return a.data.withUnsafeBufferPointer { pa in b.data.withUnsafeBufferPointer { pb in squaredDistance(pa.baseAddress!, pb.baseAddress!, count: a.count) } }
}

func squaredDistance<T: JSAEScalar>(_ a: UnsafePointer<T>, _ b: UnsafePointer<T>, count: Int) -> Double {
    var s = 0.0
    for i in 0..<count { let e = Double(a[i] - b[i]); s += e * e }
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

/// Gradients of both SAEs (`saeOut` nil for a single SAE).
public struct PairGradients<T: JSAEScalar>: Sendable, Equatable {
    public var saeIn: SAETensors<T>
    public var saeOut: SAETensors<T>?

    public init(saeIn: SAETensors<T>, saeOut: SAETensors<T>?) { self.saeIn = saeIn; self.saeOut = saeOut }
}

/// What one evaluation of the training objective produced.
public struct TrainingPass<T: JSAEScalar>: Sendable {
    public var sums: LossSums
    public var components: LossComponents
    public var gradients: PairGradients<T>
    public var forward: PairForward<T>
    public var jacobianStats: JacobianStats?
}

extension JSAEModel {
    /// The loss sums of the batch in `ws` (J's from `stats`, when it was computed).
    func lossSums(_ ws: Workspace<T>, jacobian stats: JacobianStats?) -> LossSums {
        var s = LossSums()
        s.tokens = ws.tokens; s.d = d; s.k = k
        s.sqErrIn = squaredDistance(ws.xHat.p, ws.x.p, count: ws.tokens * d)
        if saeOut != nil && mlp != nil { s.sqErrOut = squaredDistance(ws.yHat.p, ws.outputTarget, count: ws.tokens * d) }
        s.jacAbs = stats?.absSum ?? 0
        return s
    }

    /// The backward pass of the loss whose forward (and, for λ > 0, fused
    /// Jacobian backward into dwd1/dw2eᵀ) is in `ws`, in reverse order: the
    /// output SAE's reconstruction term, the input SAE's, then the chain
    /// through wd1 = W_dec_x·W_in and w2e = W_out·W_enc_y
    /// (`jacobianFactorsBackward`, Jacobian.swift).
    func backwardPass(_ ws: Workspace<T>, lambda: Double, timer: PhaseTimer?) {
        let B = ws.tokens, d = self.d, threads = ws.threads
        let scale = T(2) / T(B * d)
        ws.gradIn.zero(); ws.gradOut.zero()
        if let saeOut, mlp != nil {
            timed(timer, .sparseDecoder) {
                residualGradient(out: ws.residual.p, ws.yHat.p, ws.outputTarget, scale: scale, count: B * d)
                sparseDecoderBackward(grad: &ws.gradOut, scratch: ws.arena.p, order: ws.latentPairs.p, starts: ws.latentStarts.p, dOut: ws.residual.p, input: ws.outputTarget,
                                      codes: ws.codesOut, wDec: saeOut.tensors.pointer(.wDec), tokens: B, threads: threads)
            }
        }
        timed(timer, .sparseDecoder) {
            residualGradient(out: ws.residual.p, ws.xHat.p, ws.x.p, scale: scale, count: B * d)
            sparseDecoderBackward(grad: &ws.gradIn, scratch: ws.arena.p, order: ws.latentPairs.p, starts: ws.latentStarts.p, dOut: ws.residual.p, input: ws.x.p,
                                  codes: ws.codesIn, wDec: saeIn.tensors.pointer(.wDec), tokens: B, threads: threads)
        }
        guard lambda > 0 else { return }
        timed(timer, .weightGradients) { jacobianFactorsBackward(ws) }
    }

    /// The reference code's training objective and its analytic gradient on
    /// x (allocates a workspace; for tests and evaluation). y = f(x), or
    /// `yTarget` (the MLP output as the model computed it); φ' = act'(x @ W_in + b_in).
    /// Without `saeOut` the objective is mse_in alone.
    /// - x: [B, d]; yTarget: [B, d] or nil
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public func lossAndGradients(_ x: Matrix<T>, yTarget: Matrix<T>? = nil, lambda: Double,
                                 chunk: Int = defaultJacobianChunk, threads: Int = Parallel.onlineCores) -> TrainingPass<T> {
        let ws = Workspace<T>(workspaceShape(tokens: x.rows, jacobianChunk: chunk), purpose: [.training, .storeJacobian], threads: threads)
        return lossAndGradientsImpl(x, yTarget: yTarget, lambda: lambda, ws: ws)
    }

    /// The same in a reused training workspace.
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public func lossAndGradients(_ x: Matrix<T>, lambda: Double, workspace ws: Workspace<T>) -> TrainingPass<T> {
        lossAndGradientsImpl(x, yTarget: nil, lambda: lambda, ws: ws)
    }

    /// Forward, J (always, for the returned statistics), loss, backward. The
    /// body of both public `lossAndGradients`, which are prespecialised and so
    /// must not be called from inside the module (Parallel.swift, "Specialisation").
    func lossAndGradientsImpl(_ x: Matrix<T>, yTarget: Matrix<T>?, lambda: Double, ws: Workspace<T>) -> TrainingPass<T> {
        ws.load(x, yTarget: yTarget)
        forwardPass(ws, point: .trueInput)
        let stats = jacobianTerm(ws, lambda: lambda, report: true, timer: nil)
        let sums = lossSums(ws, jacobian: stats)
        backwardPass(ws, lambda: lambda, timer: nil)
        return TrainingPass(sums: sums, components: sums.components(lambda: lambda),
                            gradients: PairGradients(saeIn: ws.gradIn, saeOut: saeOut != nil ? ws.gradOut : nil),
                            forward: forwardResult(ws, point: .trueInput), jacobianStats: stats)
    }
}

/// out = scale · (a − b): the gradient of scale/2 · Σ(a − b)² with respect to a.
func residualGradient<T: JSAEScalar>(out: UnsafeMutablePointer<T>, _ a: UnsafePointer<T>, _ b: UnsafePointer<T>, scale: T, count: Int) {
    for i in 0..<count { out[i] = scale * (a[i] - b[i]) }
}
