import Foundation
import Testing
import JSAECore
import JSAEIO
import _JSAETestSupport

/// A file of `header` (its length declared as `declared`, by default its own)
/// followed by `data`, as a hostile writer would make it.
private func rawFile(_ header: String, data: [UInt8] = [], declared: UInt64? = nil, headerBytes: [UInt8]? = nil) -> String {
    let h = headerBytes ?? Array(header.utf8)
    var bytes: [UInt8] = []
    withUnsafeBytes(of: (declared ?? UInt64(h.count)).littleEndian) { bytes += $0 }
    bytes += h + data
    let path = temporaryDirectory("jsae-st") + "/t.safetensors"
    _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
    return path
}

/// Reading `path` throws one JSAEError naming the file and mentioning `mentions`.
private func expectRefused(_ path: String, _ mentions: String, sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        _ = try SafetensorsFile.read(path)
        Issue.record("read \(path) without an error", sourceLocation: sourceLocation)
    } catch let e as JSAEError {
        #expect(e.file == path, "\(e)", sourceLocation: sourceLocation)
        #expect(e.message.contains(mentions), "expected '\(mentions)' in: \(e)", sourceLocation: sourceLocation)
        #expect(!e.description.contains("\n"), sourceLocation: sourceLocation)
    } catch {
        Issue.record("not a JSAEError: \(error)", sourceLocation: sourceLocation)
    }
}

private func entry(_ name: String, _ dtype: String, _ shape: [Int], _ b: Int, _ e: Int) -> String {
    "\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":[\(shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(b),\(e)]}"
}

