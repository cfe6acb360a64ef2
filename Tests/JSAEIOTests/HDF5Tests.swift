import Foundation
import Testing
import JSAECore
import JSAEIO
import _JSAETestSupport

@Suite("HDF5 I/O")
struct HDF5Tests {
    @Test("float16 on disk is read and converted to Float and Double")
    func float16() throws {
        let path = temporaryDirectory() + "/h.h5"
        var g = SeededGenerator(seed: 3)
        let values = g.normals(24)
        let f = try HDF5File.create(path)
        try f.write("/x", shape: [6, 4], values, stored: .float16)
        f.close()
        let r = try HDF5File.open(path)
        #expect(try r.info("/x").element == .float(bytes: 2))
        let asDouble: [Double] = try r.readFloats("/x").data
        let asFloat: [Float] = try r.readFloats("/x").data
        // Exactly the binary16 rounding of each value, in either precision.
        #expect(asDouble == values.map { Double(Float16($0)) })
        #expect(asFloat == values.map { Float(Float16($0)) })
    }

    @Test("a file reached through a symbolic link is read whole (its size is the target's, not the link's)")
    func symbolicLink() throws {
        let dir = temporaryDirectory()
        var g = SeededGenerator(seed: 4)
        let values = g.normals(4096)
        let f = try HDF5File.create(dir + "/data.h5")
        try f.write("/x", shape: [1024, 4], values)
        f.close()
        try FileManager.default.createSymbolicLink(atPath: dir + "/link.h5", withDestinationPath: dir + "/data.h5")
        let r = try HDF5File.open(dir + "/link.h5")
        let x: [Double] = try r.readFloats("/x").data
        #expect(x == values)
    }

    @Test("float16 rows are widened exactly as HDF5's own conversion widens them, for every bit pattern")
    func float16RowsMatchHDF5Conversion() throws {
        // Every binary16 bit pattern: subnormals, ±0, ±Inf, NaNs and all
        // normals. Written as Floats (each exactly representable in binary16,
        // so HDF5's float -> half conversion on write is exact).
        let patterns = (0..<65_536).map { Float(Float16(bitPattern: UInt16($0))) }
        let path = temporaryDirectory() + "/h16.h5"
        let f = try HDF5File.create(path)
        try f.write("/x", shape: [1_024, 64], patterns, stored: .float16)
        f.close()
        let r = try HDF5File.open(path)
        // readFloats converts through HDF5 (H5Dread to a native type);
        // readRows reads the half bits and widens them itself.
        let hdf5Float: [Float] = try r.readFloats("/x").data
        let hdf5Double: [Double] = try r.readFloats("/x").data
        let rowsFloat: Matrix<Float> = try r.readRows("/x", 0..<1_024)
        let rowsDouble: Matrix<Double> = try r.readRows("/x", 0..<1_024)
        let part: Matrix<Float> = try r.readRows("/x", 511..<514)
        func same<T: BinaryFloatingPoint>(_ a: T, _ b: T) -> Bool { (a.isNaN && b.isNaN) || (a == b && a.sign == b.sign) }
        #expect(zip(hdf5Float, rowsFloat.data).allSatisfy(same))
        #expect(zip(hdf5Double, rowsDouble.data).allSatisfy(same))
        #expect(zip(hdf5Float[(511 * 64)..<(514 * 64)], part.data).allSatisfy(same) && part.count == 3 * 64)
        // The patterns themselves came back (NaNs as NaNs).
        #expect(zip(patterns, rowsFloat.data).allSatisfy(same))
        #expect(rowsFloat.data.filter(\.isNaN).count == 2 * 1_023)

        // Over 1M entries the rows are read in slabs of 2^20 / cols rows
        // (32,768 here): whole, and across the slab boundary.
        // (Each 65,536-entry period shifted by 13, so that no two slabs hold
        // the same values.)
        let long: [Float] = (0..<(40_000 * 32)).map { (i: Int) -> Float in
            let shifted: Int = i * 7 + (i / 65_536) * 13
            return patterns[shifted % 65_536]
        }
        let f2 = try HDF5File.create(path + "2")
        try f2.write("/x", shape: [40_000, 32], long, stored: .float16)
        f2.close()
        let r2 = try HDF5File.open(path + "2")
        let all: [Float] = try r2.readFloats("/x").data
        let whole: Matrix<Float> = try r2.readRows("/x", 0..<40_000)
        let across: Matrix<Float> = try r2.readRows("/x", 32_760..<32_780)
        #expect(whole.count == all.count && zip(all, whole.data).allSatisfy(same))
        #expect(across.count == 20 * 32 && zip(all[(32_760 * 32)..<(32_780 * 32)], across.data).allSatisfy(same))
    }

