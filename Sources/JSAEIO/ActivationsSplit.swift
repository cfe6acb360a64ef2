import Foundation
import JSAECore

/// The exporter v2 extension of an activations file (docs/file-format.md):
/// the document-level held-out split and the special-token rows. Read and
/// checked before any work; a file without them (exporter v1, or any other
/// producer) gets the documented fallbacks.
extension ActivationsReader {
    /// The first held-out row: the root attribute `heldout_start_row` when
    /// present (it must lie in [1, T)), else the last `fallbackFraction` of
    /// the rows (at least one), as readers of v1 files always did.
    public func heldOutStart(fallbackFraction: Double) throws -> (row: Int, fromFile: Bool) {
        if file.attributeNames().contains("heldout_start_row") {
            guard let h = try file.intAttribute("heldout_start_row") else {
                throw JSAEError(file: path, "attribute heldout_start_row is not an integer")
            }
            guard h >= 1 && h < tokens else {
                throw JSAEError(file: path, "attribute heldout_start_row = \(h) is outside [1, \(tokens)) (/x has \(tokens) rows)")
            }
            return (h, true)
        }
        let held = max(1, Int(Double(tokens) * fallbackFraction))
        return (tokens - held, false)
    }

    /// `/text/special` as one flag per row, or nil when the file has none.
    /// The dataset must have exactly T entries, each 0 or 1.
    public func specialRows() throws -> [Bool]? {
        guard file.exists("/text/special") else { return nil }
        let (_, flags) = try file.readInts("/text/special", shape: [tokens])
        if let i = flags.firstIndex(where: { $0 != 0 && $0 != 1 }) {
            throw JSAEError(file: path, "/text/special[\(i)] = \(flags[i]), expected 0 or 1")
        }
        return flags.map { $0 == 1 }
    }
}

/// A set of rows of an activations file, in file order: a range, or the rows
/// of a range that pass a filter (special-token rows left out), stored as
/// sorted indices.
public struct RowSelection: Sendable, Equatable {
    /// Sorted, distinct row indices; nil: every row of `bounds`.
    private let rows: [Int]?
    public let bounds: Range<Int>

    public init(_ range: Range<Int>) { bounds = range; rows = nil }

    /// The rows of `range` for which `keep` is true.
    public init(_ range: Range<Int>, keep: (Int) -> Bool) {
        bounds = range
        rows = range.filter(keep)
    }

    public var count: Int { rows?.count ?? bounds.count }
    public subscript(i: Int) -> Int { rows.map { $0[i] } ?? bounds.lowerBound + i }

    /// The first `n` rows of the selection.
    public func prefix(_ n: Int) -> RowSelection {
        let n = min(n, count)
        if let rows { return RowSelection(rows: Array(rows.prefix(n)), bounds: bounds.lowerBound..<(n == 0 ? bounds.lowerBound : rows[n - 1] + 1)) }
        return RowSelection(bounds.lowerBound..<(bounds.lowerBound + n))
    }

    private init(rows: [Int], bounds: Range<Int>) { self.rows = rows; self.bounds = bounds }

    /// Selected rows `positions` (positions within the selection, ascending)
    /// read from `reader`'s dataset `name`: one hyperslab over the rows they
    /// span, then the selected ones picked out.
    public func read<T: JSAEScalar>(_ positions: Range<Int>, of name: String, from reader: ActivationsReader) throws -> Matrix<T> {
        guard !positions.isEmpty else { return Matrix(rows: 0, cols: reader.d) }
        let first = self[positions.lowerBound], last = self[positions.upperBound - 1]
        let span: Matrix<T> = name == "/x" ? try reader.x(first..<(last + 1)) : try reader.file.readRows(name, first..<(last + 1))
        if name != "/x", let (r, c) = span.firstNonFinite {
            throw JSAEError(file: reader.path, "\(name) contains \(span[r, c].isNaN ? "NaN" : "Inf") at row \(first + r), column \(c)")
        }
        guard rows != nil else { return span }
        var out = Matrix<T>(rows: positions.count, cols: span.cols)
        let d = span.cols
        span.data.withUnsafeBufferPointer { src in
            out.data.withUnsafeMutableBufferPointer { dst in
                for (i, p) in positions.enumerated() {
                    (dst.baseAddress! + i * d).update(from: src.baseAddress! + (self[p] - first) * d, count: d)
                }
            }
        }
        return out
    }
}
