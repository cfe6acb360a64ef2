import ArgumentParser
import Foundation
import JSAECore

extension JacobianOrder: ExpressibleByArgument {}

/// `--compare-jacobian`: the library's Jacobian settings (batch order,
/// default chunk) A/B against the run's `--jacobian-order` and
/// `--jacobian-chunk` inside one process, on one training state. Steps
/// alternate in A B B A blocks, so both see the same machine of the moment
/// and index sets from the same parameters; each step's Jacobian phases are
/// timed by its own phase timer. The result is per side the median of each
/// phase, and the median over pairs of the ratio variant / library.
struct JacobianComparison {
    struct Sample { var forward = 0.0, backward = 0.0, step = 0.0, stepCPU = 0.0 }
    let names: (library: String, variant: String)
    var library: [Sample] = [], variant: [Sample] = []
    /// Distinct rows of wd1 and of w2eᵀ the chunks gather, summed over
    /// chunks, per order, on the first batch: the rows a kernel that reused
    /// every row within a chunk would read.
    var chunkRows: [JacobianOrder: Int] = [:]
    /// The same for chunks built greedily (`greedyChunks`), not timed: how
    /// much reuse an order chosen for it could find in these index sets.
    var greedyChunkRows = 0
    var rowsPerBatch = 0, distinctRowsInBatch = 0, chunk = 0

    init(names: (library: String, variant: String)) { self.names = names }

    mutating func add(_ s: Sample, variant isVariant: Bool) {
        if isVariant { variant.append(s) } else { library.append(s) }
    }

    /// Gathers of both orders' chunks over one batch's index sets.
    mutating func countRows(k1: [Int], k2: [Int], tokens: Int, k: Int, m: Int, chunk: Int) {
        self.chunk = chunk
        rowsPerBatch = 2 * tokens * k
        distinctRowsInBatch = Set(k1).count + Set(k2).count
        var order = [Int](repeating: 0, count: tokens), keys = [UInt64](repeating: 0, count: tokens)
        k1.withUnsafeBufferPointer { p1 in k2.withUnsafeBufferPointer { p2 in
            sharedLatentOrder(k1: p1.baseAddress!, k2: p2.baseAddress!, tokens: tokens, k: k, m: m, order: &order, keys: &keys)
        } }
        func rows(_ visit: [Int]) -> Int {
            var rows = 0
            for start in stride(from: 0, to: tokens, by: chunk) {
                let toks = visit[start..<min(start + chunk, tokens)]
                rows += Set(toks.flatMap { k1[$0 * k..<($0 + 1) * k] }).count + Set(toks.flatMap { k2[$0 * k..<($0 + 1) * k] }).count
            }
            return rows
        }
        chunkRows[.batch] = rows(Array(0..<tokens))
        chunkRows[.sharedLatents] = rows(order)
        greedyChunkRows = rows(Self.greedyChunks(k1: k1, k2: k2, tokens: tokens, k: k, m: m, chunk: chunk))
    }

    /// Chunks built greedily: each starts at the first unvisited token and
    /// grows by the unvisited token that shares the most rows (K1 rows of
    /// wd1, K2 rows of w2eᵀ) with the chunk so far, ties to the lower token.
    static func greedyChunks(k1: [Int], k2: [Int], tokens B: Int, k: Int, m: Int, chunk: Int) -> [Int] {
        func rows(_ b: Int) -> [Int] { Array(k1[b * k..<(b + 1) * k]) + k2[b * k..<(b + 1) * k].map { m + $0 } }
        var users = [[Int]](repeating: [], count: 2 * m)
        for b in 0..<B { for r in rows(b) { users[r].append(b) } }
        var used = [Bool](repeating: false, count: B), inChunk = [Bool](repeating: false, count: 2 * m)
        var score = [Int](repeating: 0, count: B), order: [Int] = [], first = 0
        while order.count < B {
            while used[first] { first += 1 }
            var t = first, touched: [Int] = [], candidates = Set<Int>()
            for _ in 0..<chunk {
                used[t] = true; order.append(t)
                for r in rows(t) where !inChunk[r] {
                    inChunk[r] = true; touched.append(r)
                    for u in users[r] where !used[u] { score[u] += 1; candidates.insert(u) }
                }
                candidates.remove(t)
                guard order.count < B else { break }
                if let best = candidates.max(by: { (score[$0], -$0) < (score[$1], -$1) }) { t = best } else {
                    while used[first] { first += 1 }
                    t = first
                }
            }
            for u in candidates { score[u] = 0 }
            for r in touched { inChunk[r] = false }
        }
        return order
    }

    func table(forwardLimitMs: Double?, backwardLimitMs: Double?, perTokenForwardMs: Double?, perTokenBackwardMs: Double?) -> String {
        let a = library, b = variant
        func med(_ s: [Sample], _ f: (Sample) -> Double) -> Double { median(s.map(f)) * 1000 }
        func ratio(_ f: (Sample) -> Double) -> Double { median(zip(a, b).map { f($1) / f($0) }) }
        func spread(_ f: (Sample) -> Double) -> String {
            let r = zip(a, b).map { f($1) / f($0) }.sorted()
            return r.isEmpty ? "-" : String(format: "%.3f–%.3f", r.first!, r.last!)
        }
        func x(_ ms: Double, _ limit: Double?) -> String { limit.map { String(format: "%.1f×", ms / $0) } ?? "-" }
        var rows = [["", "A: \(names.library), ms", "B: \(names.variant), ms", "B/A (median of pairs)", "B/A range", "× FLOP/byte limit A / B", "× per-token bytes A / B"]]
        let parts: [(String, (Sample) -> Double, Double?, Double?)] = [
            ("Jacobian forward", \.forward, forwardLimitMs, perTokenForwardMs),
            ("Jacobian backward", \.backward, backwardLimitMs, perTokenBackwardMs),
            ("step (wall)", \.step, nil, nil), ("step (CPU)", \.stepCPU, nil, nil)]
        for (name, f, limit, perToken) in parts {
            let ma = med(a, f), mb = med(b, f)
            rows.append([name, String(format: "%.1f", ma), String(format: "%.1f", mb), String(format: "%.3f", ratio(f)), spread(f),
                         "\(x(ma, limit)) / \(x(mb, limit))", "\(x(ma, perToken)) / \(x(mb, perToken))"])
        }
        var out = "Jacobian settings, \(a.count) steps each, alternated A B B A\n\n"
        out += markdownTable(rows)
        if rowsPerBatch > 0 {
            out += "\nRows gathered per batch (wd1 and w2eᵀ): \(rowsPerBatch) per token as written; "
            out += "distinct in the batch: \(distinctRowsInBatch); distinct per \(chunk)-token chunk, summed: "
            out += "batch order \(chunkRows[.batch] ?? 0), shared-latents \(chunkRows[.sharedLatents] ?? 0), "
            out += "greedy chunks (not timed) \(greedyChunkRows)\n"
        }
        return out
    }
}

func markdownTable(_ rows: [[String]]) -> String {
    var out = ""
    for (i, r) in rows.enumerated() {
        out += "| " + r.joined(separator: " | ") + " |\n"
        if i == 0 { out += "|" + String(repeating: "---|", count: r.count) + "\n" }
    }
    return out
}
