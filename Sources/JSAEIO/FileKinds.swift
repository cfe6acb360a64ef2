import Foundation
import JSAECore

/// The HDF5 layouts of `file-format.md` (format version 1).
public enum FileFormat {
    public static let version = 1

    public enum Kind: String, CaseIterable, Sendable {
        case model, checkpoint, activations, forward
    }

    /// Checks `format_version = 1` and that `kind` is one of `accepted`.
    /// Returns the kind found.
    @discardableResult
    public static func checkHeader(_ file: HDF5File, accepted: [Kind]) throws -> Kind {
        let names = accepted.map { "\"\($0.rawValue)\"" }.joined(separator: " or ")
        guard let version = try file.intAttribute("format_version") else {
            throw JSAEError(file: file.path, "missing root attribute format_version (expected 1 with kind = \(names))")
        }
        guard version == Self.version else {
            throw JSAEError(file: file.path, "format_version is \(version); this harness reads format version \(Self.version)")
        }
        guard let kindName = try file.stringAttribute("kind") else {
            throw JSAEError(file: file.path, "missing root attribute kind (expected \(names))")
        }
        guard let kind = Kind(rawValue: kindName) else {
            throw JSAEError(file: file.path, "unknown kind \"\(kindName)\" (expected \(names))")
        }
        guard accepted.contains(kind) else {
            throw JSAEError(file: file.path, "kind is \"\(kind.rawValue)\", expected \(names)")
        }
        return kind
    }

    /// Stamps `format_version = 1` and `kind` on a file being written.
    public static func writeHeader(_ file: HDF5File, kind: Kind) throws {
        try file.setAttribute("format_version", .int(version))
        try file.setAttribute("kind", .string(kind.rawValue))
    }
}

/// Wraps an error from a pure-maths initialiser with the file it came from.
func attributing<R>(_ file: HDF5File, _ body: () throws -> R) throws -> R {
    do { return try body() } catch let e as JSAEError { throw e.inFile(file.path) }
}

// MARK: Reading the pieces

/// Checks every value of a tensor is finite; names the tensor and a position.
func requireFinite<T: JSAEScalar>(_ data: [T], _ name: String, _ file: HDF5File, cols: Int = 1) throws {
    if let i = data.firstNonFiniteIndex {
        let what = data[i].isNaN ? "NaN" : "Inf"
        let at = cols > 1 ? "row \(i / cols), column \(i % cols)" : "index \(i)"
        throw JSAEError(file: file.path, "\(name) contains \(what) at \(at)")
    }
}

func readSAE<T: JSAEScalar>(_ file: HDF5File, group: String, k: Int, as: T.Type) throws -> TopKSAE<T> {
    // W_enc's shape sets d and m; the other three tensors must agree with it.
    let (shape, _) = try file.info("\(group)/W_enc")
    guard shape.count == 2 else { throw JSAEError(file: file.path, "\(group)/W_enc has shape \(HDF5File.describe(shape)), expected [d, m]") }
    let tensors: SAETensors<T> = try readTensors(file, d: shape[0], m: shape[1]) { "\(group)/\($0)" }
    do {
        return try TopKSAE(tensors: tensors, k: k)
    } catch let e as JSAEError {
        throw JSAEError(file: file.path, "\(group): \(e.message)")
    }
}

func readMLP<T: JSAEScalar>(_ file: HDF5File, activation: Activation, d: Int?, as: T.Type) throws -> MLP<T> {
    let wIn: Matrix<T> = try file.readMatrix("/mlp/W_in", rows: d)
    let h = wIn.cols, dd = wIn.rows
    let bIn: [T] = try file.readVector("/mlp/b_in", count: h)
    let wOut: Matrix<T> = try file.readMatrix("/mlp/W_out", rows: h, cols: dd)
    let bOut: [T] = try file.readVector("/mlp/b_out", count: dd)
    for (name, data, cols) in [("W_in", wIn.data, h), ("b_in", bIn, 1), ("W_out", wOut.data, dd), ("b_out", bOut, 1)] {
        try requireFinite(data, "/mlp/\(name)", file, cols: cols)
    }
    return try attributing(file) { try MLP(wIn: wIn, bIn: bIn, wOut: wOut, bOut: bOut, activation: activation) }
}

func readActivation(_ file: HDF5File) throws -> Activation {
    guard let name = try file.stringAttribute("activation") else { return .gelu }
    guard let a = Activation(rawValue: name) else {
        throw JSAEError(file: file.path, "unknown activation \"\(name)\" (expected \"gelu\" or \"gelu_tanh\")")
    }
    return a
}

