import ArgumentParser
import Foundation
import JSAECore
import JSAEIO
import JSAERuns

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

    /// Flags a resume cannot take: the MLP and the folder are the run's own.
    func requireResumeFlags(_ dir: String) throws {
        let latest = CheckpointFile.latest(in: dir) ?? dir
        if givenFlags.contains("model") {
            throw JSAEError(file: latest, "--model conflicts with the checkpoint (the MLP stored in it): "
                            + "a resumed run keeps its configuration; drop --model")
        }
        if let out, resolvedPath(out) != resolvedPath(dir) {
            throw JSAEError(file: latest, "--out conflicts with the checkpoint (its own folder \(dir)): "
                            + "a resumed run keeps its configuration; drop --out")
        }
    }

    /// The flag that sets a setting (`TrainingSettings.described`'s names),
    /// as given: --tokens when it stood for --steps.
    func flag(_ setting: String) -> String {
        setting == "steps" && givenFlags.contains("tokens") && !givenFlags.contains("steps") ? "--tokens" : "--" + setting
    }

    /// A checkpoint's settings with every configuration flag given with
    /// --resume applied: `Training` refuses the resume when the result
    /// differs from the checkpoint, which wins (a silently ignored --k or
    /// --lr would make the user believe the run changed).
    func applyingGivenFlags(to stored: TrainingSettings, reader: ActivationsReader) throws -> TrainingSettings {
        let given = givenFlags
        var s = stored
        func set<V>(_ flag: String, _ value: V, _ apply: (inout TrainingSettings, V) -> Void) {
            if given.contains(flag) { apply(&s, value) }
        }
        set("expansion", expansion) { let r = $1.multipliedReportingOverflow(by: $0.d); $0.m = r.overflow ? -1 : r.partialValue }
        set("k", k) { $0.k = $1 }
        set("single", single) { $0.config.single = $1 }
        set("lambda", lambda) { $0.config.lambda = $1 ?? Double.nan }
        set("batch", batch) { $0.config.batch = $1 }
        set("steps", steps) { $0.config.totalSteps = $1 ?? -1 }
        set("tokens", tokens) { $0.config.totalSteps = $1.map { RunRules.steps(tokens: $0, batch: stored.config.batch) } ?? -1 }
        set("lr", lr) { $0.config.lr = $1 }
        set("lr-warmup", lrWarmup) { $0.config.lrWarmupFraction = $1 }
        set("lr-decay", lrDecay) { $0.config.lrDecayFraction = $1 }
        set("lambda-warmup", lambdaWarmup) { $0.config.lambdaWarmupFraction = $1 }
        set("clip-norm", clipNorm) { $0.config.clipNorm = $1 }
        set("seed", seed) { $0.config.seed = $1 }
        set("evaluation-point", evaluationPoint) { $0.config.evaluationPoint = $1 }
        set("jacobian-chunk", jacobianChunk) { $0.config.jacobianChunk = $1 }
        set("buffer-batches", bufferBatches) { $0.bufferBatches = $1 }
        if given.contains("rows") || given.contains("include-special") {
            let r = try trainingRows(reader, rows: rows, includeSpecial: includeSpecial)
            set("rows", r.end) { $0.trainingRowsEnd = $1 }
            set("include-special", r.excludesSpecial) { $0.excludesSpecial = $1 }
        }
        return s
    }

    /// The rows --rows and --include-special choose: before the file's
    /// heldout_start_row (when it records one), without special-token rows
    /// (when it marks them).
    func trainingRows(_ reader: ActivationsReader, rows: TrainingRowsChoice, includeSpecial: Bool) throws -> (end: Int?, excludesSpecial: Bool) {
        var end: Int? = nil
        if rows == .training, case let (e, true) = try reader.heldOutStart(fallbackFraction: 0) { end = e }
        let marked = try reader.specialRows() != nil
        return (end, !includeSpecial && marked)
    }

    /// The activations of a resumed run: --activations, else the file the
    /// checkpoint records; a missing or unreadable recorded file is reported
    /// with the checkpoint it came from and how to point elsewhere.
    func openActivations(recordedIn checkpoint: String) throws -> ActivationsReader {
        if let activations { return try ActivationsReader(activations) }
        let recorded: String?
        do { recorded = try HDF5File.open(checkpoint).stringAttribute("activations_file") } catch let e as JSAEError {
            throw JSAEError(file: checkpoint, "corrupt or unreadable checkpoint: \(e.message)")
        }
        guard let recorded, !recorded.isEmpty else {
            throw JSAEError(file: checkpoint, "records no activations_file; give --activations")
        }
        do { return try ActivationsReader(recorded) } catch let e as JSAEError {
            throw JSAEError(file: recorded, "\(e.message) (the activations file recorded in \(checkpoint); give --activations if it moved)")
        }
    }

    /// --steps or --tokens whose tokens overflow, named before any work.
    func requireStepsFit() throws {
        let total = steps ?? tokens.map { RunRules.steps(tokens: $0, batch: batch) } ?? 1
        guard !total.multipliedReportingOverflow(by: max(batch, 1)).overflow else {
            throw JSAEError(steps != nil ? "--steps \(total) × --batch \(batch) tokens overflows a 64-bit integer"
                            : "--tokens \(tokens ?? 0) rounded up to whole steps of --batch \(batch) overflows a 64-bit integer")
        }
    }
}
