import Foundation
import JSAECore
import JSAEIO

/// Options of one streamed evaluation.
public struct ForwardOptions: Sendable {
    public var point: EvaluationPoint = .trueInput
    public var lambda: Double = 1
    /// Tokens read from /x and evaluated at once.
    public var chunkTokens: Int = 1024
    /// Tokens per Jacobian chunk inside one evaluated chunk.
    public var jacobianChunk: Int = defaultJacobianChunk
    /// Also write /grad/<group>/<name>, the gradient of the training loss
    /// (reference objective at the true input) over all tokens.
    public var gradients = false
    /// Threads for the package's own loops; results do not depend on it.
    public var threads = Parallel.onlineCores
    public init() {}
}

/// Runs a model over an activations file chunk by chunk and writes a
/// `forward` file (atomically), so memory stays bounded whatever T is.
/// Returns the loss components written to the file's root attributes.
@discardableResult
@_specialize(exported: true, where T == Float)
@_specialize(exported: true, where T == Double)
public func runForward<T: JSAEScalar>(model: JSAEModel<T>, activations: ActivationsReader,
                                      modelPath: String, outPath: String,
                                      options: ForwardOptions,
                                      progress: ((Int, Int) -> Void)? = nil) throws -> LossComponents {
    guard activations.d == model.d else {
        throw JSAEError(file: activations.path, "/x has d = \(activations.d) columns but the model \(modelPath) has d = \(model.d)")
    }
    try RunRules.requireLambda(options.lambda, flag: "lambda")
    guard options.chunkTokens >= 1 && options.jacobianChunk >= 1 else { throw JSAEError("chunk sizes must be at least 1") }
    let pair = model.saeOut != nil && model.mlp != nil
    if model.saeOut != nil && model.mlp == nil {
        throw JSAEError(file: modelPath, "has /sae_out but no /mlp, and \(activations.path) has no /mlp either")
    }
    guard !options.gradients || options.point == .trueInput else {
        throw JSAEError("gradients are those of the training loss, which is defined at the true input (trueInput)")
    }
    var grads: PairGradients<T>? = options.gradients ?
        PairGradients(saeIn: SAETensors(d: model.d, m: model.saeIn.m), saeOut: model.saeOut.map { SAETensors(d: model.d, m: $0.m) }) : nil
    let T_ = activations.tokens, d = model.d, k = model.k
    // One workspace for every chunk; the Jacobian factors are the same for all.
    let ws = Workspace<T>(model.workspaceShape(tokens: min(options.chunkTokens, T_), jacobianChunk: options.jacobianChunk),
                          purpose: options.gradients ? [.training, .storeJacobian] : .storeJacobian, threads: options.threads)
    model.updateJacobianFactors(ws)
    let stored: HDF5File.StoredFloat = T.self == Float.self ? .float32 : .float64
    var sums = LossSums()
    return try atomicWrite(to: outPath) { temp in
        let out = try HDF5File.create(temp)
        try FileFormat.writeHeader(out, kind: .forward)
        try out.createIntDataset("/sae_in/indices", shape: [T_, k])
        try out.createDataset("/sae_in/values", shape: [T_, k], stored: stored)
        try out.createDataset("/x_hat", shape: [T_, d], stored: stored)
        if pair {
            try out.createIntDataset("/sae_out/indices", shape: [T_, k])
            try out.createDataset("/sae_out/values", shape: [T_, k], stored: stored)
            try out.createDataset("/y", shape: [T_, d], stored: stored)
            try out.createDataset("/y_hat", shape: [T_, d], stored: stored)
            try out.createDataset("/jacobian", shape: [T_, k, k], stored: stored)
        }
        for range in activations.chunks(of: options.chunkTokens) {
            let x: Matrix<T> = try activations.x(range)
            let r: PairForward<T>
            if grads != nil {
                // The training pass evaluates the same forward (at the true
                // input) and its gradient; chunk gradients are weighted by
                // their share of the tokens, so the sum is the whole-file gradient.
                let pass = model.lossAndGradients(x, lambda: pair ? options.lambda : 0, workspace: ws)
                let w = T(Double(range.count) / Double(T_))
                grads!.saeIn.add(pass.gradients.saeIn, scaledBy: w)
                if let g = pass.gradients.saeOut { grads!.saeOut!.add(g, scaledBy: w) }
                r = pass.forward
            } else {
                r = model.evaluate(x, point: options.point, workspace: ws)
            }
            try requireFiniteForward(r, rows: range, k: k, d: d, model: modelPath)
            try out.writeRows("/sae_in/indices", range, ints: r.codesIn.indices)
            try out.writeRows("/sae_in/values", range, r.codesIn.values)
            try out.writeRows("/x_hat", range, r.xHat.data)
            if pair, let co = r.codesOut, let y = r.y, let yHat = r.yHat, let j = r.jacobian {
                try out.writeRows("/sae_out/indices", range, ints: co.indices)
                try out.writeRows("/sae_out/values", range, co.values)
                try out.writeRows("/y", range, y.data)
                try out.writeRows("/y_hat", range, yHat.data)
                try out.writeRows("/jacobian", range, j)
            }
            sums.add(r.sums)
            progress?(range.upperBound, T_)
        }
        if let grads {
            for (group, g) in [("sae_in", grads.saeIn), ("sae_out", grads.saeOut)] {
                guard let g else { continue }
                for name in SAETensors<T>.Name.allCases {
                    try requireFiniteGradient(g[name], name: "/grad/\(group)/\(name.rawValue)", model: modelPath)
                }
                try writeTensors(out, g) { "/grad/\(group)/\($0)" }
            }
        }
        let c = sums.components(lambda: pair ? options.lambda : 0)
        try requireFiniteSummary(c, model: modelPath, precision: T.precisionName)
        try out.setAttribute("evaluation_point", .string(options.point.rawValue))
        try out.setAttribute("lambda", .double(options.lambda))
        try out.setAttribute("mse_in", .double(c.mseIn))
        if pair {
            try out.setAttribute("mse_out", .double(c.mseOut))
            try out.setAttribute("jacobian_l1", .double(c.jacobianL1))
        }
        try out.setAttribute("loss", .double(c.loss))
        try out.setAttribute("k", .int(k))
        try out.setAttribute("tokens", .int(T_))
        try out.setAttribute("precision", .string(T.precisionName))
        try out.setAttribute("model_file", .string(modelPath))
        try out.setAttribute("activations_file", .string(activations.path))
        try out.finish()
        return c
    }
}