func writeSAE<T: JSAEScalar>(_ file: HDF5File, group: String, _ sae: TopKSAE<T>) throws {
    // A file every reader would refuse is never written: NaN or Inf here
    // means the parameters were damaged (e.g. resumed from a corrupt
    // checkpoint whose values overflowed in the update).
    for name in SAETensors<T>.Name.allCases {
        let data = sae.tensors[name]
        if let i = data.firstNonFiniteIndex {
            throw JSAEError(file: file.path, "refusing to write \(group)/\(name.rawValue): it is \(data[i].isNaN ? "NaN" : "Inf") at index \(i)")
        }
    }
    try writeTensors(file, sae.tensors) { "\(group)/\($0)" }
}

/// Writes an SAE's four tensors (parameters, gradients or a moment), each
/// under `path(name)` with its file-format name and shape.
public func writeTensors<T: JSAEScalar>(_ file: HDF5File, _ t: SAETensors<T>, path: (String) -> String) throws {
    for name in SAETensors<T>.Name.allCases {
        try file.write(path(name.rawValue), shape: t.shape(name), t[name])
    }
}

/// Reads four tensors written by `writeTensors`, checking shapes and finiteness.
func readTensors<T: JSAEScalar>(_ file: HDF5File, d: Int, m: Int, path: (String) -> String) throws -> SAETensors<T> {
    // Every tensor is read, and so checked against the memory and the data
    // the file really holds, before the d × m buffers are allocated: d and m
    // come from a shape the file declares, which may be anything.
    var read: [SAETensors<T>.Name: [T]] = [:]
    for name in SAETensors<T>.Name.allCases {
        let dataset = path(name.rawValue)
        let shape: [Int]
        switch name {
        case .wEnc: shape = [d, m]
        case .bEnc: shape = [m]
        case .wDec: shape = [m, d]
        case .bDec: shape = [d]
        }
        let values: [T] = try file.readFloats(dataset, shape: shape.map { $0 }).data
        try requireFinite(values, dataset, file, cols: shape.count == 2 ? shape[1] : 1)
        read[name] = values
    }
    var t = SAETensors<T>(d: d, m: m)
    for (name, values) in read { t[name] = values }
    return t
}

func writeMLP<T: JSAEScalar>(_ file: HDF5File, _ mlp: MLP<T>) throws {
    try file.write("/mlp/W_in", mlp.wIn)
    try file.write("/mlp/b_in", shape: [mlp.dMlp], mlp.bIn)
    try file.write("/mlp/W_out", mlp.wOut)
    try file.write("/mlp/b_out", shape: [mlp.d], mlp.bOut)
}

/// The /mlp group of any file, with the file's `activation` attribute.
public enum MLPFile {
    public static func read<T: JSAEScalar>(_ f: HDF5File, d: Int?, as: T.Type = T.self) throws -> MLP<T> {
        try readMLP(f, activation: readActivation(f), d: d, as: T.self)
    }
}

// MARK: kind = model

public enum ModelFile {
    /// Reads a `model` (or `checkpoint`) file. The MLP may be absent here and
    /// come from the activations file (`mlpFallback`).
    public static func read<T: JSAEScalar>(_ path: String, as: T.Type = T.self,
                                           mlpFallback: HDF5File? = nil) throws -> JSAEModel<T> {
        let file = try HDF5File.open(path)
        try FileFormat.checkHeader(file, accepted: [.model, .checkpoint])
        guard let k = try file.intAttribute("k") else { throw JSAEError(file: path, "missing root attribute k") }
        let activation = try readActivation(file)
        guard file.exists("/sae_in") else { throw JSAEError(file: path, "missing group /sae_in") }
        let saeIn = try readSAE(file, group: "/sae_in", k: k, as: T.self)
        let saeOut = file.exists("/sae_out") ? try readSAE(file, group: "/sae_out", k: k, as: T.self) : nil
        var mlp: MLP<T>? = nil
        if file.exists("/mlp") {
            mlp = try readMLP(file, activation: activation, d: saeIn.d, as: T.self)
        } else if let other = mlpFallback, other.exists("/mlp") {
            let act = try other.stringAttribute("activation") != nil ? try readActivation(other) : activation
            mlp = try readMLP(other, activation: act, d: saeIn.d, as: T.self)
        }
        return try attributing(file) { try JSAEModel(saeIn: saeIn, saeOut: saeOut, mlp: mlp) }
    }