@Suite("safetensors")
struct SafetensorsTests {
    @Test("F32 and F64 tensors and metadata round-trip bit for bit, in the reference layout")
    func roundTrip() throws {
        var g = SeededGenerator(seed: 11)
        let f64 = g.normals(12) + [0, -0.0, .leastNonzeroMagnitude, .greatestFiniteMagnitude, .infinity, -.infinity]
        let f32 = g.normals(6).map { Double(Float($0)) } + [Double(Float.leastNonzeroMagnitude), -0.0]
        var file = SafetensorsFile(metadata: ["format": "pt", "quote \" and \\ and \n": "é ü 字"])
        file.tensors["b.f64"] = SafetensorsTensor(dtype: .f64, shape: [3, 6], values: f64)
        file.tensors["a.f32"] = SafetensorsTensor(dtype: .f32, shape: [2, 4], values: f32)
        file.tensors["empty"] = SafetensorsTensor(dtype: .f32, shape: [0, 5], values: [])
        file.tensors["scalar"] = SafetensorsTensor(dtype: .f64, shape: [], values: [.pi])
        let path = temporaryDirectory("jsae-st") + "/rt.safetensors"
        try file.write(to: path)
        let back = try SafetensorsFile.read(path)
        #expect(back.metadata == file.metadata)
        #expect(Set(back.tensors.keys) == Set(file.tensors.keys))
        for (name, t) in file.tensors {
            let b = try #require(back.tensors[name])
            #expect(b.dtype == t.dtype && b.shape == t.shape)
            #expect(b.values.map(\.bitPattern) == t.values.map(\.bitPattern), "\(name)")
        }
        // Header padded to a multiple of 8 with spaces; data ordered as the
        // reference writes it (F64 before F32, then by name).
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let n = Int(bytes.prefix(8).withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) })
        #expect(n % 8 == 0)
        let header = String(decoding: bytes[8..<(8 + n)], as: UTF8.self)
        #expect(header.hasPrefix("{\"__metadata__\":"))
        let order = ["\"b.f64\"", "\"scalar\"", "\"a.f32\"", "\"empty\""].map { header.range(of: $0)!.lowerBound }
        #expect(order == order.sorted())
    }

    @Test("F16 and BF16 are widened exactly (hand-computed values)")
    func halfWidening() throws {
        // F16: 0x3C00 = 1.0, 0xC000 = -2.0, 0x3555 = 0.333251953125, 0x0001 = 2^-24, 0x7C00 = +Inf.
        // BF16: 0x3F80 = 1.0, 0xC0A0 = -5.0, 0x3EAB = 0.333984375, 0x0001 = 2^-133.
        let f16: [UInt16] = [0x3C00, 0xC000, 0x3555, 0x0001, 0x7C00]
        let bf16: [UInt16] = [0x3F80, 0xC0A0, 0x3EAB, 0x0001]
        var data: [UInt8] = []
        for v in f16 + bf16 { withUnsafeBytes(of: v.littleEndian) { data += $0 } }
        let header = "{" + entry("h", "F16", [5], 0, 10) + "," + entry("bf", "BF16", [2, 2], 10, 18) + "}"
        let f = try SafetensorsFile.read(rawFile(header, data: data))
        #expect(f.tensors["h"]?.values == [1.0, -2.0, 0.333251953125, 0x1p-24, .infinity])
        #expect(f.tensors["bf"]?.values == [1.0, -5.0, 0.333984375, 0x1p-133])
        #expect(f.tensors["bf"]?.shape == [2, 2] && f.tensors["h"]?.dtype == .f16)
    }

    @Test("a header padded with spaces and no tensors is read")
    func padded() throws {
        let f = try SafetensorsFile.read(rawFile("{\"__metadata__\":{\"a\":\"b\"}}     "))
        #expect(f.tensors.isEmpty && f.metadata == ["a": "b"])
    }

    @Test("hostile headers and offsets are refused with one line naming the file, never a trap")
    func hostile() throws {
        let eight = [UInt8](repeating: 0, count: 8)
        let ok = "{" + entry("a", "F32", [2], 0, 8) + "}"
        expectRefused(rawFile(ok, data: eight, declared: 1_000), "only")                       // length past the file
        expectRefused(rawFile(ok, data: eight, declared: 100_000_001), "100,000,000")          // over 100 MB
        expectRefused(rawFile(ok, data: eight, declared: UInt64.max), "100,000,000")
        expectRefused(rawFile("{" + entry("a", "F32", [2], 0, 8) + "," + entry("b", "F32", [1], 4, 8) + "}", data: eight), "overlaps")
        expectRefused(rawFile("{" + entry("a", "F32", [1], 0, 4) + "," + entry("b", "F32", [1], 8, 12) + "}", data: eight + [0, 0, 0, 0]), "gap")
        expectRefused(rawFile("{" + entry("a", "F32", [1], 4, 8) + "}", data: eight), "gap")
        expectRefused(rawFile("{" + entry("a", "F32", [4], 0, 16) + "}", data: eight), "truncated")     // past the end
        expectRefused(rawFile("{" + entry("a", "F32", [3], 0, 8) + "}", data: eight), "needs 12")        // wrong byte count
        expectRefused(rawFile("{" + entry("a", "F32", [2], 8, 0) + "}", data: eight), "end before")
        expectRefused(rawFile("{" + entry("a", "I64", [1], 0, 8) + "}", data: eight), "dtype \"I64\"")
        expectRefused(rawFile("{" + entry("a", "F32", [4294967296, 4294967296], 0, 8) + "}", data: eight), "overflows")
        expectRefused(rawFile("{" + entry("a", "F64", [1 << 61], 0, 8) + "}", data: eight), "overflows")
        expectRefused(rawFile(ok, data: [0, 0, 0]), "truncated")                                  // truncated data
        expectRefused(rawFile(ok, data: eight + [1]), "trailing")
        expectRefused(rawFile("", headerBytes: [0x7B, 0xFF, 0xFE, 0x7D]), "UTF-8")
        expectRefused(rawFile("{\"a\": [1, 2"), "not valid JSON")
        expectRefused(rawFile("[1, 2]"), "start with '{'")
        expectRefused(rawFile(" {}"), "start with '{'")
        expectRefused(rawFile("{" + entry("a", "F32", [1], 0, 4) + "," + entry("a", "F32", [1], 4, 8) + "}", data: eight), "twice")
        expectRefused(rawFile("{" + entry("a", "F32", [1], 0, 4) + "," + entry("\\u0061", "F32", [1], 4, 8) + "}", data: eight), "twice")
        expectRefused(rawFile("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,4]}}", data: [0, 0, 0, 0]), "twice")
        expectRefused(rawFile("{" + entry("a", "F32", [-1], 0, 0) + "}"), "non-negative")
        expectRefused(rawFile("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", data: [0, 0, 0, 0]), "non-negative")
        expectRefused(rawFile("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", data: [0, 0, 0, 0]), "data_offsets")
        expectRefused(rawFile("{\"__metadata__\":{\"a\":1}}"), "not a string")
        expectRefused(rawFile("{\"a\":3}"), "not a JSON object")
        expectRefused(rawFile("", data: [], declared: 0), "start with '{'")
        // Shorter than the length field itself, and no file at all.
        let short = temporaryDirectory("jsae-st") + "/short.safetensors"
        _ = FileManager.default.createFile(atPath: short, contents: Data([1, 2, 3]))
        expectRefused(short, "too short")
        expectRefused(temporaryDirectory("jsae-st") + "/missing.safetensors", "does not exist")
        expectRefused(temporaryDirectory("jsae-st"), "not a regular file")
    }

    @Test("seeded byte flips and every truncation of a real file: read or refused, never a trap")
    func flipsAndTruncations() throws {
        let src = packageRoot + "/golden/interop/authors/sae_weights.safetensors"
        let good = [UInt8](try Data(contentsOf: URL(fileURLWithPath: src)))
        let n = Int(good.prefix(8).withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) })
        let path = temporaryDirectory("jsae-st") + "/f.safetensors"
        var g = SeededGenerator(seed: 19)
        var refused = 0, read = 0
        func attempt(_ bytes: [UInt8]) {
            try? Data(bytes).write(to: URL(fileURLWithPath: path))
            do { _ = try SafetensorsFile.read(path); read += 1 } catch let e as JSAEError {
                #expect(e.file == path && !e.description.contains("\n"), "\(e)")
                refused += 1
            } catch { Issue.record("not a JSAEError: \(error)") }
        }
        for _ in 0..<400 {
            var b = good
            // Mostly the length field and the header, where the checks are.
            for _ in 0..<Int.random(in: 1...3, using: &g) {
                let i = Bool.random(using: &g) ? Int.random(in: 0..<(8 + n), using: &g) : Int.random(in: 0..<b.count, using: &g)
                b[i] = UInt8.random(in: 0...255, using: &g)
            }
            attempt(b)
        }
        for length in stride(from: 0, to: good.count, by: 7) { attempt(Array(good.prefix(length))) }
        #expect(refused > 100 && read > 0, "refused \(refused), read \(read)")
    }

    @Test("the writer refuses what it cannot write and leaves nothing behind")
    func writerRefuses() throws {
        let dir = temporaryDirectory("jsae-st")
        let bad = SafetensorsFile(tensors: ["h": SafetensorsTensor(dtype: .f16, shape: [1], values: [1])])
        #expect(throws: JSAEError.self) { try bad.write(to: dir + "/h.safetensors") }
        let wrong = SafetensorsFile(tensors: ["w": SafetensorsTensor(dtype: .f32, shape: [2, 2], values: [1])])
        #expect(throws: JSAEError.self) { try wrong.write(to: dir + "/w.safetensors") }
        #expect(throws: JSAEError.self) { try SafetensorsFile().write(to: dir + "/no/such/folder/x.safetensors") }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    }
}
