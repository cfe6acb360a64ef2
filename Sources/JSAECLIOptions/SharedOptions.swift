import ArgumentParser
import Foundation
import JSAECore

// Options that `jsae train`, `jsae reproduce` and `jsae-bench` share, declared
// once and included with @OptionGroup. Each command keeps its own defaults
// for the shapes (a training run, a quick reproduction and a benchmark preset
// differ), so the values here are optional.

/// --threads: OpenBLAS's threads and the package's own.
public struct ThreadOptions: ParsableArguments {
    @Option(help: "Threads for OpenBLAS and the package's own loops (default: all cores). Results do not depend on it.")
    public var threads: Int?

    public init() {}

    public func validate() throws {
        if let threads, threads < 1 { throw badFlag("--threads must be at least 1, got \(threads)") }
    }

    /// Sets OpenBLAS's thread count when --threads was given; returns the
    /// count for the package's own loops.
    public func apply() -> Int {
        guard let threads else { return Parallel.onlineCores }
        BLASThreads.set(threads)
        return threads
    }
}

/// --expansion, --k, --batch: the SAE shape and tokens per step.
public struct SAEShapeOptions: ParsableArguments {
    @Option(help: "Latents per SAE = expansion × d (default: the command's; train 32, reproduce 8, jsae-bench its preset's).")
    public var expansion: Int?
    @Option(help: "TopK: latents kept per token (default 32).")
    public var k: Int?
    @Option(help: "Tokens per optimizer step (default: the command's; train 4096, reproduce 256, jsae-bench its preset's).")
    public var batch: Int?

    public init() {}

    public func validate() throws {
        for (name, v) in [("expansion", expansion), ("k", k), ("batch", batch)] {
            if let v, v < 1 { throw badFlag("--\(name) must be at least 1, got \(v)") }
        }
    }
}

/// --seed: initialisation, shuffling and sampling.
public struct SeedOption: ParsableArguments {
    @Option(help: "Seed for initialisation, shuffling and sampling.")
    public var seed: UInt64 = 0
    public init() {}
}

/// A flag's value is out of range: one line on stderr naming the flag, and
/// exit status 2, like every other bad input (not ArgumentParser's
/// multi-line usage error).
public func badFlag(_ message: String) -> ExitCode {
    let program = (CommandLine.arguments.first ?? "jsae").split(separator: "/").last.map(String.init) ?? "jsae"
    FileHandle.standardError.write(Data("\(program): error: \(message)\n".utf8))
    return ExitCode(2)
}