    /// Writes a `model` file atomically.
    public static func write<T: JSAEScalar>(_ model: JSAEModel<T>, to path: String,
                                            attributes: [String: AttributeValue] = [:]) throws {
        try atomicWrite(to: path) { temp in
            let file = try HDF5File.create(temp)
            try FileFormat.writeHeader(file, kind: .model)
            try file.setAttribute("k", .int(model.k))
            try file.setAttribute("activation", .string((model.mlp?.activation ?? .gelu).rawValue))
            for (key, v) in attributes.sorted(by: { $0.key < $1.key }) { try file.setAttribute(key, v) }
            try writeSAE(file, group: "/sae_in", model.saeIn)
            if let o = model.saeOut { try writeSAE(file, group: "/sae_out", o) }
            if let mlp = model.mlp { try writeMLP(file, mlp) }
            try file.finish()
        }
    }
}

// MARK: kind = activations

/// Streams `/x` (and `/y` when present) of an `activations` file in row chunks,
/// checking every chunk for NaN and Inf as it is read.
public final class ActivationsReader {
    public let file: HDF5File
    public let tokens: Int
    public let d: Int
    public let hasY: Bool

    public init(_ path: String) throws {
        file = try HDF5File.open(path)
        try FileFormat.checkHeader(file, accepted: [.activations])
        let (shape, element) = try file.info("/x")
        guard case .float = element else {
            throw JSAEError(file: path, "/x has dtype \(element.name), expected a floating type (float16, float32 or float64)")
        }
        guard shape.count == 2 else { throw JSAEError(file: path, "/x has shape \(HDF5File.describe(shape)), expected [T, d]") }
        guard shape[0] > 0 else { throw JSAEError(file: path, "/x has no tokens (shape \(HDF5File.describe(shape)))") }
        guard shape[1] > 0 else { throw JSAEError(file: path, "/x has no columns (shape \(HDF5File.describe(shape)))") }
        tokens = shape[0]; d = shape[1]
        // Streaming reads only what is asked for: make sure the declared rows
        // are really in the file first, so a tiny file declaring 2^40 rows
        // is refused at once instead of being "read" as fill values.
        try file.requireStored("/x")
        hasY = file.exists("/y")
        if hasY {
            let (ys, _) = try file.info("/y")
            guard ys == shape else { throw JSAEError(file: path, "/y has shape \(HDF5File.describe(ys)), expected \(HDF5File.describe(shape)) like /x") }
            try file.requireStored("/y")
        }
    }

    public var path: String { file.path }

    /// Rows `range` of /x, rejecting NaN and Inf with the row that has them.
    public func x<T: JSAEScalar>(_ range: Range<Int>, as: T.Type = T.self) throws -> Matrix<T> {
        let m: Matrix<T> = try file.readRows("/x", range)
        if let (r, c) = m.firstNonFinite {
            let v = m[r, c]
            throw JSAEError(file: path, "/x contains \(v.isNaN ? "NaN" : "Inf") at row \(range.lowerBound + r), column \(c)")
        }
        return m
    }

    /// Chunks of at most `chunk` rows covering all tokens, produced lazily
    /// (nothing is built up front, whatever the row count).
    public func chunks(of chunk: Int) -> LazyMapSequence<StrideTo<Int>, Range<Int>> {
        let c = max(chunk, 1), n = tokens
        return stride(from: 0, to: n, by: c).lazy.map { $0..<($0 + min(c, n - $0)) }
    }

    /// A cheap content fingerprint of /x: its shape and a 64-bit FNV-1a hash
    /// of the values (read as float64) of the first and the last 256 rows.
    /// Enough to notice a file replaced, regenerated or shrunk between an
    /// interrupt and a resume; not a cryptographic hash.
    public func fingerprint() throws -> String {
        if let cached = cachedFingerprint { return cached }
        var h: UInt64 = 0xcbf29ce484222325
        func mix(_ v: UInt64) { for i in 0..<8 { h = (h ^ ((v >> (8 * UInt64(i))) & 0xff)) &* 0x100000001b3 } }
        mix(UInt64(tokens)); mix(UInt64(d))
        let n = min(256, tokens)
        for range in Set([0..<n, (tokens - n)..<tokens]).sorted(by: { $0.lowerBound < $1.lowerBound }) {
            let m: Matrix<Double> = try file.readRows("/x", range)
            for v in m.data { mix(v.bitPattern) }
        }
        let s = "fnv1a64:" + String(h, radix: 16)
        cachedFingerprint = s
        return s
    }
    private var cachedFingerprint: String?
}
