import ArgumentParser
import Foundation
import JSAECore
import JSAEReport
import JSAECLIOptions

struct ReproduceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reproduce",
        abstract: "Train a JSAE pair and a traditional pair on pre-trained and randomised activations and report the paper's claims.",
        discussion: """
        Writes OUT/report.md (tables next to the paper's figures, a verdict per claim, strongest connections with \
        top tokens in context), OUT/summary.json, three PNG plots, and the forward files every number comes from. \
        Defaults use the committed sample (all-MiniLM-L6-v2 layer 3 on Debian fortunes) and take a few minutes on 2 cores; \
        --quick is for CI.
        """)

    @Option(help: "Activations of the pre-trained model.") var pretrained = "reproduce/sample/minilm-l3-pretrained.h5"
    @Option(help: "Activations of the randomised control (same text).") var randomized = "reproduce/sample/minilm-l3-randomized.h5"
    @Option(help: "Report folder.") var out = "jsae-report"
    @Flag(help: "Smaller SAEs, fewer steps and samples (under 2 minutes).") var quick = false
    @OptionGroup var shape: SAEShapeOptions
    @OptionGroup var threadOptions: ThreadOptions
    @OptionGroup var seedOption: SeedOption
    @Option(help: "JSAE λ (default: the paper's rule 0.5·k²/d).") var lambda: Double?
    @Option(help: "Steps per run.") var steps: Int?
    @Option(help: "Peak learning rate.") var lr: Double?
    @Option(help: "Sampled connections per run for f_s linearity and ablation.") var samples: Int?
    @Option(help: "Comma-separated extra λ values trained on the pre-trained data for the sweep, e.g. 0.01,0.5,3.")
    var lambdaSweep: String?

    func validate() throws {
        for (name, v) in [("steps", steps), ("samples", samples)] {
            if let v, v < 1 { throw ValidationError("--\(name) must be at least 1") }
        }
        if let lambda, !(lambda >= 0 && lambda.isFinite) { throw ValidationError("--lambda must be a finite number >= 0") }
        if let lambdaSweep, lambdaSweep.split(separator: ",").contains(where: { !(Double($0).map { $0 >= 0 && $0.isFinite } ?? false) }) {
            throw ValidationError("--lambda-sweep takes comma-separated finite numbers >= 0, got \(lambdaSweep)")
        }
    }

    func run() throws {
        try reportingErrors {
            var o = ReproduceOptions(pretrained: pretrained, randomized: randomized, outDir: out)
            if quick { o.makeQuick() }
            if let expansion = shape.expansion { o.expansion = expansion }
            if let k = shape.k { o.k = k }
            o.lambda = lambda
            if let batch = shape.batch { o.batch = batch }
            if let steps { o.steps = steps }
            if let lr { o.lr = lr }
            o.seed = seedOption.seed
            o.threads = threadOptions.apply()
            if let samples { o.samples = samples }
            o.lambdaSweep = lambdaSweep?.split(separator: ",").compactMap { Double($0) } ?? []
            try requireFits(expansion: o.expansion, batch: o.batch)
            let start = Date()
            let s = try reproduce(o) { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }
            for v in s.verdicts { print(v) }
            print("report: \(out)/report.md (\(Int(Date().timeIntervalSince(start))) s)")
        }
    }
}
