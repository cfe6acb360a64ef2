import ArgumentParser
import Foundation
import JSAEIO
import JSAEReport

/// --slurm and its resources: the batch scripts `jsae reproduce --slurm` writes.
struct SlurmOptions: ParsableArguments {
    @Flag(help: "Also write OUT/slurm/runs.sbatch (an array job, one task per run), report.sbatch (after every run succeeded) and submit.sh (implies --plan). OUT, the activations and the jsae executable must be on a filesystem every node shares (docs/cluster.md).")
    var slurm = false
    @Option(help: "Slurm partition of both jobs (default: the cluster's).") var slurmPartition: String?
    @Option(help: "Slurm time limit of each task, in minutes or [D-]HH:MM:SS, at least 3 minutes (default: training tokens at 1,000 tokens/s plus 30 minutes of evaluation). A task stopped by its limit checkpoints and is requeued.")
    var slurmTime: String?
    @Option(help: "CPUs of each task, and the --threads of its command (default: --threads).") var slurmCpus: Int?
    @Option(help: "Memory of each task, e.g. 4000M or 8G (default: the run's estimate, docs/cluster.md).") var slurmMem: String?
    @Option(help: "Slurm account of both jobs.") var slurmAccount: String?

    func validate() throws {
        let given = [("--slurm-partition", slurmPartition), ("--slurm-time", slurmTime), ("--slurm-mem", slurmMem), ("--slurm-account", slurmAccount),
                     ("--slurm-cpus", slurmCpus.map(String.init))].filter { $0.1 != nil }
        if !slurm, let first = given.first { throw ValidationError("\(first.0) needs --slurm") }
        for (flag, v) in [("--slurm-partition", slurmPartition), ("--slurm-account", slurmAccount)] {
            if let v, v.isEmpty || !v.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "_.,-".contains($0)) }) {
                throw ValidationError("\(flag) takes letters, digits and _ . , - only, got '\(v)'")
            }
        }
        if let slurmTime {
            guard let s = SlurmOptions.seconds(slurmTime) else {
                throw ValidationError("--slurm-time takes minutes or [D-]HH:MM:SS as Slurm does, got '\(slurmTime)'")
            }
            if s < 180 { throw ValidationError("--slurm-time \(slurmTime) leaves no time to train: a task is signalled 120 s before its limit; give at least 3 minutes") }
        }
        if let slurmMem, !SlurmOptions.isSize(slurmMem) {
            throw ValidationError("--slurm-mem takes a size like 4000M or 8G, got '\(slurmMem)'")
        }
        if let slurmCpus, slurmCpus < 1 { throw ValidationError("--slurm-cpus must be at least 1, got \(slurmCpus)") }
    }

    /// A Slurm memory size: a whole number from 1, with an optional unit K, M, G or T.
    static func isSize(_ s: String) -> Bool {
        let digits = s.last.map { "KMGT".contains($0) } == true ? s.dropLast() : Substring(s)
        return (1...10).contains(digits.count) && digits.allSatisfy { $0.isASCII && $0.isNumber } && digits.first != "0"
    }

    /// Seconds of a Slurm time limit: "M", "M:S", "H:M:S", "D-H", "D-H:M", "D-H:M:S".
    static func seconds(_ s: String) -> Int? {
        let dayParts = s.split(separator: "-", omittingEmptySubsequences: false)
        guard (1...2).contains(dayParts.count) else { return nil }
        let days = dayParts.count == 2 ? Int(dayParts[0]) : 0
        let fields = dayParts.last!.split(separator: ":", omittingEmptySubsequences: false).map { Int($0) }
        guard let days, days >= 0, days < 10_000, (1...3).contains(fields.count), fields.allSatisfy({ $0 != nil && $0! >= 0 && $0! < 1_000_000 }) else { return nil }
        let f = fields.map { $0! }
        if dayParts.count == 2 {   // D-H, D-H:M, D-H:M:S
            let h = f[0], m = f.count > 1 ? f[1] : 0, sec = f.count > 2 ? f[2] : 0
            return ((days * 24 + h) * 60 + m) * 60 + sec
        }
        switch f.count {   // M, M:S, H:M:S
        case 1: return f[0] * 60
        case 2: return f[0] * 60 + f[1]
        default: return (f[0] * 60 + f[1]) * 60 + f[2]
        }
    }

    /// The default time limit: training at 1,000 tokens/s (below every rate
    /// measured for a JSAE run on one thread at expansion 8, docs/cluster.md)
    /// plus 30 minutes for the final evaluation; at least 10 minutes.
    static func defaultTime(trainingTokens: Int) -> String {
        let minutes = max(10, (trainingTokens + 59_999) / 60_000 + 30)
        return String(format: "%d-%02d:%02d:00", minutes / 1440, (minutes % 1440) / 60, minutes % 60)
    }
}

