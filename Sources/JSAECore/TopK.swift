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
/// So a part that starts with fewer than k values held first takes a
/// floor: cut into k equal blocks, the least of the blocks' maxima. Those
/// k maxima are entries of the part at or above it, so no entry below it
/// can be among the k largest, and skipping such entries (8 at a time
/// while filling, as above once full) changes no decision that matters:
/// the held values are always the k largest of what has been kept, under
/// the order (value descending, index ascending), and nothing skipped is.
/// With NaN in the part or among the held values that reasoning fails
/// (NaN compares false), and the part is scanned plainly. In Float at the
/// Pythia-70m shape this phase ran 0.78× as long (docs/performance.md);
/// taking the k-th largest of 64- or 128-entry group maxima instead cost
/// more than it saved, in their own inserts.
/// - h: [m], outIndices: [k], outValues: [k] (the raw h at the chosen indices)
@inlinable
package func topKRow<T: JSAEScalar>(_ h: UnsafePointer<T>, m: Int, k: Int,
                                   outIndices: UnsafeMutablePointer<Int>,
                                   outValues: UnsafeMutablePointer<T>) {
    precondition(k >= 1 && k <= m)
    topKRow(h, count: m, firstIndex: 0, k: k, outIndices: outIndices, outValues: outValues)
}

/// The least block length for which `topKRow` takes its floor. The
/// Pythia-70m parts' blocks are 256 long (8192 / k = 32); shorter blocks
/// give lower floors, which skip less for the same pass.
@usableFromInline let topKFloorBlock = 64

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
    // While fewer than k values are held, entries not above `skip` (just
    // under the floor, so that entries equal to it are kept) are passed
    // over; nil where the floor does not apply.
    var skip: T? = nil
    if filled < k && m / k >= topKFloorBlock && !(0..<filled).contains(where: { outValues[$0].isNaN }),
       let floor = T.minOfBlockMaxima(h, count: m, blocks: k), floor > -T.infinity {
        skip = floor.nextDown
    }
    var j = 0
    while j < m {
        var end = j + 1
        if filled == k && j + 8 <= m {
            if !T.anyOfEight(h + j, greaterThan: outValues[k - 1]) { j += 8; continue }
            end = j + 8
        } else if let s = skip, j + 8 <= m {
            if !T.anyOfEight(h + j, greaterThan: s) { j += 8; continue }
            end = j + 8
        }
        while j < end {
            let v = h[j]
            if filled == k {
                // Strictly greater only: an equal value with a higher index loses.
                if !(v > outValues[k - 1]) { j += 1; continue }
                filled -= 1
            } else if let s = skip, !(v > s) {
                j += 1; continue
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
