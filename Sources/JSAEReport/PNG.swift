import CZlib
import Foundation

/// A minimal PNG encoder: 8-bit RGB, filter 0, one zlib stream. The plots
/// are mostly flat colour, so zlib shrinks them ~150× (1.2 MB to ~8 KB).
enum PNG {
    static func encode(width: Int, height: Int, rgb: [UInt8]) -> Data {
        precondition(rgb.count == width * height * 3)
        var raw = [UInt8]()
        raw.reserveCapacity(height * (width * 3 + 1))
        for y in 0..<height {
            raw.append(0)  // filter: none
            raw.append(contentsOf: rgb[(y * width * 3)..<((y + 1) * width * 3)])
        }
        let z = deflated(raw) ?? stored(raw)
        var out = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        var ihdr = bigEndian(UInt32(width)) + bigEndian(UInt32(height))
        ihdr += [8, 2, 0, 0, 0]  // 8-bit, RGB, deflate, filter 0, no interlace
        out += chunk("IHDR", ihdr) + chunk("IDAT", z) + chunk("IEND", [])
        return out
    }

    /// The zlib stream of `raw` at level 9, or nil if zlib fails (only for
    /// lack of memory), in which case the caller stores it uncompressed.
    static func deflated(_ raw: [UInt8]) -> [UInt8]? {
        var size = compressBound(uLong(raw.count))
        var z = [UInt8](repeating: 0, count: Int(size))
        let rc = z.withUnsafeMutableBufferPointer { out in
            raw.withUnsafeBufferPointer { compress2(out.baseAddress!, &size, $0.baseAddress!, uLong(raw.count), 9) }
        }
        guard rc == Z_OK else { return nil }
        return Array(z.prefix(Int(size)))
    }

    /// A valid zlib stream of stored (uncompressed) deflate blocks.
    static func stored(_ raw: [UInt8]) -> [UInt8] {
        var z: [UInt8] = [0x78, 0x01]
        var i = 0
        repeat {
            let n = min(65535, raw.count - i)
            let last: UInt8 = i + n >= raw.count ? 1 : 0
            z += [last, UInt8(n & 0xff), UInt8(n >> 8), UInt8(~n & 0xff), UInt8((~n >> 8) & 0xff)]
            z += raw[i..<(i + n)]
            i += n
        } while i < raw.count
        return z + bigEndian(adler32(raw))
    }

    static func chunk(_ type: String, _ body: [UInt8]) -> Data {
        let t = Array(type.utf8)
        return Data(bigEndian(UInt32(body.count)) + t + body + bigEndian(crc32(t + body)))
    }

    static func bigEndian(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }

    static let crcTable: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB88320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFFFFFF
        for b in bytes { c = crcTable[Int((c ^ UInt32(b)) & 0xff)] ^ (c >> 8) }
        return c ^ 0xFFFFFFFF
    }

    static func adler32(_ bytes: [UInt8]) -> UInt32 {
        var a: UInt32 = 1, b: UInt32 = 0
        for x in bytes { a = (a + UInt32(x)) % 65521; b = (b + a) % 65521 }
        return (b << 16) | a
    }
}

/// An RGB raster with the few primitives the plots need.
struct Canvas {
    let width: Int, height: Int
    var rgb: [UInt8]

    init(width: Int, height: Int) {
        self.width = width; self.height = height
        rgb = [UInt8](repeating: 255, count: width * height * 3)
    }

    mutating func set(_ x: Int, _ y: Int, _ c: (UInt8, UInt8, UInt8)) {
        guard x >= 0 && y >= 0 && x < width && y < height else { return }
        let i = (y * width + x) * 3
        rgb[i] = c.0; rgb[i + 1] = c.1; rgb[i + 2] = c.2
    }

    mutating func fill(_ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int, _ c: (UInt8, UInt8, UInt8)) {
        for y in min(y0, y1)...max(y0, y1) { for x in min(x0, x1)...max(x0, x1) { set(x, y, c) } }
    }

    mutating func line(_ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int, _ c: (UInt8, UInt8, UInt8), thick: Int = 1) {
        let steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        for s in 0...steps {
            let x = x0 + (x1 - x0) * s / steps, y = y0 + (y1 - y0) * s / steps
            fill(x - thick / 2, y - thick / 2, x + (thick - 1) / 2, y + (thick - 1) / 2, c)
        }
    }

    /// Text in the 5×7 font, scaled; unknown characters are drawn as blanks.
    mutating func text(_ s: String, _ x: Int, _ y: Int, scale: Int = 2, _ c: (UInt8, UInt8, UInt8) = (0, 0, 0)) {
        var cx = x
        for ch in s.uppercased() {
            if let rows = Font.glyphs[ch] {
                for (r, row) in rows.enumerated() {
                    for (col, bit) in row.enumerated() where bit == "#" {
                        fill(cx + col * scale, y + r * scale, cx + col * scale + scale - 1, y + r * scale + scale - 1, c)
                    }
                }
            }
            cx += 6 * scale
        }
    }

    static func textWidth(_ s: String, scale: Int = 2) -> Int { s.count * 6 * scale }

    func png() -> Data { PNG.encode(width: width, height: height, rgb: rgb) }
}
