import ArgumentParser
import Foundation
import JSAEIO

extension ForeignExport.Format: ExpressibleByArgument {}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Export a model file's pair as SAELens 6 folders or as the authors' pair folder.",
        discussion: """
        --format saelens writes OUT/sae_in and OUT/sae_out (SAELens 6, architecture topk); --format jsae-pair \
        writes the authors' folder with the MLP (their SAEPair.load_from_pretrained reads it). Tensors are F32 \
        when every value is a float exactly, else F64. OUT must not exist: it is built under OUT.tmp-PID and \
        renamed into place.
        Exit status: 0 done, 2 bad input or an existing OUT (nothing is written).
        """)

    @Argument(help: "A model file (kind = model or checkpoint).")
    var model: String

    @Option(help: "saelens or jsae-pair.")
    var format: ForeignExport.Format

    @Option(help: "The folder to create.")
    var out: String

    func run() throws {
        try reportingErrors {
            let files = try ForeignExport.export(modelPath: model, format: format, to: out)
            print("wrote \(out): \(files.joined(separator: ", "))")
        }
    }
}
