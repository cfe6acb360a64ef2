import Foundation
import JSAECore

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
    guard options.lambda >= 0 && options.lambda.isFinite else { throw JSAEError("lambda must be a finite number >= 0, got \(options.lambda)") }
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
    let factors = model.jacobianFactors()
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
                let pass = model.lossAndGradients(x, lambda: pair ? options.lambda : 0, chunk: options.jacobianChunk,
                                                  keepJacobian: true, factors: factors)
                let w = T(Double(range.count) / Double(T_))
                grads!.saeIn.add(pass.gradients.saeIn, scaledBy: w)
                if let g = pass.gradients.saeOut { grads!.saeOut!.add(g, scaledBy: w) }
                r = pass.forward
            } else {
                r = model.forward(x, point: options.point, factors: factors, chunk: options.jacobianChunk)
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
                for ((name, p), shape) in zip(SAETensors<T>.paths, g.shapes) {
                    try requireFiniteGradient(g[keyPath: p], name: "/grad/\(group)/\(name)", model: modelPath)
                    try out.write("/grad/\(group)/\(name)", shape: shape, g[keyPath: p])
                }
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

/// A `forward` file read back (for tests, golden comparisons and inspection).
public struct ForwardFile<T: JSAEScalar> {
    public var point: EvaluationPoint
    public var lambda: Double
    public var k: Int
    public var inIndices: [Int]
    public var inValues: [T]
    public var xHat: Matrix<T>
    public var outIndices: [Int]?
    public var outValues: [T]?
    public var y: Matrix<T>?
    public var yHat: Matrix<T>?
    public var jacobian: [T]?
    public var mseIn: Double
    public var mseOut: Double?
    public var jacobianL1: Double?
    public var loss: Double

    public init(_ path: String, as: T.Type = T.self) throws {
        let f = try HDF5File.open(path)
        try FileFormat.checkHeader(f, accepted: [.forward])
        guard let p = try f.stringAttribute("evaluation_point"), let point = EvaluationPoint(rawValue: p) else {
            throw JSAEError(file: path, "missing or unknown root attribute evaluation_point")
        }
        self.point = point
        func num(_ n: String) throws -> Double {
            guard let v = try f.doubleAttribute(n) else { throw JSAEError(file: path, "missing root attribute \(n)") }
            return v
        }
        lambda = try num("lambda"); mseIn = try num("mse_in"); loss = try num("loss")
        let (ishape, idx) = try f.readInts("/sae_in/indices")
        guard ishape.count == 2 else { throw JSAEError(file: path, "/sae_in/indices must be [T, k]") }
        k = ishape[1]
        let tokens = ishape[0]
        inIndices = idx
        inValues = try f.readFloats("/sae_in/values", shape: [tokens, k]).data
        xHat = try f.readMatrix("/x_hat", rows: tokens)
        if f.exists("/sae_out") {
            outIndices = try f.readInts("/sae_out/indices", shape: [tokens, k]).data
            outValues = try f.readFloats("/sae_out/values", shape: [tokens, k]).data
            y = try f.readMatrix("/y", rows: tokens)
            yHat = try f.readMatrix("/y_hat", rows: tokens)
            jacobian = try f.readFloats("/jacobian", shape: [tokens, k, k]).data
            mseOut = try num("mse_out"); jacobianL1 = try num("jacobian_l1")
        }
    }
}
