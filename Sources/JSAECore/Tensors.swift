/// The four trainable tensors of one TopK SAE as named views into one flat
/// allocation, as llm.c's `ParameterTensors` (docs/jsae-spec.md, "Shapes and
/// names"). One type holds an SAE's parameters, their gradients and both Adam
/// moments, so the optimizer and clipping are flat loops over one buffer and
/// the names, shapes and order live only here:
///
///     W_enc [d, m] | b_enc [m] | W_dec [m, d] | b_dec [d]
///
/// Value semantics (copy-on-write). Hot paths take raw pointers for the
/// duration of a step with `pointer(_:)` and `mutablePointer(_:)`; a copy made
/// while such a pointer is in use gets its own storage on its first mutation.
public struct SAETensors<T: JSAEScalar>: Sendable {
    /// File-format names, in storage order.
    public enum Name: String, CaseIterable, Sendable {
        case wEnc = "W_enc", bEnc = "b_enc", wDec = "W_dec", bDec = "b_dec"
    }

    public let d: Int
    public let m: Int
    private var storage: FlatStorage<T>

    /// All four tensors, zero.
    public init(d: Int, m: Int) {
        precondition(d >= 0 && m >= 0)
        self.d = d; self.m = m
        storage = FlatStorage(count: 2 * d * m + m + d)
    }

    /// Entries in all four tensors.
    public var count: Int { storage.count }

    /// Where tensor `name` lives in the flat buffer.
    public func range(_ name: Name) -> Range<Int> {
        switch name {
        case .wEnc: return 0..<(d * m)
        case .bEnc: return (d * m)..<(d * m + m)
        case .wDec: return (d * m + m)..<(2 * d * m + m)
        case .bDec: return (2 * d * m + m)..<(2 * d * m + m + d)
        }
    }

    public func shape(_ name: Name) -> [Int] {
        switch name {
        case .wEnc: return [d, m]
        case .bEnc: return [m]
        case .wDec: return [m, d]
        case .bDec: return [d]
        }
    }

    /// A copy of one tensor's values (files, tests); hot paths use pointers.
    public subscript(_ name: Name) -> [T] {
        get { let r = range(name); return Array(UnsafeBufferPointer(start: storage.p + r.lowerBound, count: r.count)) }
        set {
            let r = range(name)
            precondition(newValue.count == r.count, "\(name.rawValue): \(newValue.count) values for shape \(shape(name))")
            let p = mutablePointer(name)
            newValue.withUnsafeBufferPointer { p.update(from: $0.baseAddress!, count: r.count) }
        }
    }

    /// Read-only pointer to tensor `name`, valid while this value is alive and unmodified.
    func pointer(_ name: Name) -> UnsafePointer<T> { UnsafePointer(storage.p + range(name).lowerBound) }

    /// Writable pointer to tensor `name` (storage made unique first).
    mutating func mutablePointer(_ name: Name) -> UnsafeMutablePointer<T> {
        makeUnique()
        return storage.p + range(name).lowerBound
    }

    /// Writable pointer to the whole flat buffer, for flat loops.
    mutating func mutableBase() -> UnsafeMutablePointer<T> { makeUnique(); return storage.p }
    var base: UnsafePointer<T> { UnsafePointer(storage.p) }

    /// Every entry in storage (file) order, read in place: no copy of the
    /// tensors, which at m = 16384 are 32 MiB each.
    package func withFlatValues<R>(_ body: (UnsafeBufferPointer<T>) throws -> R) rethrows -> R {
        try body(UnsafeBufferPointer(start: storage.p, count: count))
    }

    /// Sets every entry to zero (in place, no allocation when unique).
    public mutating func zero() { mutableBase().update(repeating: 0, count: count) }

    /// self += s · other, entry by entry. Prespecialised: its caller, the
    /// forward's gradient sum over chunks, is in another module
    /// (`Parallel.swift` says why); nothing in this module calls it.
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public mutating func add(_ other: SAETensors<T>, scaledBy s: T) {
        precondition(other.count == count)
        let p = mutableBase(), o = other.base
        for i in 0..<count { p[i] += s * o[i] }
    }

    private mutating func makeUnique() {
        if !isKnownUniquelyReferenced(&storage) { storage = storage.copy() }
    }

    public func converted<U: JSAEScalar>(to: U.Type = U.self) -> SAETensors<U> {
        var out = SAETensors<U>(d: d, m: m)
        let dst = out.mutableBase()
        for i in 0..<count { dst[i] = U(storage.p[i]) }
        return out
    }

    // MARK: Matrix-shaped copies (files, tests, reports)

    public var wEnc: Matrix<T> {
        get { Matrix(rows: d, cols: m, data: self[.wEnc]) }
        set { precondition(newValue.rows == d && newValue.cols == m); self[.wEnc] = newValue.data }
    }
    public var bEnc: [T] { get { self[.bEnc] } set { self[.bEnc] = newValue } }
    public var wDec: Matrix<T> {
        get { Matrix(rows: m, cols: d, data: self[.wDec]) }
        set { precondition(newValue.rows == m && newValue.cols == d); self[.wDec] = newValue.data }
    }
    public var bDec: [T] { get { self[.bDec] } set { self[.bDec] = newValue } }
}

extension SAETensors: Equatable {
    public static func == (a: SAETensors, b: SAETensors) -> Bool {
        a.d == b.d && a.m == b.m && (a.storage === b.storage || (0..<a.count).allSatisfy { a.storage.p[$0] == b.storage.p[$0] })
    }
}

/// The heap buffer behind `SAETensors`: one allocation, freed with the last reference.
final class FlatStorage<T: JSAEScalar>: @unchecked Sendable {
    // @unchecked: mutated only through SAETensors after a uniqueness check.
    let p: UnsafeMutablePointer<T>
    let count: Int
    init(count: Int) {
        self.count = count
        p = allocateZeroed(count)
    }
    /// A copy, written once (not zeroed first).
    private init(copying other: FlatStorage<T>) {
        count = other.count
        p = allocateStorage(count)
        p.initialize(from: other.p, count: count)
    }
    func copy() -> FlatStorage<T> { FlatStorage(copying: self) }
    deinit { p.deallocate() }
}
