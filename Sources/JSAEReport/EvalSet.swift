import Foundation
import JSAECore
import JSAEIO

/// The held-out rows every run of one data file is evaluated on.
struct EvalSet {
    let path: String
    let rows: RowSelection
    let x: Matrix<Float>
    /// The MLP output at the true input.
    let y: Matrix<Float>
    /// The same rows as the authors' analysis scripts feed a pre-trained
    /// model's pair (nil: not pre-trained data, or the file has no /ln_in).
    var processed: ProcessedSet? = nil
}

/// The held-out rows and MLP of TransformerLens' processed model (ProcessedModel).
struct ProcessedSet {
    /// An activations file of x_n and the folded MLP, the input of the processed forward files.
    let path: String
    let x: Matrix<Float>
    let mlp: MLP<Float>
}

/// Reads `rows` of `reader`'s /x and writes them, with the MLP, as an
/// activations file (the input of the forward files), so that every forward
/// file can be remade from the report folder alone; with `processedEmulation`
/// and a file that stores /ln_in, also the processed model's inputs and MLP.
/// `jsae reproduce` and `jsae evaluate` share it, so both evaluate the same way.
/// - mlp: the MLP the pair wraps (nil: the file's /mlp)
/// - rowsOf: which rows these are, recorded in the file
func writeEvalSet(reader: ActivationsReader, rows: RowSelection, rowsOf: String, mlp given: MLP<Float>?,
                  heldOutFile: String, processedEmulation: Bool) throws -> EvalSet {
    let x: Matrix<Float> = try rows.read(0..<rows.count, of: "/x", from: reader)
    let mlp: MLP<Float> = try given ?? MLPFile.read(reader.file, d: reader.d)
    try atomicWrite(to: heldOutFile) { tmp in
        let f = try HDF5File.create(tmp)
        try FileFormat.writeHeader(f, kind: .activations)
        for key in ["source_model", "layer", "hook_in", "hook_out", "text_source"] {
            if let v = try reader.file.attribute(key) { try f.setAttribute(key, v) }
        }
        // The nonlinearity of the MLP written, which a given MLP may not share with the file.
        if given != nil {
            try f.setAttribute("activation", .string(mlp.activation.rawValue))
        } else if let v = try reader.file.attribute("activation") {
            try f.setAttribute("activation", v)
        }
        try f.setAttribute("tokens", .int(rows.count))
        try f.setAttribute("rows_of", .string(rowsOf))
        try f.write("/x", x)
        try f.write("/mlp/W_in", mlp.wIn); try f.write("/mlp/b_in", shape: [mlp.dMlp], mlp.bIn)
        try f.write("/mlp/W_out", mlp.wOut); try f.write("/mlp/b_out", shape: [mlp.d], mlp.bOut)
        try f.finish()
    }
    var set = EvalSet(path: heldOutFile, rows: rows, x: x, y: mlp.forward(x).y)
    // The emulation of the authors' analysis path applies to pre-trained models only (ProcessedModel).
    if processedEmulation, let ln = try ProcessedModel.layerNorm(reader) {
        let path = (heldOutFile as NSString).deletingPathExtension + "-processed.h5"
        let folded = try ProcessedModel.mlp(mlp, w: ln.w, b: ln.b)
        let xn = ProcessedModel.inputs(x, w: ln.w, b: ln.b)
        try atomicWrite(to: path) { tmp in
            let f = try HDF5File.create(tmp)
            try FileFormat.writeHeader(f, kind: .activations)
            try f.setAttribute("tokens", .int(rows.count))
            try f.setAttribute("activation", .string(mlp.activation.rawValue))
            try f.setAttribute("rows_of", .string("\(heldOutFile), as TransformerLens' processed model reads them: "
                                                  + "the LayerNorm output before its affine part, the MLP folded and centred"))
            try f.write("/x", xn)
            try f.write("/mlp/W_in", folded.wIn); try f.write("/mlp/b_in", shape: [folded.dMlp], folded.bIn)
            try f.write("/mlp/W_out", folded.wOut); try f.write("/mlp/b_out", shape: [folded.d], folded.bOut)
            try f.finish()
        }
        set.processed = ProcessedSet(path: path, x: xn, mlp: folded)
    }
    return set
}
