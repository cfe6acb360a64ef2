import ArgumentParser
import Foundation
import JSAECore
import JSAEReport
import JSAERuns
import JSAECLIOptions

struct ReproduceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reproduce",
        abstract: "Train a JSAE pair and a traditional pair on pre-trained and randomised activations and report the paper's claims.",
        discussion: """
        Writes OUT/report.md (tables next to the paper's figures, a verdict per claim, strongest connections with \
        top tokens in context), OUT/summary.json, PNG plots, and the forward files every number comes from. \
        Trains on the export's training documents (rows before heldout_start_row) and evaluates on held-out ones, \
        [CLS]/[SEP] rows left out unless --include-special. Defaults use the committed sample (all-MiniLM-L6-v2 layer 3 \
        on Debian fortunes) and take a few minutes on 2 cores; --quick is for CI; --full is one pass over 4M tokens per \
        run with a scale curve (reproduce/README.md). Rerunning the same command on OUT resumes it. \
        Exit status: 0 done, 2 bad input or settings, 3 training diverged, 130/143 interrupted (rerun to resume).
        """)

    @Option(help: "Activations of the pre-trained model (with --layers: a path containing {layer}).")
    var pretrained = "reproduce/sample/minilm-l3-pretrained.h5"
    @Option(help: "Activations of the randomised control (same text).") var randomized = "reproduce/sample/minilm-l3-randomized.h5"
    @Option(help: "Report folder. Rerunning the same command on it resumes: finished runs are reused, an interrupted one continues from its checkpoint.")
    var out = "jsae-report"
    @Flag(help: "Smaller SAEs, fewer steps and samples (about 5 minutes on 2 cores).") var quick = false
    @Flag(help: "One pass over 4M distinct training tokens per run at batch 4096, lr 5e-4, expansion 8, with the scale curve (0.25M … 4M) and 65,536 held-out tokens (reproduce/README.md).")
    var full = false
    @Option(help: "Layers to sweep, e.g. 0-5 or 1,3: a JSAE and a traditional pair per layer, pre-trained only; --pretrained names the files with {layer}.")
    var layers: String?
    @OptionGroup var shape: SAEShapeOptions
    @OptionGroup var threadOptions: ThreadOptions
    @OptionGroup var seedOption: SeedOption
    @Option(help: "JSAE λ (default: the paper's rule 0.5·k²/d).") var lambda: Double?
    @Option(help: "Steps per run (ignored with --tokens).") var steps: Int?
    @Option(help: "Training tokens per run: one pass, no token seen twice.") var tokens: Int?
    @Option(help: "Comma-separated training-token counts at which each run is also evaluated (the scale curve).") var snapshots: String?
    @Option(help: "Held-out tokens evaluated (default: all; --full: 65536).") var evalTokens: Int?
    @Flag(help: "Keep special-token rows ([CLS], [SEP]: /text/special) in training and evaluation.") var includeSpecial = false
    @Option(help: "Peak learning rate.") var lr: Double?
    @Option(help: "Sampled connections per run and variant for f_s linearity (default 10000; --quick 320).") var samples: Int?
    @Option(help: "Sampled connections per run and variant for the ablation check (default 100000; --quick 3200).") var ablationSamples: Int?
    @Option(help: "Runs trained at the same time, each on --threads / --runs-at-once threads (default: 2 when there are 2 threads or more). A run's numbers depend neither on its thread count nor on the runs beside it.")
    var runsAtOnce: Int?
    @Option(help: "Comma-separated extra λ values trained on the pre-trained data for the sweep, e.g. 0.01,0.5,3.")
    var lambdaSweep: String?
    @Flag(help: "Train nothing: write OUT/plan.json and print, one per line, the command of each run (--only) and then of the report (--report-only), with every setting explicit and every path absolute, to run on other machines that see the same files (docs/cluster.md).")
    var plan = false
    @Option(help: "Train and evaluate only this run of OUT/plan.json (written by --plan) in OUT/runs/RUN, resumable like any run; settings that differ from the plan are refused.")
    var only: String?
    @Flag(help: "Write report.md, summary.json and the plots from the finished runs in OUT; refused, naming them, while any run is unfinished. Trains nothing.")
    var reportOnly = false
    @OptionGroup var slurmOptions: SlurmOptions

    func validate() throws {
        for (name, v) in [("steps", steps), ("samples", samples), ("ablation-samples", ablationSamples), ("tokens", tokens), ("eval-tokens", evalTokens), ("runs-at-once", runsAtOnce)] {
            if let v, v < 1 { throw ValidationError("--\(name) must be at least 1") }
        }
        if quick && full { throw ValidationError("--quick and --full exclude each other") }
        if let lambda { try asValidation { try RunRules.requireLambda(lambda) } }
        if let lambdaSweep {
            guard let values = parseNumbers(lambdaSweep, Double.self) else {
                throw ValidationError("--lambda-sweep takes comma-separated finite numbers >= 0, got \(lambdaSweep)")
            }
            for v in values { try asValidation { try RunRules.requireLambda(v, flag: "--lambda-sweep") } }
        }
        if let snapshots, parseNumbers(snapshots, Int.self).map({ $0.contains { $0 < 1 } }) ?? true {
            throw ValidationError("--snapshots takes comma-separated token counts >= 1, got \(snapshots)")
        }
        if let layers, parseLayers(layers) == nil { throw ValidationError("--layers takes a range like 0-5 or a list like 1,3, got \(layers)") }
        if layers != nil && lambdaSweep != nil { throw ValidationError("--lambda-sweep is not available with --layers") }
        if layers != nil && snapshots != nil { throw ValidationError("--snapshots is not available with --layers (the sweep reports each layer at its end only)") }
        if [plan || slurmOptions.slurm, only != nil, reportOnly].filter({ $0 }).count > 1 {
            throw ValidationError("--plan (or --slurm), --only and --report-only exclude each other")
        }
        if let only, only.isEmpty { throw ValidationError("--only takes a run's name, e.g. jsae-pretrained") }
        if slurmOptions.slurm {
            if let t = threadOptions.threads, let c = slurmOptions.slurmCpus, t != c {
                throw ValidationError("--threads \(t) and --slurm-cpus \(c) differ: a task runs on as many threads as it has CPUs")
            }
            // sbatch expands % in --output, and the scripts name OUT in their lines.
            if out.contains("%") || out.contains("\n") { throw ValidationError("--out with --slurm must not contain % or a line break, got \(out)") }
        }
    }

    func run() throws {
        try reportingErrors {
            var o = ReproduceOptions(pretrained: pretrained, randomized: randomized, outDir: out)
            if quick { o.makeQuick() }
            if full { o.makeFull() }
            if let expansion = shape.expansion { o.expansion = expansion }
            if let k = shape.k { o.k = k }
            o.lambda = lambda
            if let batch = shape.batch { o.batch = batch }
            if let steps { o.steps = steps }
            if let tokens { o.tokens = tokens }
            if let snapshots { o.snapshotTokens = parseNumbers(snapshots, Int.self)! }
            if let evalTokens { o.evalTokens = evalTokens }
            o.excludeSpecial = !includeSpecial
            if let lr { o.lr = lr }
            o.seed = seedOption.seed
            o.threads = threadOptions.apply()
            o.runsAtOnce = runsAtOnce ?? min(2, o.threads)
            if let samples { o.linearitySamples = samples }
            if let ablationSamples { o.ablationSamples = ablationSamples }
            o.lambdaSweep = lambdaSweep.flatMap { parseNumbers($0, Double.self) } ?? []
            let layerList = layers.flatMap(parseLayers)
            let log = { (s: String) in FileHandle.standardError.write(Data((s + "\n").utf8)) }
            if plan || slurmOptions.slurm || only != nil || reportOnly {
                // The commands run elsewhere: every path absolute, so that each means the same file there.
                (o.pretrained, o.randomized, o.outDir) = (absolutePath(o.pretrained), absolutePath(o.randomized), absolutePath(o.outDir))
            }
            if plan || slurmOptions.slurm {
                if slurmOptions.slurm { o.threads = slurmOptions.slurmCpus ?? o.threads }
                try printPlan(o, layers: layerList, log: log)
                return
            }
            let start = Date()
            let stop = StopOnSignals()
            do {
                if let only {
                    let r = try reproduceOne(o, layers: layerList, run: only, shouldStop: { stop.stopped }, log: log)
                    print(String(format: "%@: |J|>0.01 %.1f%%, EV in %.3f out %.3f; %@/runs/%@ (%d s)", r.name, 100 * r.headlineShare,
                                 r.metrics.explainedVarianceIn, r.metrics.explainedVarianceOut, o.outDir, r.name, Int(Date().timeIntervalSince(start))))
                    return
                }
                if reportOnly { try requireFinishedRuns(o, layers: layerList) }
                if let layers {
                    let s = try reproduceLayers(o, layers: layerList!, pattern: o.pretrained, provenance: runProvenance(),
                                                shouldStop: { stop.stopped }, log: log)
                    for l in s.layers {
                        let a = l.jsae.headlineShare, b = l.traditional.headlineShare
                        print(String(format: "layer %d: |J|>0.01 JSAE %.1f%%, traditional %.1f%%, %.1f×", l.layer, 100 * a, 100 * b, b / max(a, 1e-12)))
                    }
                } else {
                    let s = try reproduce(o, provenance: runProvenance(), shouldStop: { stop.stopped }, log: log)
                    for v in s.verdicts + (s.trends ?? []) { print(v) }
                }
            } catch let e as ReproduceInterrupted {
                log("jsae: \(e.description); run the same command again to resume")
                throw ExitCode(128 + stop.signal)
            }
            print("report: \(o.outDir)/report.md (\(Int(Date().timeIntervalSince(start))) s)")
        }
    }

    /// --plan (and --slurm): plan.json, the commands on stdout, the batch scripts.
    func printPlan(_ o: ReproduceOptions, layers: [Int]?, log: (String) -> Void) throws {
        let planned = try writeReproductionPlan(o, layers: layers, log: log)
        let commands = PlanCommands(o, layers: layers, names: planned.names)
        let slurmDir = slurmOptions.slurm ? try writeSlurmFiles(commands, planned: planned, outDir: o.outDir, slurm: slurmOptions, cpus: o.threads) : nil
        print("# \(o.outDir)/plan.json: \(planned.names.count) runs. Run each command below once, in any order and on any machine that sees these paths,")
        print("# as many at a time as there are machines; a stopped run resumes when its command runs again. Each run uses \(o.threads) thread\(o.threads == 1 ? "" : "s") "
              + "and about \(Int((planned.memoryBytes / 1_048_576).rounded(.up))) MiB (the estimate of docs/cluster.md).")
        for r in commands.runs { print(PlanCommands.line(r.arguments)) }
        print("# Then, once every run has finished, the report:")
        print(PlanCommands.line(commands.report))
        if let slurmDir { print("# Slurm: \(slurmDir)/submit.sh submits the runs as one array job and the report after them; logs in \(slurmDir)/logs") }
    }
}