/// `s` as one shell word: left bare when it holds only characters no shell
/// treats specially, else in single quotes (a quote inside as '\'').
func shellQuote(_ s: String) -> String {
    if !s.isEmpty && s.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "_./=:,+-@%".contains($0)) }) { return s }
    return "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
}

/// `path` made absolute against the current folder, so that a command means
/// the same file on a node that starts elsewhere.
func absolutePath(_ path: String) -> String { URL(fileURLWithPath: path).standardizedFileURL.path }

/// This executable's absolute path (what the printed commands run).
func executablePath() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? absolutePath(CommandLine.arguments[0])
}

/// The arguments of `jsae reproduce` that give `o` exactly: the mode (for
/// the settings that have no flag: buffer, checkpoints, top connections),
/// then every setting that has one, resolved. λ is left out when it is the
/// paper's rule: plan.json records the rule, and the rule gives the same
/// λ from the same file.
func reproduceArguments(_ o: ReproduceOptions, layers: [Int]?) -> [String] {
    var a = ["reproduce"]
    if o.mode == "quick" { a.append("--quick") } else if o.mode == "full" { a.append("--full") }
    if let layers { a += ["--layers", layers.map(String.init).joined(separator: ",")] }
    a += ["--pretrained", o.pretrained]
    if layers == nil { a += ["--randomized", o.randomized] }
    a += ["--out", o.outDir, "--expansion", "\(o.expansion)", "--k", "\(o.k)", "--batch", "\(o.batch)"]
    if let lambda = o.lambda { a += ["--lambda", "\(lambda)"] }
    if let tokens = o.tokens { a += ["--tokens", "\(tokens)"] } else { a += ["--steps", "\(o.steps)"] }
    if !o.snapshotTokens.isEmpty && layers == nil { a += ["--snapshots", o.snapshotTokens.map(String.init).joined(separator: ",")] }
    if let e = o.evalTokens { a += ["--eval-tokens", "\(e)"] }
    if !o.excludeSpecial { a.append("--include-special") }
    a += ["--lr", "\(o.lr)", "--samples", "\(o.linearitySamples)", "--ablation-samples", "\(o.ablationSamples)", "--seed", "\(o.seed)",
          "--threads", "\(o.threads)"]
    if !o.lambdaSweep.isEmpty { a += ["--lambda-sweep", o.lambdaSweep.map { "\($0)" }.joined(separator: ",")] }
    return a
}

/// The plan's commands: one `--only` per run, then `--report-only`.
struct PlanCommands {
    let runs: [(name: String, arguments: [String])]
    let report: [String]

    init(_ o: ReproduceOptions, layers: [Int]?, names: [String]) {
        let base = [executablePath()] + reproduceArguments(o, layers: layers)
        runs = names.map { ($0, base + ["--only", $0]) }
        report = base + ["--report-only"]
    }

    static func line(_ args: [String]) -> String { args.map(shellQuote).joined(separator: " ") }
}