    @Test("Row hyperslabs equal slices of the whole dataset")
    func hyperslabs() throws {
        let path = temporaryDirectory() + "/h.h5"
        var g = SeededGenerator(seed: 4)
        let m = g.matrix(10, 3)
        let f = try HDF5File.create(path)
        try f.write("/x", m)
        f.close()
        let r = try HDF5File.open(path)
        for range in [0..<1, 2..<7, 9..<10, 0..<10, 4..<4] {
            let part: Matrix<Double> = try r.readRows("/x", range)
            #expect(part == m.rows(range))
        }
        #expect(throws: JSAEError(file: path, "rows 8..<11 are outside /x with 10 rows")) {
            let _: Matrix<Double> = try r.readRows("/x", 8..<11)
        }
    }

    @Test("Attributes round-trip; strings are read from h5py's variable-length UTF-8")
    func attributes() throws {
        let path = temporaryDirectory() + "/a.h5"
        let f = try HDF5File.create(path)
        try f.setAttribute("i", .int(-7))
        try f.setAttribute("d", .double(0.125))
        try f.setAttribute("s", .string("Jacobi-Wörter"))
        try f.setAttribute("i", .int(8))  // replacing
        f.close()
        let r = try HDF5File.open(path)
        #expect(try r.attribute("i") == .int(8))
        #expect(try r.attribute("d") == .double(0.125))
        #expect(try r.attribute("s") == .string("Jacobi-Wörter"))
        #expect(try r.attribute("missing") == nil)
        #expect(r.attributeNames() == ["d", "i", "s"])
        // Written by h5py in the golden generator:
        let golden = try HDF5File.open(try goldenPath("basic", "model.h5"))
        #expect(try golden.stringAttribute("generator") == "golden/generate.py")
        #expect(try golden.intAttribute("k") == 3)
    }

    @Test("A model file round-trips exactly")
    func modelRoundTrip() throws {
        let (model, _) = randomModel(PairShape.sweep[0], seed: 8)
        let path = temporaryDirectory() + "/m.h5"
        try ModelFile.write(model, to: path, attributes: ["note": .string("round trip")])
        let back: JSAEModel<Double> = try ModelFile.read(path)
        #expect(back.saeIn == model.saeIn && back.saeOut == model.saeOut && back.mlp == model.mlp)
    }

    @Test("An atomic write that fails leaves neither the file nor its temporary")
    func atomicFailure() throws {
        let dir = temporaryDirectory()
        struct Boom: Error {}
        #expect(throws: Boom.self) {
            try atomicWrite(to: dir + "/out.h5") { temp in
                let f = try HDF5File.create(temp)
                try f.setAttribute("x", .int(1))
                f.close()
                throw Boom()
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    }

    @Test("Wrong dtype and wrong shape name the dataset")
    func dtypeAndShape() throws {
        let path = temporaryDirectory() + "/bad.h5"
        let f = try HDF5File.create(path)
        try f.writeInts("/ints", shape: [2, 2], [1, 2, 3, 4])
        try f.write("/x", shape: [2, 3], [Double](repeating: 0, count: 6))
        f.close()
        let r = try HDF5File.open(path)
        #expect(throws: JSAEError(file: path, "/ints has dtype int64, expected a floating type (float16, float32 or float64)")) {
            let _: Matrix<Double> = try r.readMatrix("/ints")
        }
        #expect(throws: JSAEError(file: path, "/x has shape [2, 3], expected [*, 4]")) {
            let _: Matrix<Double> = try r.readMatrix("/x", cols: 4)
        }
        #expect(throws: JSAEError(file: path, "missing dataset /nope")) {
            let _: Matrix<Double> = try r.readMatrix("/nope")
        }
    }
}