/// The command line, commit and machine, for the report's provenance.
func runProvenance() -> [String: String] {
    var p: [String: String] = [:]
    p["command"] = CommandLine.arguments.map { $0.contains(" ") ? "'\($0)'" : $0 }.joined(separator: " ")
    let git = Process()
    git.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    git.arguments = ["git", "rev-parse", "HEAD"]
    let pipe = Pipe()
    git.standardOutput = pipe; git.standardError = FileHandle.nullDevice
    if (try? git.run()) != nil {
        git.waitUntilExit()
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if git.terminationStatus == 0 && !out.isEmpty { p["git commit"] = out }
    }
    p["machine"] = "\(Parallel.cpuModel), \(Parallel.onlineCores) cores, OpenBLAS core \(BLASThreads.coreName)"
    p["date"] = ISO8601DateFormatter().string(from: Date())
    return p
}

func parseNumbers<N: LosslessStringConvertible>(_ s: String, _: N.Type) -> [N]? {
    let parts = s.split(separator: ",", omittingEmptySubsequences: false).map { N(String($0).trimmingCharacters(in: .whitespaces)) }
    return parts.contains { $0 == nil } || parts.isEmpty ? nil : parts.map { $0! }
}

/// "0-5" or "1,3,5": distinct layers in [0, 1000), ascending.
func parseLayers(_ s: String) -> [Int]? {
    var layers: [Int] = []
    for part in s.split(separator: ",", omittingEmptySubsequences: false) {
        let ends = part.split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
        guard (1...2).contains(ends.count), let a = ends.first!, let b = ends.last!, a >= 0, b < 1000, a <= b else { return nil }
        layers += Array(a...b)
    }
    let unique = Array(Set(layers)).sorted()
    return unique.count == layers.count && !unique.isEmpty ? unique : nil
}
