import Foundation
import JSAECore

/// The element types of a safetensors file that hold SAE weights. F16 and
/// BF16 are read (widened exactly); only F32 and F64 are written.
public enum SafetensorsDType: String, Sendable, CaseIterable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"

    public var size: Int {
        switch self {
        case .f64: return 8
        case .f32: return 4
        case .f16, .bf16: return 2
        }
    }

    /// The reference writer's data order puts wider (more strictly aligned)
    /// dtypes first; this is their rank in that order.
    var alignmentRank: Int {
        switch self {
        case .f64: return 0
        case .f32: return 1
        case .bf16: return 2
        case .f16: return 3
        }
    }
}

/// One tensor: its on-disk dtype, shape, and values widened to Double
/// (exact for all four dtypes).
public struct SafetensorsTensor: Equatable, Sendable {
    public var dtype: SafetensorsDType
    public var shape: [Int]
    public var values: [Double]

    public init(dtype: SafetensorsDType, shape: [Int], values: [Double]) {
        self.dtype = dtype; self.shape = shape; self.values = values
    }
}

/// A safetensors file (huggingface/safetensors): an 8-byte little-endian
/// header length N, N bytes of JSON (`{"name": {"dtype", "shape",
/// "data_offsets": [begin, end)}, "__metadata__": {string: string}}`,
/// right-padded with spaces), then the tensors' little-endian bytes.
///
/// Reading checks what the reference implementation checks, every size before
/// anything is allocated from it: N ≤ 100,000,000 and within the file, UTF-8
/// JSON starting with `{`, no duplicate keys, known dtypes, shapes whose
/// element count and byte count fit in an Int, and offsets that tile the data
/// section exactly (from 0, no gap, no overlap, ending at its last byte).
public struct SafetensorsFile: Sendable {
    public var tensors: [String: SafetensorsTensor]
    public var metadata: [String: String]

    public init(tensors: [String: SafetensorsTensor] = [:], metadata: [String: String] = [:]) {
        self.tensors = tensors; self.metadata = metadata
    }

    /// The reference implementation's limit on the header (100 MB).
    public static let maxHeaderBytes = 100_000_000

