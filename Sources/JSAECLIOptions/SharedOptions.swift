import ArgumentParser
import Foundation
import JSAECore
import JSAEIO

// Options that `jsae train`, `jsae reproduce` and `jsae-bench` share, declared
// once and included with @OptionGroup. Each command keeps its own defaults
// for the shapes (a training run, a quick reproduction and a benchmark preset
// differ), so the values here are optional.

/// --threads: the package's worker threads (OpenBLAS stays on one thread).
public struct ThreadOptions: ParsableArguments {
    @Option(help: "Worker threads for the package's loops and tiled products (default: all cores). Results are the same bits on any count: products are cut into tiles chosen from their shapes, each run by single-threaded OpenBLAS.")
    public var threads: Int?

    public init() {}

    public func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
    }

    /// Keeps OpenBLAS on one thread and returns the worker count for the
    /// package's loops and tiled products.
    public func apply() -> Int {
        BLASThreads.keepSerial()
        return threads ?? Parallel.onlineCores
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
            if let v, v < 1 { throw ValidationError("--\(name) must be at least 1, got \(v)") }
        }
    }
}

/// --seed: initialisation, shuffling and sampling.
public struct SeedOption: ParsableArguments {
    @Option(help: "Seed for initialisation, shuffling and sampling.")
    public var seed: UInt64 = 0
    public init() {}
}

// MARK: One line for every error, exit status 2

/// Runs a command like ArgumentParser's `main()`, except that every failure,
/// a malformed command line included, is one line on stderr and exit status
/// 2 (help still prints in full; an ExitCode thrown by the command keeps its
/// status). HDF5 crashes inside a read become one line too (see README,
/// "Failure behaviour").
public func runWithOneLineErrors<C: ParsableCommand>(_: C.Type, program: String) -> Never {
    startOnRightBLASCore(program: program)
    HDF5File.installCrashGuard(program: program)
    let args = Array(CommandLine.arguments.dropFirst())
    do {
        var command = try C.parseAsRoot(args)
        try command.run()
        exit(0)
    } catch {
        if error is ExitCode || C.exitCode(for: error) == .success { C.exit(withError: error) }
        var msg = C.message(for: error).split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.joined(separator: "; ")
        if msg.isEmpty { msg = String(describing: error) }
        if let hint = negativeNumberHint(args) { msg += hint }
        exitAtOnce(2, "\(program): error: \(msg)")
    }
}

/// Starts this process again, the same executable with the same arguments
/// and `OPENBLAS_CORETYPE` set, when OpenBLAS fell back to its generic
/// kernels on a CPU it did not know (`BLASCore`). It runs first in `main`,
/// before anything is read or written, so the second start repeats nothing;
/// the variable it sets keeps it from starting a third time. It does not
/// start again, and says so in one line, where the exec would lose
/// something: an armed interval timer (a profiler's, or a caller's alarm)
/// survives exec while its handler does not, so its signal would kill the
/// new image; gperftools writes a `CPUPROFILE` profile under another name
/// after an exec; and with the dynamic loader started by hand,
/// /proc/self/exe is the loader, not this program. Should the exec fail the
/// process goes on, correct and slower, after one line.
public func startOnRightBLASCore(program: String) {
    guard let core = BLASCore.replacementHere() else { return }
    func keep(_ why: String) {
        FileHandle.standardError.write(Data("\(program): note: OpenBLAS runs its Prescott fallback kernels; not starting again with \(BLASCore.variable)=\(core) because \(why)\n".utf8))
    }
    if ProcessInfo.processInfo.environment["CPUPROFILE"] != nil { return keep("CPUPROFILE is set") }
    for timer in [ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF] {
        var t = itimerval()
        if getitimer(__itimer_which_t(timer.rawValue), &t) != 0 || t.it_value.tv_sec != 0 || t.it_value.tv_usec != 0 {
            return keep("an interval timer is armed")
        }
    }
    if !startedThroughLoader() { return keep("the dynamic loader was started by hand") }
    guard setenv(BLASCore.variable, core, 1) == 0 else { return keep("the environment cannot be set") }
    execv("/proc/self/exe", CommandLine.unsafeArgv)
    let reason = String(cString: strerror(errno))
    unsetenv(BLASCore.variable)
    keep("the exec failed (\(reason))")
}

/// Whether the kernel loaded this program's dynamic loader for it (the
/// auxiliary vector's AT_BASE, type 7, is the loader's address), rather than
/// the loader being the program started. false when /proc/self/auxv cannot
/// be read.
func startedThroughLoader() -> Bool {
    guard let data = FileManager.default.contents(atPath: "/proc/self/auxv"), data.count % 16 == 0 else { return false }
    return data.withUnsafeBytes { raw in
        stride(from: 0, to: raw.count, by: 16).contains { i in
            raw.loadUnaligned(fromByteOffset: i, as: UInt64.self) == 7 && raw.loadUnaligned(fromByteOffset: i + 8, as: UInt64.self) != 0
        }
    }
}

/// ArgumentParser reads `--flag -1` as a flag followed by an option named
/// "-1" ("Missing value"): say how to write a negative value.
func negativeNumberHint(_ args: [String]) -> String? {
    for i in args.indices.dropFirst() {
        let a = args[i], flag = args[i - 1]
        if a.count > 1, a.hasPrefix("-"), Double(a) != nil, flag.hasPrefix("--"), !flag.contains("=") {
            return " (write a negative value with '=': \(flag)=\(a))"
        }
    }
    return nil
}

/// Flushes every C stream, writes `line` (if any) to stderr and exits at
/// once, without exit handlers: HDF5's own handler crashed after a failed
/// write, and anything meant to be kept is already closed or was never
/// renamed into place.
public func exitAtOnce(_ status: Int32, _ line: String) -> Never {
    fflush(nil)   // every C stream, stdout included
    FileHandle.standardError.write(Data((line + "\n").utf8))
    _exit(status)
}
