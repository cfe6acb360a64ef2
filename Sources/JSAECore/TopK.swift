/// TopK selection over one row of pre-activations.
///
/// Rule: the k largest values of `h`, in descending order; among equal values
/// the lower index comes first (and wins the last place). Deterministic for a
/// given input, independent of thread count or chunking.
///
/// Once k values are held, a value enters only if it is strictly greater
/// than the k-th; most of a row cannot, so the row is scanned 8 entries at
/// a time with one vector comparison against the k-th value, and only
/// blocks with an entry above it are walked one by one. Skipping a block
/// makes exactly the decisions the one-by-one walk would (nothing in it is
/// greater, NaN included), so the result is the same as the plain scan's.
/// At the Pythia-70m shape the scan alone would take a quarter of this
/// phase; the rest is the early inserts, while the k-th held value is low.
/// Taking a floor first (the k-th largest of the maxima of 64- or
/// 128-entry groups, then skipping what lies below it) measured slower,
/// 26–33 ms per SAE step against 25–26: with 128-entry groups the maxima's
/// pass and their own inserts alone took 16.5 ms.
/// - h: [m], outIndices: [k], outValues: [k] (the raw h at the chosen indices)
@inlinable
package func topKRow<T: JSAEScalar>(_ h: UnsafePointer<T>, m: Int, k: Int,
                                   outIndices: UnsafeMutablePointer<Int>,
                                   outValues: UnsafeMutablePointer<T>) {
    precondition(k >= 1 && k <= m)
    topKRow(h, count: m, firstIndex: 0, k: k, outIndices: outIndices, outValues: outValues)
}

/// The same scan over one part of a row: entries firstIndex..<firstIndex +
/// count, at `h`, continuing from the earlier parts' state in outIndices and
/// outValues (which hold the min(k, firstIndex) largest so far, as the scan
/// leaves them). Scanning a row's parts in order is the scan of the row.
@inlinable
package func topKRow<T: JSAEScalar>(_ h: UnsafePointer<T>, count m: Int, firstIndex: Int, k: Int,
                                   outIndices: UnsafeMutablePointer<Int>,
                                   outValues: UnsafeMutablePointer<T>) {
    precondition(k >= 1 && m >= 0 && firstIndex >= 0)
    var filled = min(k, firstIndex)
    var j = 0
    while j < m {
        var end = j + 1
        if filled == k && j + 8 <= m {
            if !T.anyOfEight(h + j, greaterThan: outValues[k - 1]) { j += 8; continue }
            end = j + 8
        }
        while j < end {
            let v = h[j]
            if filled == k {
                // Strictly greater only: an equal value with a higher index loses.
                if !(v > outValues[k - 1]) { j += 1; continue }
                filled -= 1
            }
            // Insert after every value >= v, so ties keep ascending index order.
            var pos = filled
            while pos > 0 && outValues[pos - 1] < v {
                outValues[pos] = outValues[pos - 1]
                outIndices[pos] = outIndices[pos - 1]
                pos -= 1
            }
            outValues[pos] = v
            outIndices[pos] = firstIndex + j
            filled += 1
            j += 1
        }
    }
}

/// The k selected latents of each of B tokens: indices in descending
/// pre-activation order, their raw pre-activations, and post-ReLU values.
public struct SparseCodes<T: JSAEScalar>: Sendable, Equatable {
    public let tokens: Int
    public let k: Int
    /// [B, k] latent indices, row-major.
    public var indices: [Int]
    /// [B, k] raw pre-activations h at `indices` (before the ReLU).
    public var preacts: [T]
    /// [B, k] ReLU(preacts): the latent values (may be 0; so L0 <= k).
    public var values: [T]

    public init(tokens: Int, k: Int) {
        self.tokens = tokens; self.k = k
        indices = [Int](repeating: 0, count: tokens * k)
        preacts = [T](zeros: tokens * k)
        values = [T](zeros: tokens * k)
    }

    /// Codes read back (e.g. from a forward file): the pre-activations are
    /// not stored there, so they are taken to be the values.
    public init(indices: [Int], values: [T], k: Int) {
        precondition(indices.count == values.count && k >= 1 && indices.count % k == 0)
        tokens = indices.count / k; self.k = k
        self.indices = indices; preacts = values; self.values = values
    }

    /// Indices of token b, in order.
    public func indices(ofToken b: Int) -> ArraySlice<Int> { indices[(b * k)..<((b + 1) * k)] }
}
