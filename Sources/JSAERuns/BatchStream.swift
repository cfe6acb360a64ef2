import Foundation
import JSAECore
import JSAEIO

/// Training batches streamed from an `activations` file through a shuffling
/// buffer, as SAELens does, so T may exceed memory.
///
/// Refill r reads the R = bufferBatches · B rows starting at row r·R (mod T,
/// wrapping into the next epoch) and shuffles them with a generator derived
/// from (seed, r); step s takes batch s mod bufferBatches of refill
/// s / bufferBatches. The batch of any step is therefore a pure function of
/// (file, seed, B, bufferBatches, s): a resumed run sees exactly the batches
/// an uninterrupted run would, without saving the buffer.
public final class BatchStream<T: JSAEScalar> {
    public let reader: ActivationsReader
    public let batch: Int
    public let bufferBatches: Int
    public let seed: UInt64
    /// Use the file's /y as the output SAE's target when present.
    public let useY: Bool
    /// The rows trained on, in file order (default: all of /x). Positions
    /// below count rows of this selection, not of the file.
    public let rows: RowSelection

    private var loadedRefill = -1
    private var bufferX = Matrix<T>(rows: 0, cols: 0)
    private var bufferY: Matrix<T>? = nil

    public init(reader: ActivationsReader, batch: Int, bufferBatches: Int, seed: UInt64, useY: Bool = true,
                rows: RowSelection? = nil) {
        precondition(batch >= 1 && bufferBatches >= 1)
        self.reader = reader; self.batch = batch; self.bufferBatches = bufferBatches; self.seed = seed
        self.useY = useY && reader.hasY
        self.rows = rows ?? RowSelection(0..<reader.tokens)
        precondition(self.rows.count >= 1 && self.rows.bounds.upperBound <= reader.tokens)
    }

    /// Selection positions the first `steps` steps read (refills are whole,
    /// so this rounds up to a whole buffer): at most `rows.count` means no
    /// row is seen twice.
    public func positionsRead(steps: Int) -> Int {
        ((steps + bufferBatches - 1) / bufferBatches) * bufferTokens
    }

    public var bufferTokens: Int { batch * bufferBatches }

    /// The batch for optimizer step `step`: x [B, d] and, when the file has
    /// it, the model's own MLP output y [B, d].
    public func batch(forStep step: Int) throws -> (x: Matrix<T>, y: Matrix<T>?) {
        let refill = step / bufferBatches, slot = step % bufferBatches
        if refill != loadedRefill { try load(refill) }
        let rows = (slot * batch)..<((slot + 1) * batch)
        return (bufferX.rows(rows), bufferY?.rows(rows))
    }

    private func load(_ refill: Int) throws {
        let R = bufferTokens, Tn = rows.count, d = reader.d
        var x = Matrix<T>(rows: R, cols: d)
        var y: Matrix<T>? = useY ? Matrix<T>(rows: R, cols: d) : nil
        var filled = 0
        var pos = Int((UInt64(refill) &* UInt64(R)) % UInt64(Tn))
        while filled < R {
            let n = min(R - filled, Tn - pos)
            let part: Matrix<T> = try rows.read(pos..<(pos + n), of: "/x", from: reader)
            x.data.replaceSubrange((filled * d)..<((filled + n) * d), with: part.data)
            if y != nil {
                let py: Matrix<T> = try rows.read(pos..<(pos + n), of: "/y", from: reader)
                y!.data.replaceSubrange((filled * d)..<((filled + n) * d), with: py.data)
            }
            filled += n
            pos = (pos + n) % Tn
        }
        // Fisher–Yates over rows, from the refill's own generator.
        var g = SeededGenerator.stream(seed: seed, index: UInt64(refill))
        var perm = Array(0..<R)
        for i in stride(from: R - 1, to: 0, by: -1) { perm.swapAt(i, Int.random(in: 0...i, using: &g)) }
        bufferX = permuteRows(x, perm)
        bufferY = y.map { permuteRows($0, perm) }
        loadedRefill = refill
    }
}

func permuteRows<T: JSAEScalar>(_ m: Matrix<T>, _ perm: [Int]) -> Matrix<T> {
    var out = Matrix<T>(rows: m.rows, cols: m.cols)
    let d = m.cols
    m.data.withUnsafeBufferPointer { src in
        out.data.withUnsafeMutableBufferPointer { dst in
            for (i, p) in perm.enumerated() {
                (dst.baseAddress! + i * d).update(from: src.baseAddress! + p * d, count: d)
            }
        }
    }
    return out
}
