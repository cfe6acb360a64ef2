import CZlib
import Foundation

// PNG reading for the tests of the report's plots, on zlib's own inflate and
// CRC rather than the package's writer, so that a plot is checked by code
// that did not make it.

/// zlib's CRC-32 of `bytes`.
public func zlibCRC32(_ bytes: [UInt8]) -> UInt32 {
    UInt32(bytes.withUnsafeBufferPointer { crc32(0, $0.baseAddress, uInt($0.count)) })
}

/// The big-endian UInt32 at b[p..<p+4].
public func bigEndian32(_ b: [UInt8], at p: Int) -> UInt32 { b[p..<(p + 4)].reduce(0) { $0 << 8 | UInt32($1) } }

/// The chunks of a PNG after its signature, each with whether its CRC
/// matches; nil if a chunk runs past the end or bytes trail the last one.
public func pngChunks(_ d: Data) -> [(type: String, body: [UInt8], crcOK: Bool)]? {
    let b = [UInt8](d)
    var out: [(String, [UInt8], Bool)] = []
    var i = 8
    while i + 12 <= b.count {
        let n = Int(bigEndian32(b, at: i))
        guard n <= b.count - i - 12 else { return nil }
        let type = Array(b[(i + 4)..<(i + 8)]), body = Array(b[(i + 8)..<(i + 8 + n)])
        out.append((String(decoding: type, as: UTF8.self), body, bigEndian32(b, at: i + 8 + n) == zlibCRC32(type + body)))
        i += 12 + n
    }
    return i == b.count ? out : nil
}

/// zlib's own inflate of `z`, expecting at most `size` bytes; nil if it fails.
public func zlibInflate(_ z: [UInt8], size: Int) -> [UInt8]? {
    var out = [UInt8](repeating: 0, count: size + 1), n = uLong(size + 1)
    let rc = out.withUnsafeMutableBufferPointer { o in z.withUnsafeBufferPointer { uncompress(o.baseAddress!, &n, $0.baseAddress!, uLong(z.count)) } }
    return rc == Z_OK ? Array(out.prefix(Int(n))) : nil
}

/// A PNG written by the report, decoded: its size and its number of
/// distinct colours (nil if it is not a well-formed PNG of ours).
public func decodePlot(_ d: Data) -> (width: Int, height: Int, colours: Int)? {
    guard d.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]), let cs = pngChunks(d),
          cs.map(\.type) == ["IHDR", "IDAT", "IEND"], cs.allSatisfy(\.crcOK), cs[0].body.count == 13 else { return nil }
    let w = Int(bigEndian32(cs[0].body, at: 0)), h = Int(bigEndian32(cs[0].body, at: 4))
    guard w > 0, h > 0, w * h < 50_000_000, let raw = zlibInflate(cs[1].body, size: h * (w * 3 + 1)), raw.count == h * (w * 3 + 1) else { return nil }
    var colours = Set<UInt32>()
    for y in 0..<h {
        for x in 0..<w {
            let i = y * (w * 3 + 1) + 1 + x * 3
            colours.insert(UInt32(raw[i]) << 16 | UInt32(raw[i + 1]) << 8 | UInt32(raw[i + 2]))
        }
    }
    return (w, h, colours.count)
}

