import Foundation
import JSAECore

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
