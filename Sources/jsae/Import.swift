import ArgumentParser
import Foundation
import JSAECore
import JSAEIO

extension Activation: ExpressibleByArgument {}

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Import an SAE pair trained elsewhere as a model file (kind = model).",
        discussion: """
        Either SOURCE, the authors' pair folder (cfg.json with use_jacobian_loss, sae_weights.safetensors \
        with both SAEs and the MLP), or --sae-in DIR --sae-out DIR, two SAELens (6 or earlier) or sparsify \
        TopK folders, with the MLP from --mlp (an activations or model file). A b_dec subtracted from the \
        encoder's input is folded into b_enc (b_enc − b_dec·W_enc, in double). The model file is written in \
        float64 with the source configs in its root attributes.
        Exit status: 0 done, 2 a file that cannot be imported (nothing is written).
        """)

    @Argument(help: "The authors' pair folder.")
    var source: String?

    @Option(help: "The input SAE's folder (SAELens or sparsify).")
    var saeIn: String?

    @Option(help: "The output SAE's folder (SAELens or sparsify).")
    var saeOut: String?

    @Option(help: "An activations or model file holding the MLP (with --sae-in/--sae-out).")
    var mlp: String?

    @Option(help: "The MLP's nonlinearity, gelu (exact) or gelu_tanh. Default: from the configs' model_name (Pythia: gelu, GPT-2: gelu_tanh), else the --mlp file's.")
    var activation: Activation?

    @Option(help: "The model file to write (atomically).")
    var out: String

    func validate() throws {
        if source != nil {
            guard saeIn == nil && saeOut == nil && mlp == nil else {
                throw ValidationError("give either SOURCE (an authors' pair folder, MLP included) or --sae-in, --sae-out and --mlp, not both")
            }
        } else {
            guard saeIn != nil && saeOut != nil && mlp != nil else {
                throw ValidationError("give SOURCE (an authors' pair folder) or all of --sae-in DIR, --sae-out DIR and --mlp FILE")
            }
        }
    }

    func run() throws {
        try reportingErrors {
            let inputs = [("SOURCE", source), ("--sae-in", saeIn), ("--sae-out", saeOut), ("--mlp", mlp)].compactMap { f, p in p.map { (flag: f, path: $0) } }
            try requireDistinctOutput(out, flag: "--out", from: inputs)
            let imported: ImportedPair
            if let source {
                imported = try ForeignImport.pair(folder: source, activation: activation)
            } else {
                imported = try ForeignImport.pair(saeIn: saeIn!, saeOut: saeOut!, mlpFile: mlp!, activation: activation)
            }
            try ModelFile.write(imported.model, to: out, attributes: imported.attributes)
            let m = imported.model
            print("wrote \(out): d \(m.d), m_in \(m.saeIn.m), m_out \(m.saeOut?.m ?? 0), d_mlp \(m.mlp?.dMlp ?? 0), k \(m.k), "
                  + "activation \(m.mlp?.activation.rawValue ?? "-"), from \(imported.attributes["import_format"].map { "\($0)" } ?? "?")")
        }
    }
}
