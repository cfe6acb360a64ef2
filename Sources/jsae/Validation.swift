import ArgumentParser
import Foundation
import JSAECore
import JSAEIO

// MARK: Paths

/// `path` with symbolic links and `..` resolved; for a file that does not
/// exist yet, its folder resolved and its name appended.
func resolvedPath(_ path: String) -> String {
    if let r = realpath(path, nil) { defer { free(r) }; return String(cString: r) }
    let url = URL(fileURLWithPath: path)
    if let r = realpath(url.deletingLastPathComponent().path, nil) {
        defer { free(r) }
        return String(cString: r) + "/" + url.lastPathComponent
    }
    return url.standardizedFileURL.path
}

/// Refuses an output path that is one of the inputs (same resolved path, or
/// the same file through a hard link), before any work.
func requireDistinctOutput(_ out: String, flag: String, from inputs: [(flag: String, path: String)]) throws {
    let o = resolvedPath(out)
    var so = stat()
    let outExists = stat(out, &so) == 0
    for input in inputs {
        var si = stat()
        let sameInode = outExists && stat(input.path, &si) == 0 && si.st_dev == so.st_dev && si.st_ino == so.st_ino
        if sameInode || resolvedPath(input.path) == o {
            throw JSAEError(file: out, "\(flag) is the same file as \(input.flag) \(input.path): refusing to overwrite an input")
        }
    }
}

// MARK: Sizes a run can have

enum RunLimits {
    /// m = expansion × d, refused when it overflows.
    static func latents(expansion: Int, d: Int, flag: String = "--expansion") throws -> Int {
        guard expansion >= 1 else { throw JSAEError("\(flag) must be at least 1, got \(expansion)") }
        let (m, o) = expansion.multipliedReportingOverflow(by: d)
        guard !o else { throw JSAEError("\(flag) \(expansion) × d \(d) overflows a 64-bit integer") }
        return m
    }

    /// Whole steps covering `tokens`, without overflow for any Int.
    static func steps(tokens: Int, batch: Int) -> Int {
        let b = max(batch, 1)
        return tokens / b + (tokens % b > 0 ? 1 : 0)
    }

    /// Refuses a configuration whose buffers would not fit in this machine's
    /// memory (and, on the way, any size product that would overflow).
    /// Counted in Double, which cannot overflow here: parameters, Adam's two
    /// moments and the gradient (4 copies of 2·m·d per SAE), the pre-
    /// activations of a batch (B·m per SAE) and the shuffling buffer (x and
    /// y, 2·B·buffers·d). A lower bound of what a step uses, which is all a
    /// refusal needs.
    static func requireMemory(d: Int, m: Int, saes: Int, batch: Int, bufferBatches: Int, scalarBytes: Int,
                              flags: String) throws {
        let D = Double(d), M = Double(m), B = Double(batch), S = Double(saes)
        let elements = S * 4 * 2 * M * D + S * B * M + 2 * B * Double(bufferBatches) * D
        let bytes = elements * Double(scalarBytes)
        let limit = Double(ProcessInfo.processInfo.physicalMemory)
        guard bytes <= limit else {
            func gib(_ v: Double) -> String { v >= 1e6 * 1073741824 ? String(format: "%.2g", v / 1073741824) : String(format: "%.1f", v / 1073741824) }
            throw JSAEError("d \(d), m \(m), batch \(batch) and \(bufferBatches) buffered batches would need at least "
                            + "\(gib(bytes)) GiB of memory, more than this machine's \(gib(limit)) GiB: lower \(flags)")
        }
    }
}

// MARK: jsae train

extension Train {
    /// The option names given on the command line (`--k 8` and `--k=8`).
    var givenFlags: Set<String> {
        Set(CommandLine.arguments.dropFirst().compactMap { a -> String? in
            guard a.hasPrefix("--") else { return nil }
            return String(a.dropFirst(2).split(separator: "=", maxSplits: 1).first ?? "")
        })
    }

