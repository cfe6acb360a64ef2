import Foundation
import Testing
import JSAECore
import JSAEIO
import JSAERuns
import _JSAETestSupport

/// The exporter v2 extension as readers use it: the held-out split, the
/// special-token rows, and training streams over a subset of the rows.
@Suite("Held-out split, special rows and row selections")
struct SplitTests {
    /// 40 rows, row r = (r, r + 0.5, …): every value names its row.
    func fixture(_ dir: String, heldOut: AttributeValue? = nil, special: [Int]? = nil) throws -> String {
        var x = Matrix<Double>(rows: 40, cols: 3)
        for r in 0..<40 { for c in 0..<3 { x[r, c] = Double(r) + Double(c) / 2 } }
        // A new name per call: HDF5 cannot recreate a file a reader still holds open.
        let path = dir + "/acts-\(UUID().uuidString).h5"
        try writeActivations(x, to: path, y: x)
        let f = try HDF5File.openForUpdate(path)
        if let heldOut { try f.setAttribute("heldout_start_row", heldOut) }
        if let special { try f.writeInts("/text/special", shape: [special.count], special) }
        try f.finish()
        return path
    }

    @Test("heldout_start_row is used when present and valid; the last fraction otherwise")
    func heldOutStart() throws {
        let dir = temporaryDirectory()
        let plain = try ActivationsReader(try fixture(dir))
        #expect(try plain.heldOutStart(fallbackFraction: 0.2) == (32, false))
        #expect(try plain.heldOutStart(fallbackFraction: 0.001) == (39, false))   // at least one row
        let withSplit = try ActivationsReader(try fixture(dir, heldOut: .int(27)))
        #expect(try withSplit.heldOutStart(fallbackFraction: 0.2) == (27, true))
        for bad: AttributeValue in [.int(0), .int(40), .int(-3), .string("27")] {
            let r = try ActivationsReader(try fixture(dir, heldOut: bad))
            #expect(throws: JSAEError.self) { _ = try r.heldOutStart(fallbackFraction: 0.2) }
            do { _ = try r.heldOutStart(fallbackFraction: 0.2) } catch let e as JSAEError {
                #expect(e.description.contains(r.path) && e.description.contains("heldout_start_row"))
            }
        }
    }

    @Test("/text/special must have one 0/1 flag per row")
    func specialRows() throws {
        let dir = temporaryDirectory()
        let flags = (0..<40).map { $0 % 10 == 0 || $0 % 10 == 9 ? 1 : 0 }
        #expect(try ActivationsReader(try fixture(dir, special: flags)).specialRows() == flags.map { $0 == 1 })
        #expect(try ActivationsReader(try fixture(dir)).specialRows() == nil)
        #expect(throws: JSAEError.self) { _ = try ActivationsReader(try fixture(dir, special: Array(flags.prefix(39)))).specialRows() }
        #expect(throws: JSAEError.self) { _ = try ActivationsReader(try fixture(dir, special: flags.map { $0 * 2 })).specialRows() }
    }

    @Test("a row selection reads exactly its rows, of /x and /y")
    func selectionReads() throws {
        let dir = temporaryDirectory()
        let r = try ActivationsReader(try fixture(dir))
        let keep = { (row: Int) in row % 3 != 0 }
        let sel = RowSelection(5..<30, keep: keep)
        let expected = (5..<30).filter(keep)
        #expect(sel.count == expected.count && (0..<sel.count).map { sel[$0] } == expected)
        for positions in [0..<sel.count, 2..<7, 4..<5] {
            for name in ["/x", "/y"] {
                let m: Matrix<Double> = try sel.read(positions, of: name, from: r)
                #expect((0..<m.rows).map { m[$0, 1] } == positions.map { Double(expected[$0]) + 0.5 }, "\(name) \(positions)")
            }
        }
        #expect((0..<sel.prefix(4).count).map { sel.prefix(4)[$0] } == Array(expected.prefix(4)))
        #expect(RowSelection(10..<20).prefix(3) == RowSelection(10..<13))
    }

    @Test("a stream over a selection yields only selected rows, each once per pass, and the full-range stream is unchanged")
    func streamOverSelection() throws {
        let dir = temporaryDirectory()
        let r = try ActivationsReader(try fixture(dir))
        let sel = RowSelection(0..<32) { $0 % 4 != 0 }   // 24 rows
        let s = BatchStream<Double>(reader: r, batch: 4, bufferBatches: 2, seed: 5, rows: sel)
        #expect(s.positionsRead(steps: 6) == 24 && s.positionsRead(steps: 5) == 24 && s.positionsRead(steps: 4) == 16)
        var seen: [Int] = []
        for step in 0..<6 {
            let (x, y) = try s.batch(forStep: step)
            #expect(x == y!)
            seen += (0..<x.rows).map { Int(x[$0, 0]) }
        }
        #expect(seen.sorted() == (0..<32).filter { $0 % 4 != 0 })
        // The default selection is the whole file, as before the selection existed.
        let a = BatchStream<Double>(reader: r, batch: 4, bufferBatches: 3, seed: 9)
        let b = BatchStream<Double>(reader: r, batch: 4, bufferBatches: 3, seed: 9, rows: RowSelection(0..<40))
        for step in 0..<14 { #expect(try a.batch(forStep: step).x == b.batch(forStep: step).x) }
    }
}