    public static func read(_ path: String) throws -> SafetensorsFile {
        var st = stat()
        guard stat(path, &st) == 0 else { throw JSAEError(file: path, "does not exist") }
        // A FIFO or a device would be read without end.
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw JSAEError(file: path, "is not a regular file") }
        // Mapped, not copied: a large file costs no memory until read, and the
        // only sizes used below are checked against the real file size.
        let bytes: Data
        do { bytes = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) } catch {
            throw JSAEError(file: path, "cannot be read: \(osReason(error))")
        }
        return try bytes.withUnsafeBytes { try parse($0, path: path) }
    }

    static func parse(_ raw: UnsafeRawBufferPointer, path: String) throws -> SafetensorsFile {
        let size = raw.count
        guard size >= 8 else { throw JSAEError(file: path, "is \(size) bytes, too short for a safetensors header length (8 bytes)") }
        let n64 = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        guard n64 <= UInt64(maxHeaderBytes) else {
            throw JSAEError(file: path, "declares a \(n64)-byte header, over the 100,000,000-byte limit (not a safetensors file?)")
        }
        let n = Int(n64)
        guard n <= size - 8 else {
            throw JSAEError(file: path, "declares a \(n)-byte header but only \(size - 8) bytes follow the length (truncated?)")
        }
        let header = UnsafeRawBufferPointer(rebasing: raw[8..<(8 + n)])
        guard let text = String(validating: header, as: UTF8.self) else {
            throw JSAEError(file: path, "header is not valid UTF-8")
        }
        guard header.first == UInt8(ascii: "{") else {
            throw JSAEError(file: path, "header does not start with '{' (not a safetensors file?)")
        }
        let json: Any
        do { json = try JSONSerialization.jsonObject(with: Data(header)) } catch {
            throw JSAEError(file: path, "header is not valid JSON: \(quoted(String(text.prefix(60))))")
        }
        // JSONSerialization keeps one of two equal keys silently; the
        // reference refuses such a header, so look for them here.
        if let dup = duplicateKey(in: header) {
            throw JSAEError(file: path, "header has the key \(quoted(dup)) twice in one object")
        }
        guard let top = json as? [String: Any] else { throw JSAEError(file: path, "header is not a JSON object") }

        var result = SafetensorsFile()
        struct Entry { var name: String; var dtype: SafetensorsDType; var shape: [Int]; var count: Int; var begin: Int; var end: Int }
        var entries: [Entry] = []
        for (name, value) in top {
            if name == "__metadata__" {
                guard let map = value as? [String: Any] else { throw JSAEError(file: path, "__metadata__ is not a JSON object") }
                for (k, v) in map {
                    guard let s = v as? String else { throw JSAEError(file: path, "__metadata__ value of \(quoted(k)) is not a string") }
                    result.metadata[k] = s
                }
                continue
            }
            guard let info = value as? [String: Any] else { throw JSAEError(file: path, "tensor \(quoted(name)) is not a JSON object") }
            guard let dtypeName = info["dtype"] as? String else { throw JSAEError(file: path, "tensor \(quoted(name)) has no dtype string") }
            guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
                throw JSAEError(file: path, "tensor \(quoted(name)) has dtype \(quoted(dtypeName)); supported: F32, F64, F16, BF16")
            }
            guard let shapeAny = info["shape"] as? [Any], let shape = nonNegativeInts(shapeAny) else {
                throw JSAEError(file: path, "tensor \(quoted(name)) has a shape that is not a list of non-negative integers")
            }
            guard let offAny = info["data_offsets"] as? [Any], offAny.count == 2, let off = nonNegativeInts(offAny) else {
                throw JSAEError(file: path, "tensor \(quoted(name)) has data_offsets that are not two non-negative integers")
            }
            var count = 1
            for s in shape {
                let (p, o) = count.multipliedReportingOverflow(by: s)
                guard !o else { throw JSAEError(file: path, "tensor \(quoted(name)) has shape \(HDF5File.describe(shape)), whose element count overflows") }
                count = p
            }
            let (bytes, o) = count.multipliedReportingOverflow(by: dtype.size)
            guard !o else { throw JSAEError(file: path, "tensor \(quoted(name)) has shape \(HDF5File.describe(shape)), whose byte count overflows") }
            guard off[1] >= off[0] else {
                throw JSAEError(file: path, "tensor \(quoted(name)) has data_offsets [\(off[0]), \(off[1])] that end before they begin")
            }
            guard off[1] - off[0] == bytes else {
                throw JSAEError(file: path, "tensor \(quoted(name)) spans \(off[1] - off[0]) bytes but \(dtype.rawValue) \(HDF5File.describe(shape)) needs \(bytes)")
            }
            entries.append(Entry(name: name, dtype: dtype, shape: shape, count: count, begin: off[0], end: off[1]))
        }

        // The offsets must tile the data section: sorted, each begins where
        // the previous ended, the first at 0 and the last at its size.
        let dataStart = 8 + n, dataSize = size - dataStart
        entries.sort { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        var at = 0
        for e in entries {
            guard e.begin == at else {
                throw JSAEError(file: path, "tensor \(quoted(e.name)) begins at data offset \(e.begin), expected \(at) "
                                + (e.begin > at ? "(a gap)" : "(overlaps the tensor before it)"))
            }
            at = e.end
        }
        guard at == dataSize else {
            throw JSAEError(file: path, at > dataSize
                ? "tensors end at data offset \(at) but the data section has \(dataSize) bytes (truncated?)"
                : "tensors end at data offset \(at) but the data section has \(dataSize) bytes (trailing bytes)")
        }

        for e in entries {
            let p = raw.baseAddress! + dataStart + e.begin
            result.tensors[e.name] = SafetensorsTensor(dtype: e.dtype, shape: e.shape,
                                                       values: widen(UnsafeRawPointer(p), count: e.count, dtype: e.dtype))
        }
        return result
    }

    /// Writes the file atomically: dtypes F32 and F64 only, data in the
    /// reference writer's order (wider dtypes first, then by name), the
    /// header padded with spaces so that the data starts at a multiple of 8.
    public func write(to path: String) throws {
        for (name, t) in tensors {
            guard t.dtype == .f32 || t.dtype == .f64 else { throw JSAEError(file: path, "tensor \(quoted(name)): only F32 and F64 are written, not \(t.dtype.rawValue)") }
            guard t.shape.allSatisfy({ $0 >= 0 }), t.shape.reduce(1, *) == t.values.count else {
                throw JSAEError(file: path, "tensor \(quoted(name)) has \(t.values.count) values for shape \(HDF5File.describe(t.shape))")
            }
        }
        let order = tensors.keys.sorted {
            let a = tensors[$0]!.dtype.alignmentRank, b = tensors[$1]!.dtype.alignmentRank
            return a != b ? a < b : $0 < $1
        }
        var entries: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
            entries.append("\"__metadata__\":{" + pairs.joined(separator: ",") + "}")
        }
        var offset = 0
        for name in order {
            let t = tensors[name]!
            let end = offset + t.values.count * t.dtype.size
            entries.append("\(jsonString(name)):{\"dtype\":\"\(t.dtype.rawValue)\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        var header = Array(("{" + entries.joined(separator: ",") + "}").utf8)
        header += [UInt8](repeating: UInt8(ascii: " "), count: (8 - header.count % 8) % 8)
        var out = [UInt8]()
        out.reserveCapacity(8 + header.count + offset)
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { out += $0 }
        out += header
        for name in order {
            let t = tensors[name]!
            switch t.dtype {
            case .f64: for v in t.values { withUnsafeBytes(of: v.bitPattern.littleEndian) { out += $0 } }
            default: for v in t.values { withUnsafeBytes(of: Float(v).bitPattern.littleEndian) { out += $0 } }
            }
        }
        try atomicWrite(to: path) { temp in try writeChecked(out, to: temp) }
    }
}

/// Exactly widened values of `count` little-endian elements at `p`.
private func widen(_ p: UnsafeRawPointer, count: Int, dtype: SafetensorsDType) -> [Double] {
    [Double](unsafeUninitializedCapacity: count) { buf, done in
        for i in 0..<count {
            switch dtype {
            case .f64: buf[i] = Double(bitPattern: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)))
            case .f32: buf[i] = Double(Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))))
            case .f16: buf[i] = Double(Float16(bitPattern: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))))
            // bfloat16 is the top half of a binary32.
            case .bf16: buf[i] = Double(Float(bitPattern: UInt32(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16))
            }
        }
        done = count
    }
}

/// The values as Ints when every one is a whole number >= 0 that an Int holds
/// (Foundation's bridging refuses 1.5 and 1e30).
private func nonNegativeInts(_ a: [Any]) -> [Int]? {
    var out: [Int] = []
    for v in a {
        guard let i = v as? Int, i >= 0 else { return nil }
        out.append(i)
    }
    return out
}
