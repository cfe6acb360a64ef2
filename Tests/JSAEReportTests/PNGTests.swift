import _JSAETestSupport
import Foundation
import Testing
@testable import JSAEReport

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
