/// A dense row-major matrix: element (i, j) is `data[i * cols + j]`.
/// A vector is a matrix with one row. Storage is a Swift array, so copies are
/// copy-on-write; the hot paths work through `withUnsafe…` pointers.
public struct Matrix<T: JSAEScalar>: Equatable, Sendable {
    public private(set) var rows: Int
    public private(set) var cols: Int
    public var data: [T]

    public init(rows: Int, cols: Int, repeating value: T = 0) {
        precondition(rows >= 0 && cols >= 0)
        self.rows = rows; self.cols = cols
        // +0 (all-zero bytes) by memset; any other value, -0 included, by copies.
        self.data = value == 0 && value.sign == .plus ? [T](zeros: rows * cols) : [T](repeating: value, count: rows * cols)
    }

    public init(rows: Int, cols: Int, data: [T]) {
        precondition(data.count == rows * cols, "Matrix: \(data.count) values for shape [\(rows), \(cols)]")
        self.rows = rows; self.cols = cols; self.data = data
    }

    public var shape: [Int] { [rows, cols] }
    public var count: Int { data.count }

    @inlinable
    public subscript(i: Int, j: Int) -> T {
        get { data[i * cols + j] }
        set { data[i * cols + j] = newValue }
    }

    /// Row `i` as a new array.
    public func row(_ i: Int) -> [T] { Array(data[(i * cols)..<((i + 1) * cols)]) }

    /// Rows `start..<start+n` as a new matrix.
    public func rows(_ range: Range<Int>) -> Matrix<T> {
        Matrix(rows: range.count, cols: cols, data: Array(data[(range.lowerBound * cols)..<(range.upperBound * cols)]))
    }

    /// The same values in another precision.
    public func converted<U: JSAEScalar>(to: U.Type = U.self) -> Matrix<U> {
        Matrix<U>(rows: rows, cols: cols, data: data.map { U($0) })
    }

    public var transposed: Matrix<T> {
        var t = Matrix(rows: cols, cols: rows)
        for i in 0..<rows { for j in 0..<cols { t.data[j * rows + i] = data[i * cols + j] } }
        return t
    }

    /// True when every entry is finite (no NaN, no ±Inf).
    public var allFinite: Bool { firstNonFinite == nil }

    /// Index of the first non-finite entry, as (row, col), if any.
    public var firstNonFinite: (row: Int, col: Int)? {
        guard let i = data.firstNonFiniteIndex else { return nil }
        return (i / max(cols, 1), i % max(cols, 1))
    }
}

extension Array where Element: JSAEScalar {
    /// Index of the first NaN or ±Inf, if any, through the per-type scan:
    /// `firstIndex(where:)` in a generic function of another module runs
    /// unspecialised, a protocol witness per entry.
    public var firstNonFiniteIndex: Int? { withUnsafeBufferPointer { Element.firstNonFinite(in: $0) } }
}

/// Adds `bias` ([cols]) to every row of m ([rows, cols]).
func addRowBias<T: JSAEScalar>(_ m: UnsafeMutablePointer<T>, _ bias: UnsafePointer<T>, rows: Int, cols: Int) {
    for i in 0..<rows {
        let base = i * cols
        for j in 0..<cols { m[base + j] += bias[j] }
    }
}

extension Matrix {
    /// A matrix whose storage is not zeroed: every entry must be written
    /// before it is read (e.g. by a gemm with beta = 0).
    public static func uninitialised(rows: Int, cols: Int) -> Matrix<T> {
        let data = [T](unsafeUninitializedCapacity: rows * cols) { _, n in n = rows * cols }
        return Matrix(rows: rows, cols: cols, data: data)
    }
}
