import Foundation
import Testing
import _JSAETestSupport

/// The commands a plan prints, without its comment lines.
private func commands(_ planOutput: String) -> [String] {
    planOutput.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") }
}

/// A printed command line, run by the shell as a user would paste it.
private func shell(_ line: String) throws -> Run { try jsae(["-c", line], binary: "/bin/sh") }

/// ci/compare_summaries.py on two summary.json files: its output and whether they agree.
private func compareSummaries(_ a: String, _ b: String) throws -> (same: Bool, output: String) {
    let r = try jsae([packageRoot + "/ci/compare_summaries.py", a, b], binary: "/usr/bin/python3")
    return (r.status == 0, r.stdout + r.stderr)
}

/// A new folder holding the fixture's summary.json as `monolithic.json` (the fixture's own folder may be rewritten by other tests).
private func folderWithMonolithicSummary(_ fixture: Result<(dir: String, run: Run, summary: Data), any Error>,
                                         sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
    let mono = try fixture.get()
    #expect(mono.run.status == 0, "\(mono.run.stderr)", sourceLocation: sourceLocation)
    let dir = temporaryDirectory()
    try mono.summary.write(to: URL(fileURLWithPath: dir + "/monolithic.json"))
    return dir
}

@Suite("jsae reproduce split into runs (cluster)")
struct ClusterCLITests {
    @Test("--plan's commands, run two at a time in reverse order and then the report, give the monolithic summary.json; --report-only refuses unfinished runs; --only refuses other settings and unknown runs")
    func splitEqualsMonolithic() throws {
        let dir = try folderWithMonolithicSummary(QuickSample.monolithic)
        let out = dir + "/split"
        // Each run on 2 threads here, against 1 in the monolithic reproduction: the numbers must not depend on it.
        let plan = try jsae(["reproduce"] + QuickSample.settings + ["--threads", "2", "--out", out, "--plan"])
        #expect(plan.status == 0, "\(plan.stderr)")
        let lines = commands(plan.stdout)
        let names = ["jsae-pretrained", "traditional-pretrained", "jsae-randomized", "traditional-randomized"]
        try #require(lines.count == 5, "\(plan.stdout)")
        for (line, name) in zip(lines, names) { #expect(line.hasSuffix("--only \(name)") && line.contains("--threads 2 "), "\(line)") }
        #expect(lines[4].hasSuffix("--report-only") && lines[4].contains("--seed 0 ") && lines[4].contains("--lr 0.001 "), "\(lines[4])")
        #expect(FileManager.default.fileExists(atPath: out + "/plan.json") && !FileManager.default.fileExists(atPath: out + "/runs/jsae-pretrained"))

        // Other settings than the plan's, and a run the plan does not have: one line, exit 2, before any work.
        let changed = try shell(lines[0].replacingOccurrences(of: "--lr 0.001", with: "--lr 0.002"))
        #expect(changed.status == 2 && changed.stderr.split(separator: "\n").count == 1
                && changed.stderr.contains(out + "/plan.json") && changed.stderr.contains("lr was 0.001, now 0.002"), "\(changed.stderr)")
        let unknown = try shell(lines[0].replacingOccurrences(of: "--only jsae-pretrained", with: "--only jsae-pretrained2"))
        #expect(unknown.status == 2 && unknown.stderr.split(separator: "\n").count == 1
                && unknown.stderr.contains("--only jsae-pretrained2") && names.allSatisfy { unknown.stderr.contains($0) }, "\(unknown.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out + "/runs/jsae-pretrained"), "a refused --only trained")

        // Two at a time, last first.
        func pair(_ i: Int, _ j: Int) {
            final class Results: @unchecked Sendable {
                // @unchecked: each slot is written by one iteration only, read after all are done.
                var runs: [Run?] = [nil, nil]
            }
            let results = Results()
            DispatchQueue.concurrentPerform(iterations: 2) { k in results.runs[k] = try? shell(lines[k == 0 ? i : j]) }
            for (k, r) in results.runs.enumerated() { #expect(r?.status == 0, "\(lines[k == 0 ? i : j]): \(r?.stderr ?? "did not start")") }
        }
        pair(3, 2)
        let early = try shell(lines[4])
        #expect(early.status == 2 && early.stderr.split(separator: "\n").count == 1 && early.stderr.contains("jsae-pretrained, traditional-pretrained")
                && !early.stderr.contains("randomized"), "\(early.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out + "/summary.json") && !FileManager.default.fileExists(atPath: out + "/runs/jsae-pretrained"))
        pair(1, 0)
        let report = try shell(lines[4])
        #expect(report.status == 0, "\(report.stderr)")
        // The report trained nothing: every run was reused as it finished.
        #expect(report.stderr.components(separatedBy: "finished earlier: reusing").count == 5 && !report.stderr.contains("] training:"), "\(report.stderr)")
        let same = try compareSummaries(dir + "/monolithic.json", out + "/summary.json")
        #expect(same.same, "\(same.output)")

        // One run missing: refused, naming it alone, and nothing rewritten.
        let written = try Data(contentsOf: URL(fileURLWithPath: out + "/summary.json"))
        try FileManager.default.moveItem(atPath: out + "/runs/jsae-randomized", toPath: dir + "/jsae-randomized")
        let missing = try shell(lines[4])
        #expect(missing.status == 2 && missing.stderr.split(separator: "\n").count == 1
                && missing.stderr.contains("run: jsae-randomized (") && !missing.stderr.contains("jsae-pretrained"), "\(missing.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/summary.json")) == written)
    }

    @Test("--slurm writes an array job, a report job after it and a submit script; a task forwards SIGTERM to jsae, which checkpoints and exits 143, requeues itself and resumes to the monolithic numbers")
    func slurmScripts() throws {
        let mono = try QuickSample.monolithic.get()
        let dir = temporaryDirectory()
        let out = dir + "/out"
        let r = try jsae(["reproduce"] + QuickSample.settings + ["--out", out, "--slurm", "--slurm-cpus", "1", "--slurm-mem", "900M",
                                                                  "--slurm-time", "1:30:00", "--slurm-partition", "debug"])
        #expect(r.status == 0, "\(r.stderr)")
        let runs = try String(contentsOfFile: out + "/slurm/runs.sbatch", encoding: .utf8)
        for line in ["#SBATCH --array=0-3", "#SBATCH --cpus-per-task=1", "#SBATCH --mem=900M", "#SBATCH --time=1:30:00", "#SBATCH --partition=debug",
                     "#SBATCH --signal=B:TERM@120", "#SBATCH --requeue", "--threads 1 --only traditional-randomized) ;;"] {
            #expect(runs.contains(line), "runs.sbatch lacks \(line)")
        }
        let submit = try String(contentsOfFile: out + "/slurm/submit.sh", encoding: .utf8)
        #expect(submit.contains("sbatch --parsable") && submit.contains("--dependency=\"afterok:$runs\""))
        for script in ["runs.sbatch", "report.sbatch", "submit.sh"] {
            let syntax = try jsae(["-n", out + "/slurm/" + script], binary: "/bin/bash")
            #expect(syntax.status == 0, "\(script): \(syntax.stderr)")
        }

        // Task 1 as Slurm runs it, with a stand-in scontrol that records its arguments; SIGTERM to the script after jsae's second step.
        try FileManager.default.createDirectory(atPath: dir + "/bin", withIntermediateDirectories: true)
        try "#!/bin/sh\necho \"$@\" >> \(dir)/scontrol.log\n".write(toFile: dir + "/bin/scontrol", atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: dir + "/bin/scontrol")
        // env --default-signal: a signal ignored when bash starts cannot be trapped, and this process's children may inherit
        // an ignored SIGTERM (slurmstepd starts a batch script with the default dispositions).
        let task = "export PATH=\(dir)/bin:$PATH SLURM_ARRAY_TASK_ID=1 SLURM_JOB_ID=4242; "
            + "exec env --default-signal=TERM /bin/bash \(out)/slurm/runs.sbatch 1>&2"
        let (p, seen) = try signalJSAE(["-c", task], SIGTERM, binary: "/bin/bash") { $0.contains("[traditional-pretrained] step 2/") }
        #expect(p.terminationStatus == 143, "\(seen)")
        #expect(seen.contains("task: got SIGTERM") && seen.contains("interrupted in traditional-pretrained at step")
                && seen.contains("task: jsae exited with status 143") && seen.contains("requeueing job 4242"), "\(seen)")
        #expect(try String(contentsOfFile: dir + "/scontrol.log", encoding: .utf8) == "requeue 4242\n")

        // The requeued task resumes from the checkpoint and finishes with the monolithic run's numbers.
        let again = try jsae(["-c", task], binary: "/bin/bash")
        #expect(again.status == 0 && again.stderr.contains("[traditional-pretrained] resuming from"), "\(again.stderr)")
        let finished = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/runs/traditional-pretrained/run.json"))) as? [String: Any]
        let monoRuns = (try JSONSerialization.jsonObject(with: mono.summary) as? [String: Any])?["runs"] as? [[String: Any]]
        let monoRun = try #require(monoRuns?.first { $0["name"] as? String == "traditional-pretrained" })
        for (name, object) in [("split.json", try #require(finished?["summary"])), ("monolithic.json", monoRun)] {
            try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: dir + "/" + name))
        }
        let same = try compareSummaries(dir + "/monolithic.json", dir + "/split.json")
        #expect(same.same, "\(same.output)")

        // A node without the files: the task says which, in one line, before any work.
        let gone = dir + "/elsewhere.h5"
        try FileManager.default.copyItem(atPath: packageRoot + "/reproduce/sample/minilm-l3-randomized.h5", toPath: gone)
        let moved = dir + "/moved"
        let planned = try jsae(["reproduce"] + QuickSample.settings.map { $0.hasSuffix("randomized.h5") ? gone : $0 } + ["--out", moved, "--slurm"])
        #expect(planned.status == 0, "\(planned.stderr)")
        try FileManager.default.removeItem(atPath: gone)
        let absent = try jsae(["-c", "SLURM_ARRAY_TASK_ID=0 SLURM_JOB_ID=1 exec /bin/bash \(moved)/slurm/runs.sbatch"], binary: "/bin/bash")
        #expect(absent.status == 2 && absent.stderr.split(separator: "\n").count == 1 && absent.stderr.contains("runs.sbatch: error: not on node")
                && absent.stderr.contains(gone), "\(absent.stderr)")
    }

    @Test("--layers split with --plan: each layer's runs alone, then the report, give the monolithic sweep's summary.json")
    func layerSweep() throws {
        let dir = try folderWithMonolithicSummary(LayerSample.monolithic)
        let plan = try jsae(["reproduce"] + LayerSample.settings + ["--out", dir + "/split", "--plan"])
        let lines = commands(plan.stdout)
        try #require(plan.status == 0 && lines.count == 3, "\(plan.stdout)\(plan.stderr)")
        #expect(lines[0].hasSuffix("--only jsae-l3") && lines[1].hasSuffix("--only traditional-l3") && lines[0].contains("--layers 3 "), "\(lines)")
        for line in lines.prefix(2).reversed() + [lines[2]] {
            let r = try shell(line)
            #expect(r.status == 0, "\(line): \(r.stderr)")
        }
        let same = try compareSummaries(dir + "/monolithic.json", dir + "/split/summary.json")
        #expect(same.same, "\(same.output)")
    }

    @Test("bad cluster flags are one line and exit 2, before any folder is made")
    func badFlags() throws {
        let dir = temporaryDirectory()
        let cases: [([String], String)] = [
            (["--slurm-time", "60"], "--slurm-time needs --slurm"), (["--slurm", "--slurm-time", "2"], "at least 3 minutes"),
            (["--slurm", "--slurm-time", "1:2:3:4"], "--slurm-time takes"), (["--slurm", "--slurm-mem", "lots"], "--slurm-mem takes"),
            (["--slurm", "--slurm-mem", "0"], "--slurm-mem takes"), (["--slurm", "--slurm-cpus", "0"], "--slurm-cpus"),
            (["--slurm", "--slurm-partition", "a b"], "--slurm-partition"), (["--slurm", "--threads", "2", "--slurm-cpus", "1"], "--slurm-cpus 1 differ"),
            (["--plan", "--report-only"], "exclude each other"), (["--only", "jsae-pretrained", "--slurm"], "exclude each other"),
            (["--only", ""], "--only takes"),
        ]
        for (args, mention) in cases {
            let out = dir + "/out-\(UUID().uuidString)"
            let r = try jsae(["reproduce"] + QuickSample.settings + args + ["--out", out])
            #expect(r.status == 2 && r.stderr.split(separator: "\n").count == 1 && r.stderr.contains(mention), "\(args): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: out), "\(args): the folder was created")
        }
        // --only and --report-only need the plan --plan writes.
        for stage in [["--only", "jsae-pretrained"], ["--report-only"]] {
            let out = dir + "/out-\(UUID().uuidString)"
            let r = try jsae(["reproduce"] + QuickSample.settings + stage + ["--out", out])
            #expect(r.status == 2 && r.stderr.split(separator: "\n").count == 1 && r.stderr.contains("plan.json: no such file"), "\(stage): \(r.stderr)")
        }
    }
}
