import ArgumentParser
import Foundation
import JSAECore
import JSAERuns
import JSAEReport
import JSAECLIOptions

struct EvaluateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate",
        abstract: "Evaluate one given SAE pair on activations, without training, and write a report.",
        discussion: """
        For any pair: one trained here, or brought in by `jsae import`. Reads MODEL (float64 models are \
        evaluated in float32, like the reproduction) and the held-out rows of ACTIVATIONS (rows from \
        heldout_start_row; all rows when the file records no split, as the report says), special-token rows left \
        out unless --include-special, at most --eval-tokens of them. The MLP is the model's own, else the \
        activations file's /mlp. Writes OUT/report.md (the |J| share at both evaluation points and as the authors \
        count it, reconstruction, f_s linearity and ablation, the processed-model emulation when the file has \
        /ln_in, the German-text unit when it records fortunes-de sources, the strongest connections with tokens \
        in context, provenance), OUT/summary.json, OUT/jacobian-distribution.png, OUT/inputs.json, the evaluated \
        rows in OUT/data/ and the forward files in OUT/forward/. OUT must be absent, empty, or an earlier \
        evaluation of the same model and activations (by content), which is evaluated again; any other folder is \
        refused. Every input is checked before OUT is created. \
        Exit status: 0 done, 2 bad input or settings (one line, nothing written).
        """)

    @Option(help: "The pair's model file (kind = model or checkpoint) with /sae_in and /sae_out.")
    var model: String
    @Option(help: "Activations file (kind = activations) of the layer the pair reads.")
    var activations: String
    @Option(help: "Report folder (absent, empty, or an earlier evaluation of the same inputs).")
    var out: String
    @Option(help: "Rows evaluated at most, the first held-out ones in file order.")
    var evalTokens: Int = 65_536
    @Flag(help: "Keep special-token rows ([CLS], [SEP]: /text/special).")
    var includeSpecial = false
    @Option(help: "Sampled connections per variant for f_s linearity.")
    var samples: Int = 10_000
    @Option(help: "Sampled connections per variant for the ablation check.")
    var ablationSamples: Int = 100_000
    @Option(help: "λ of the reported loss only (default: the paper's rule 0.5·k²/d); nothing is trained.")
    var lambda: Double?
    @OptionGroup var threadOptions: ThreadOptions
    @OptionGroup var seedOption: SeedOption

    func validate() throws {
        for (name, v) in [("eval-tokens", evalTokens), ("samples", samples), ("ablation-samples", ablationSamples)] where v < 1 {
            throw ValidationError("--\(name) must be at least 1, got \(v)")
        }
        if let lambda { try asValidation { try RunRules.requireLambda(lambda) } }
    }

    func run() throws {
        try reportingErrors {
            try requireDistinctOutput(out, flag: "--out", from: [("--model", model), ("--activations", activations)])
            var o = EvaluateOptions()
            o.evalTokens = evalTokens; o.excludeSpecial = !includeSpecial
            o.linearitySamples = samples; o.ablationSamples = ablationSamples
            o.lambda = lambda; o.seed = seedOption.seed
            o.threads = threadOptions.apply()
            let log = { (s: String) in FileHandle.standardError.write(Data((s + "\n").utf8)) }
            let s = try evaluatePair(modelPath: model, activationsPath: activations, outDir: out, options: o, provenance: runProvenance(), log: log)
            let share = s.run.headlineShare
            print(String(format: "|J| > 0.01 at the true input: %.2f%% of %d entries; EV in %.3f, out %.3f", 100 * share,
                         s.run.thresholdCounts?[.trueInput]?.entries ?? 0, s.run.metrics.explainedVarianceIn, s.run.metrics.explainedVarianceOut))
            for v in s.germanVerdict { print(v) }
            print("report: \(out)/report.md")
        }
    }
}