/// OUT/slurm/runs.sbatch, report.sbatch and submit.sh, each written atomically.
func writeSlurmFiles(_ commands: PlanCommands, planned: PlannedRuns, outDir: String, slurm: SlurmOptions, cpus: Int) throws -> String {
    let dir = outDir + "/slurm"
    try createOutputFolder(dir + "/logs")
    let mem = slurm.slurmMem ?? "\(Int((planned.memoryBytes / 1_048_576).rounded(.up)))M"
    let time = slurm.slurmTime ?? SlurmOptions.defaultTime(trainingTokens: planned.trainingTokens)
    var header = ["--cpus-per-task=\(cpus)", "--mem=\(mem)", "--time=\(time)"]
    if let p = slurm.slurmPartition { header.append("--partition=\(p)") }
    if let a = slurm.slurmAccount { header.append("--account=\(a)") }
    let needed = ([commands.report[0], outDir + "/plan.json"] + planned.inputFiles).map(shellQuote).joined(separator: " ")
    // Every task first checks that what it reads is on its node, so that a folder that is not shared fails in one line, not mid-run.
    let check = """
        missing=""
        for f in \(needed); do [ -e "$f" ] || missing="$missing $f"; done
        if [ -n "$missing" ]; then
          echo "$script: error: not on node $(hostname):$missing (OUT, the activations and jsae must be on a filesystem every node shares)" >&2
          exit 2
        fi
        """
    let cases = commands.runs.enumerated().map { i, r in "  \(i)) run=\(r.name); cmd=(\(PlanCommands.line(r.arguments))) ;;" }.joined(separator: "\n")
    let runs = """
        #!/bin/bash
        # One task per run of \(outDir)/plan.json, chosen by SLURM_ARRAY_TASK_ID. 120 s
        # before the time limit (or on preemption) Slurm sends SIGTERM to this
        # script (B:), which forwards it to jsae: jsae checkpoints and exits 143,
        # and the task requeues itself, to resume from that checkpoint.
        #SBATCH --job-name=jsae-runs
        #SBATCH --array=0-\(commands.runs.count - 1)
        \(header.map { "#SBATCH " + $0 }.joined(separator: "\n"))
        #SBATCH --signal=B:TERM@120
        #SBATCH --requeue
        #SBATCH --open-mode=append
        set -u
        script=runs.sbatch
        case "${SLURM_ARRAY_TASK_ID:-}" in
        \(cases)
          *) echo "$script: error: SLURM_ARRAY_TASK_ID '${SLURM_ARRAY_TASK_ID:-}' is not a task of this plan (0-\(commands.runs.count - 1))" >&2; exit 2 ;;
        esac
        \(check)
        echo "task ${SLURM_ARRAY_TASK_ID} ($run) on $(hostname): job ${SLURM_JOB_ID}, restart ${SLURM_RESTART_COUNT:-0}, $(date -u +%FT%TZ)"
        child="" watchdog=""
        on_term() {
          echo "task: got SIGTERM at $(date -u +%FT%TZ): forwarding it to jsae (pid $child), which checkpoints and exits 143"
          [ -n "$child" ] && kill -TERM "$child" 2>/dev/null
          # The final evaluation does not stop at a signal: requeue before the limit kills the task
          # (Slurm may signal up to half a minute late, so 60 s of the 120 s lead).
          ( sleep 60; echo "task: jsae still running 60 s after SIGTERM: requeueing"; scontrol requeue "$SLURM_JOB_ID" ) &
          watchdog=$!
        }
        trap on_term TERM
        "${cmd[@]}" &
        child=$!
        # wait returns early when the trap runs; wait again until jsae has exited.
        while :; do wait "$child"; status=$?; kill -0 "$child" 2>/dev/null || break; done
        [ -n "$watchdog" ] && kill "$watchdog" 2>/dev/null
        echo "task: jsae exited with status $status at $(date -u +%FT%TZ)"
        if [ "$status" = 143 ] || [ "$status" = 130 ]; then
          echo "task: requeueing job ${SLURM_JOB_ID} to resume from its checkpoint"
          scontrol requeue "$SLURM_JOB_ID"
        fi
        exit "$status"

        """
    let report = """
        #!/bin/bash
        # The report of \(outDir): submitted by submit.sh to start after every run succeeded (afterok).
        #SBATCH --job-name=jsae-report
        \(header.map { "#SBATCH " + $0 }.joined(separator: "\n"))
        set -u
        script=report.sbatch
        \(check)
        exec \(PlanCommands.line(commands.report))

        """
    let submit = """
        #!/bin/sh
        # Submits the runs (an array job of \(commands.runs.count) tasks) and the report, which
        # starts once every run succeeded, and prints both job ids. Arguments are
        # passed to both sbatch calls (e.g. --qos=...). Logs: logs/ beside this script.
        set -eu
        dir=$(cd "$(dirname "$0")" && pwd)
        mkdir -p "$dir/logs"
        runs=$(sbatch --parsable --output="$dir/logs/run-%A_%a.log" "$@" "$dir/runs.sbatch")
        runs=${runs%%;*}
        report=$(sbatch --parsable --dependency="afterok:$runs" --output="$dir/logs/report-%j.log" "$@" "$dir/report.sbatch")
        report=${report%%;*}
        echo "runs: $runs (array of \(commands.runs.count) tasks)"
        echo "report: $report (after every run succeeded)"

        """
    for (name, text) in [("runs.sbatch", runs), ("report.sbatch", report), ("submit.sh", submit)] {
        try atomicWrite(to: dir + "/" + name) { tmp in
            try Data(text.utf8).write(to: URL(fileURLWithPath: tmp))
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: tmp)
        }
    }
    return dir
}