    /// With --resume, the precision stored in the newest checkpoint (the
    /// checkpoint wins; a different --precision is refused); nil otherwise.
    func resumePrecision() throws -> Precision? {
        guard let dir = resume else { return nil }
        guard let latest = CheckpointFile.latest(in: dir) else {
            if let pid = RunLock.holder(of: dir) {   // a run still before its first checkpoint
                throw JSAEError(file: dir, "another jsae process (pid \(pid)) is writing into this folder and has no checkpoint yet; wait for it")
            }
            throw JSAEError(file: dir, "no checkpoint-<9 digits>.h5 to resume from")
        }
        guard let stored = try CheckpointFile.storedPrecision(latest), let p = Precision(rawValue: stored) else { return nil }
        if givenFlags.contains("precision") && precision != p {
            throw JSAEError(file: latest, "--precision \(precision.rawValue) conflicts with the checkpoint's precision \(p.rawValue): "
                            + "a resumed run keeps its configuration; drop --precision")
        }
        return p
    }

    /// Every configuration flag given with --resume must agree with the
    /// checkpoint, which wins: a silently ignored --k or --lr would make the
    /// user believe the run changed.
    func requireResumeFlagsAgree<T: JSAEScalar>(_ state: TrainState<T>, _ c: TrainConfig,
                                                _ p: CheckpointFile.Provenance, checkpoint: String) throws {
        let given = givenFlags
        let d = state.model.d, m = state.model.saeIn.m
        let bufferBatches = max(1, p.shuffleBufferTokens / max(c.batch, 1))
        // The checkpoint's own sizes, before they size any buffer.
        do {
            try RunLimits.requireMemory(d: d, m: m, saes: state.model.saeOut == nil ? 1 : 2, batch: c.batch,
                                        bufferBatches: bufferBatches, scalarBytes: MemoryLayout<T>.size, flags: "batch or shuffle_buffer_tokens")
            guard !c.totalSteps.multipliedReportingOverflow(by: c.batch).overflow else {
                throw JSAEError("total_steps \(c.totalSteps) × batch \(c.batch) tokens overflows a 64-bit integer")
            }
            guard state.step <= c.totalSteps else { throw JSAEError("step \(state.step) is beyond total_steps \(c.totalSteps)") }
        } catch let e as JSAEError { throw JSAEError(file: checkpoint, "corrupt or unreadable checkpoint: \(e.message)") }
        var checks: [(flag: String, agrees: Bool, stored: String)] = [
            ("expansion", { let r = expansion.multipliedReportingOverflow(by: d); return !r.overflow && r.partialValue == m }(), "expansion \(m / max(d, 1)) (m \(m), d \(d))"),
            ("k", k == state.model.k, "k = \(state.model.k)"),
            ("lambda", lambda == c.lambda, "lambda = \(c.lambda)"),
            ("single", single == c.single, c.single ? "a single SAE" : "a pair"),
            ("batch", batch == c.batch, "batch = \(c.batch)"),
            ("steps", steps == c.totalSteps, "total_steps = \(c.totalSteps)"),
            ("tokens", tokens.map { RunLimits.steps(tokens: $0, batch: c.batch) } == c.totalSteps, "total_steps = \(c.totalSteps) of \(c.batch) tokens"),
            ("lr", lr == c.lr, "lr = \(c.lr)"),
            ("lr-warmup", lrWarmup == c.lrWarmupFraction, "lr_warmup_fraction = \(c.lrWarmupFraction)"),
            ("lr-decay", lrDecay == c.lrDecayFraction, "lr_decay_fraction = \(c.lrDecayFraction)"),
            ("lambda-warmup", lambdaWarmup == c.lambdaWarmupFraction, "lambda_warmup_fraction = \(c.lambdaWarmupFraction)"),
            ("clip-norm", clipNorm == c.clipNorm, "clip_norm = \(c.clipNorm)"),
            ("seed", seed == c.seed, "seed = \(c.seed)"),
            ("evaluation-point", evaluationPoint == c.evaluationPoint, "evaluation_point = \(c.evaluationPoint.rawValue)"),
            ("jacobian-chunk", jacobianChunk == c.jacobianChunk, "jacobian_chunk = \(c.jacobianChunk)"),
            ("buffer-batches", bufferBatches == self.bufferBatches, "\(bufferBatches) buffered batches"),
            ("model", false, "the MLP stored in it"),
        ]
        if let out { checks.append(("out", resolvedPath(out) == resolvedPath(resume!), "its own folder \(resume!)")) }
        for ch in checks where given.contains(ch.flag) && !ch.agrees {
            throw JSAEError(file: checkpoint, "--\(ch.flag) conflicts with the checkpoint (\(ch.stored)): "
                            + "a resumed run keeps its configuration; drop --\(ch.flag)")
        }
    }

