import CZlib
import Foundation
import Testing
@testable import JSAEReport

/// The big-endian UInt32 at b[p..<p+4].
func bigEndian32(_ b: [UInt8], at p: Int) -> UInt32 { b[p..<(p + 4)].reduce(0) { $0 << 8 | UInt32($1) } }

/// The chunks of a PNG after its signature, each with whether its CRC
/// matches; nil if a chunk runs past the end or bytes trail the last one.
func pngChunks(_ d: Data) -> [(type: String, body: [UInt8], crcOK: Bool)]? {
    let b = [UInt8](d)
    var out: [(String, [UInt8], Bool)] = []
    var i = 8
    while i + 12 <= b.count {
        let n = Int(bigEndian32(b, at: i))
        guard n <= b.count - i - 12 else { return nil }
        let type = Array(b[(i + 4)..<(i + 8)]), body = Array(b[(i + 8)..<(i + 8 + n)])
        out.append((String(decoding: type, as: UTF8.self), body, bigEndian32(b, at: i + 8 + n) == PNG.crc32(type + body)))
        i += 12 + n
    }
    return i == b.count ? out : nil
}

/// zlib's own inflate of `z`, expecting at most `size` bytes; nil if it fails.
func zlibInflate(_ z: [UInt8], size: Int) -> [UInt8]? {
    var out = [UInt8](repeating: 0, count: size + 1), n = uLong(size + 1)
    let rc = out.withUnsafeMutableBufferPointer { o in z.withUnsafeBufferPointer { uncompress(o.baseAddress!, &n, $0.baseAddress!, uLong(z.count)) } }
    return rc == Z_OK ? Array(out.prefix(Int(n))) : nil
}

/// A PNG written by the report, decoded: its size and its number of
/// distinct colours (nil if it is not a well-formed PNG of ours).
func decodePlot(_ d: Data) -> (width: Int, height: Int, colours: Int)? {
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

/// The report's PNG writer, read back with zlib's own inflate: chunk
/// layout, CRCs, and scanlines equal to the canvas, for the compressed
/// stream and for the stored fallback.
@Suite("PNG plots")
struct PNGTests {
    @Test("a plot decodes to its canvas, compressed and stored")
    func roundTrip() throws {
        var c = Canvas(width: 300, height: 200)
        c.fill(10, 10, 120, 80, (200, 30, 40))
        c.line(0, 199, 299, 0, (0, 0, 255), thick: 3)
        c.text("SHARE 12.5%", 20, 150)
        var scanlines: [UInt8] = []
        for y in 0..<c.height {
            scanlines.append(0)
            scanlines += c.rgb[(y * c.width * 3)..<((y + 1) * c.width * 3)]
        }
        let png = c.png()
        #expect(png.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]))
        let cs = try #require(pngChunks(png))
        #expect(cs.map(\.type) == ["IHDR", "IDAT", "IEND"] && cs.allSatisfy(\.crcOK))
        #expect(cs[0].body == [0, 0, 1, 44, 0, 0, 0, 200, 8, 2, 0, 0, 0])
        #expect(zlibInflate(cs[1].body, size: scanlines.count) == scanlines)
        // Flat colour compresses: far below the 180 KB of raw scanlines.
        #expect(png.count < scanlines.count / 10, "\(png.count) bytes")
        #expect(zlibInflate(PNG.stored(scanlines), size: scanlines.count) == scanlines)
    }
}
