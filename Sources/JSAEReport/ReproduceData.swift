import Foundation
import JSAECore
import JSAEIO
import JSAERuns

/// One data file's training rows and evaluated held-out rows.
struct DataSplit {
    let reader: ActivationsReader
    let train: RowSelection
    /// Held-out rows evaluated: the first `evalTokens` of them, in file order.
    let eval: RowSelection
    let heldStart: Int, heldFromFile: Bool
    let special: [Bool]?
    let o: ReproduceOptions

    init(_ r: ActivationsReader, o: ReproduceOptions) throws {
        reader = r; self.o = o
        (heldStart, heldFromFile) = try r.heldOutStart(fallbackFraction: o.heldOutFraction)
        special = try r.specialRows()
        if o.excludeSpecial, let special {
            train = RowSelection(0..<heldStart) { !special[$0] }
            eval = RowSelection(heldStart..<r.tokens) { !special[$0] }.prefix(o.evalTokens ?? Int.max)
        } else {
            train = RowSelection(0..<heldStart)
            eval = RowSelection(heldStart..<r.tokens).prefix(o.evalTokens ?? Int.max)
        }
        guard train.count >= o.batch else {
            throw JSAEError(file: r.path, "has \(train.count) training rows (before row \(heldStart)), fewer than one batch of \(o.batch)")
        }
        guard eval.count >= 1 else { throw JSAEError(file: r.path, "has no held-out rows to evaluate on") }
    }

    /// The shuffling buffer, in batches. A one-pass run (`tokens` set) must
    /// not read a row twice, and refills are whole buffers: the largest
    /// buffer of at most `o.bufferBatches` batches whose refills stay within
    /// the training rows, or an error naming the file when even one batch
    /// per refill runs past them.
    func bufferBatches(_ o: ReproduceOptions) throws -> Int {
        guard let tokens = o.tokens else { return o.bufferBatches }
        let steps = o.trainingSteps
        for b in stride(from: o.bufferBatches, through: 1, by: -1) where ((steps + b - 1) / b) * b * o.batch <= train.count {
            return b
        }
        throw JSAEError(file: reader.path, "has \(train.count) training rows\(o.excludeSpecial && special != nil ? " (special tokens left out)" : ""), "
                        + "fewer than the \(steps * o.batch) that \(tokens) tokens in steps of \(o.batch) need without repeating a row")
    }

    /// Reads the evaluated rows (and writes them as an activations file, the
    /// input of the forward files), with the MLP output y at the true input.
    func evalSet(heldOutFile: String, processedEmulation: Bool = false) throws -> EvalSet {
        let rowsOf = "\(reader.path): the first \(eval.count) held-out rows from row \(heldStart)"
            + (o.excludeSpecial && special != nil ? ", special-token rows left out" : "")
        return try writeEvalSet(reader: reader, rows: eval, rowsOf: rowsOf, mlp: nil, heldOutFile: heldOutFile, processedEmulation: processedEmulation)
    }

    func facts(_ e: EvalSet) -> DataFacts {
        // Norms of held-out special and ordinary rows: why they are left out.
        var normSpecial: Double? = nil, normOther: Double? = nil
        if let special, let x: Matrix<Float> = try? reader.x(heldStart..<min(reader.tokens, heldStart + 65_536)) {
            var s = (0.0, 0), n = (0.0, 0)
            for r in 0..<x.rows {
                let norm = Double(x.row(r).reduce(Float(0)) { $0 + $1 * $1 }).squareRoot()
                if special[heldStart + r] { s = (s.0 + norm, s.1 + 1) } else { n = (n.0 + norm, n.1 + 1) }
            }
            if s.1 > 0 { normSpecial = s.0 / Double(s.1) }
            if n.1 > 0 { normOther = n.0 / Double(n.1) }
        }
        let excluded = special.map { flags in o.excludeSpecial ? flags.reduce(0) { $0 + ($1 ? 1 : 0) } : 0 }
        let f = reader.file
        let attr = { (k: String) -> String? in (try? f.stringAttribute(k)) ?? nil }
        let intAttr = { (k: String) -> Int? in (try? f.intAttribute(k)) ?? nil }
        let std: Double? = (try? f.doubleAttribute("randomization_std")) ?? nil
        let split = heldFromFile ? "document-level (heldout_start_row in the file)" : "last \(Int(o.heldOutFraction * 100))% of the rows (the file records no split)"
        let meanSquare = squaredDistance(e.y, Matrix(rows: e.y.rows, cols: e.y.cols)) / Double(max(e.y.count, 1))
        var facts = DataFacts(file: reader.path, rows: reader.tokens, heldOutStartRow: heldStart, split: split,
                              trainingRows: train.count, evaluatedRows: e.rows.count, specialRowsExcluded: excluded,
                              meanNormSpecial: normSpecial, meanNormOther: normOther, outputMeanSquare: meanSquare,
                              textPackages: attr("text_packages"), sourceModel: attr("source_model"), layer: intAttr("layer"))
        facts.randomizationRule = attr("randomization_rule")
        facts.randomizationStd = std
        facts.maxLength = intAttr("max_length")
        return facts
    }
}
