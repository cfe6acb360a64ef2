import ArgumentParser
import CHDF5
import Foundation
import JSAECore
import JSAEIO
import JSAECLIOptions

extension JSAEBench {
    static func main() { runWithOneLineErrors(JSAEBench.self, program: "jsae-bench") }

    /// Refuses shapes whose products overflow or whose buffers cannot fit in
    /// memory, before anything is allocated. Counted in Double: two SAEs'
    /// parameters, moments and gradients (4 × 2·m·d each), a batch's dense
    /// pre-activations (2·B·m), x and the MLP (B·d, 2·d·d_mlp, B·d_mlp).
    func requireFits(_ s: Shape) throws {
        let (m, o) = s.expansion.multipliedReportingOverflow(by: s.d)
        guard !o else { throw JSAEError("--expansion \(s.expansion) × d \(s.d) overflows a 64-bit integer") }
        let D = Double(s.d), M = Double(m), B = Double(s.batch), H = Double(s.dMlp)
        let bytes = 4 * (2 * 4 * 2 * M * D + 2 * B * M + B * D + 2 * D * H + B * H)
        let limit = Double(ProcessInfo.processInfo.physicalMemory)
        guard bytes <= limit else {
            throw JSAEError(String(format: "d %d, d_mlp %d, m %d, batch %d would need at least %.3g GiB, more than this machine's %.1f GiB: lower --expansion, --batch, --d or --d-mlp",
                                   s.d, s.dMlp, m, s.batch, bytes / 1073741824, limit / 1073741824))
        }
        guard s.k <= m else { throw JSAEError("k = \(s.k) exceeds m = \(m)") }
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