    /// The activations of a resumed run: --activations, else the file the
    /// checkpoint records; a missing or unreadable recorded file is reported
    /// with the checkpoint it came from and how to point elsewhere.
    func openActivations(recordedIn p: CheckpointFile.Provenance, checkpoint: String) throws -> ActivationsReader {
        if let activations { return try ActivationsReader(activations) }
        guard !p.activationsFile.isEmpty else {
            throw JSAEError(file: checkpoint, "records no activations_file; give --activations")
        }
        do { return try ActivationsReader(p.activationsFile) } catch let e as JSAEError {
            throw JSAEError(file: p.activationsFile, "\(e.message) (the activations file recorded in \(checkpoint); give --activations if it moved)")
        }
    }

    /// Before any work on a new run: sizes that overflow or cannot fit.
    func requireFreshRunFits(d: Int, m: Int, scalarBytes: Int) throws {
        try RunLimits.requireMemory(d: d, m: m, saes: single ? 1 : 2, batch: max(batch, 1), bufferBatches: max(bufferBatches, 1),
                                    scalarBytes: scalarBytes, flags: "--expansion, --batch or --buffer-batches")
        let total = steps ?? tokens.map { RunLimits.steps(tokens: $0, batch: batch) } ?? 1
        guard !total.multipliedReportingOverflow(by: max(batch, 1)).overflow else {
            throw JSAEError(steps != nil ? "--steps \(total) × --batch \(batch) tokens overflows a 64-bit integer"
                            : "--tokens \(tokens ?? 0) rounded up to whole steps of --batch \(batch) overflows a 64-bit integer")
        }
    }

    /// Takes the folder's run lock and removes temporaries that killed runs
    /// left behind; the lock lives as long as the returned object.
    func lockRunFolder(_ dir: String) throws -> RunLock {
        let lock = try RunLock.acquire(dir)
        let removed = removeStaleTemporaries(in: dir)
        if !removed.isEmpty {
            FileHandle.standardError.write(Data("removed \(removed.count) temporary file(s) left by killed runs: \(removed.joined(separator: ", "))\n".utf8))
        }
        return lock
    }
}

// MARK: jsae reproduce

extension ReproduceCommand {
    /// Sizes checked against the pre-trained file's d before any training.
    func requireFits(expansion: Int, batch: Int) throws {
        // With --layers, --pretrained is a pattern; its first layer's file gives d
        // (reproduceLayers checks that every layer's file has the same d).
        let first = layers.flatMap(parseLayers)?.first.map { pretrained.replacingOccurrences(of: "{layer}", with: String($0)) }
        let d = try ActivationsReader(first ?? pretrained).d
        let m = try RunLimits.latents(expansion: expansion, d: d)
        try RunLimits.requireMemory(d: d, m: m, saes: 2, batch: batch, bufferBatches: 4, scalarBytes: 4,
                                    flags: "--expansion or --batch")
    }
}
