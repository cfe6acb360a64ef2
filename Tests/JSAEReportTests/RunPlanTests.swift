import Foundation
import Testing
@testable import JSAEReport

/// `runPlan`, the scheduler behind `jsae reproduce --runs-at-once`, with
/// stand-in runs (no training): order, concurrency, failure and interruption.
@Suite("reproduce: runs at once")
struct RunPlanTests {
    private func plan(_ n: Int) -> [RunPlan] { (0..<n).map { RunPlan(name: "run\($0)", data: "d", lambda: Double($0 % 2)) } }

    private func summary(_ p: RunPlan) -> RunSummary {
        RunSummary(name: p.name, data: p.data, lambda: p.lambda, forwardFiles: [:], shares: [:],
                   metrics: HeldOutMetrics(explainedVarianceIn: 0, explainedVarianceOut: 0, mseIn: 0, mseOut: 0, l0In: 0, l0Out: 0,
                                           deadIn: 0, deadOut: 0, jacobianL1: nil),
                   linearity: [:], ablationAgreement: 0, samples: 0, thresholdCounts: nil, analyses: nil)
    }

    /// Counts runs in progress and the most seen at once.
    final class Gauge: @unchecked Sendable {
        // @unchecked: every field is guarded by `lock`.
        let lock = NSLock()
        var now = 0, most = 0, started: [String] = []
        func enter(_ name: String) { lock.withLock { now += 1; most = max(most, now); started.append(name) } }
        func leave() { lock.withLock { now -= 1 } }
    }

    @Test("every run once, summaries in plan order, never more than runsAtOnce at a time", arguments: [1, 2, 3])
    func order(runsAtOnce: Int) throws {
        let gauge = Gauge()
        let p = plan(5)
        let runs = try runPlan(p, runsAtOnce: runsAtOnce, shouldStop: { false }) { run, _ in
            gauge.enter(run.name)
            defer { gauge.leave() }
            // The first runs wait (up to 10 s) until runsAtOnce of them are
            // in, so a scheduler that runs fewer at once shows as a lower
            // `most`, whatever the machine's load.
            let deadline = Date().addingTimeInterval(10)
            while gauge.lock.withLock({ gauge.started.count }) < runsAtOnce && Date() < deadline { Thread.sleep(forTimeInterval: 0.001) }
            // Uneven lengths, so workers finish out of plan order.
            Thread.sleep(forTimeInterval: run.lambda > 0 ? 0.05 : 0.01)
            return summary(run)
        }
        #expect(runs.map(\.name) == p.map(\.name))
        #expect(gauge.started.sorted() == p.map(\.name).sorted())
        #expect(gauge.most == min(runsAtOnce, p.count), "at most \(gauge.most) at once")
    }

    @Test("a failed run stops the run beside it at its next step check, starts no other run, and is what is thrown")
    func failure() throws {
        let gauge = Gauge()
        struct Broken: Error {}
        #expect(throws: Broken.self) {
            _ = try runPlan(plan(4), runsAtOnce: 2, shouldStop: { false }) { run, stop in
                gauge.enter(run.name)
                defer { gauge.leave() }
                if run.name == "run1" { Thread.sleep(forTimeInterval: 0.05); throw Broken() }
                // A training run: checks stop between steps; given up after 10 s so a broken scheduler fails, not hangs.
                for step in 0..<1000 {
                    if stop() { throw ReproduceInterrupted(run: run.name, step: step, checkpoint: "cp") }
                    Thread.sleep(forTimeInterval: 0.01)
                }
                return summary(run)
            }
        }
        #expect(gauge.started.sorted() == ["run0", "run1"])
    }

    @Test("a signal interrupts both runs in progress; the error names both, in plan order")
    func interruption() throws {
        let flag = Gauge()   // `now` > 0: the signal arrived
        do {
            _ = try runPlan(plan(4), runsAtOnce: 2, shouldStop: { flag.lock.withLock { flag.now > 0 } }) { run, stop in
                if run.name == "run1" { Thread.sleep(forTimeInterval: 0.05); flag.enter("signal") }
                for step in 0..<1000 {
                    if stop() { throw ReproduceInterrupted(run: run.name, step: step, checkpoint: "\(run.name)/cp") }
                    Thread.sleep(forTimeInterval: 0.01)
                }
                return summary(run)
            }
            Issue.record("runPlan returned after the signal")
        } catch let e as ReproduceInterrupted {
            #expect(e.run == "run0" && e.others.map(\.run) == ["run1"])
            #expect(e.description.contains("interrupted in run0 at step") && e.description.contains("; interrupted in run1 at step")
                    && e.description.contains("checkpoint run1/cp"), "\(e)")
        }
    }

    @Test("plan.json: a resume on another OpenBLAS thread count per run is allowed and said; other settings are refused")
    func planThreads() throws {
        let dir = NSTemporaryDirectory() + "runplan-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func record(_ threads: Int?, seed: String = "0") throws -> PlanRecord {
            let t = threads.map { ", \"blasThreadsPerRun\": \($0)" } ?? ""
            return try JSONDecoder().decode(PlanRecord.self, from: Data("{\"options\": {\"seed\": \"\(seed)\"}, \"inputs\": {\"a.h5\": \"1 rows\"}\(t)}".utf8))
        }
        var lines: [String] = []
        try record(1).requireSameOrWrite(in: dir) { lines.append($0) }
        #expect(lines.isEmpty && FileManager.default.fileExists(atPath: dir + "/plan.json"))
        try record(1).requireSameOrWrite(in: dir) { lines.append($0) }
        #expect(lines.count == 1 && lines[0].hasPrefix("resuming"), "\(lines)")
        lines = []
        try record(2).requireSameOrWrite(in: dir) { lines.append($0) }
        #expect(lines.count == 2 && lines[1].contains("1 OpenBLAS thread each, these on 2") && lines[1].contains("last bits"), "\(lines)")
        #expect(throws: (any Error).self) { try record(1, seed: "1").requireSameOrWrite(in: dir) { _ in } }
    }
}
