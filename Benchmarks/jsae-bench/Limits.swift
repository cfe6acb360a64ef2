import ArgumentParser
import CHDF5
import Foundation
import JSAECore
import JSAEIO
import JSAERuns
import JSAECLIOptions

extension JSAEBench {
    static func main() { runWithOneLineErrors(JSAEBench.self, program: "jsae-bench") }

    /// Refuses shapes whose products overflow or whose buffers cannot fit in
    /// memory, before anything is allocated, by the rules every run meets
    /// (`RunRules`): a JSAE pair of this shape in Float, with no shuffling
    /// buffer but x and the MLP (B·d, 2·d·d_mlp, B·d_mlp) beside it.
    func requireFits(_ s: Shape) throws {
        let m = try RunRules.latents(expansion: s.expansion, d: s.d)
        let D = Double(s.d), B = Double(s.batch), H = Double(s.dMlp)
        try RunRules.requireMemory(d: s.d, m: m, saes: 2, batch: s.batch, bufferBatches: 0, scalarBytes: 4,
                                   otherElements: B * D + 2 * D * H + B * H, flags: "--expansion, --batch, --d or --d-mlp")
        try RunRules.requireK(s.k, m: m, d: s.d)
    }

    /// With --activations, d and d_mlp are the file's: a different --d or
    /// --d-mlp is refused rather than reported as the preset's.
    func adoptFileShape(_ s: inout Shape, fileD: Int, mlp: MLP<Float>, path: String) throws {
        if let d, d != fileD { throw JSAEError(file: path, "/x has d = \(fileD) but --d \(d) was given") }
        if let dMlp, dMlp != mlp.dMlp { throw JSAEError(file: path, "/mlp has d_mlp = \(mlp.dMlp) but --d-mlp \(dMlp) was given") }
        s.d = fileD
        s.dMlp = mlp.dMlp
        try requireFits(s)
    }
}
