import CGPerfTools
import Foundation

/// tcmalloc's heap profiler: dumps PATH.NNNN.heap whenever in-use memory
/// grows by HEAP_PROFILE_INUSE_INTERVAL (default 100 MB), plus one at the end.
enum HeapProfiler {
    static func start(_ prefix: String) { HeapProfilerStart(prefix) }
    static func stop(reason: String) { HeapProfilerDump(reason); HeapProfilerStop() }
}

/// The gperftools CPU profiler around a region, and a demangled top-N summary
/// through google-pprof when it is installed.
enum CPUProfiler {
    static func start(_ path: String) -> Bool { ProfilerStart(path) != 0 }
    static func stop() { ProfilerStop() }

    /// Top functions by self samples, demangled with `swift demangle`.
    static func summary(profile: String, count: Int) -> String? {
        let exe = CommandLine.arguments[0].hasPrefix("/") ? CommandLine.arguments[0]
            : FileManager.default.currentDirectoryPath + "/" + CommandLine.arguments[0]
        let text = run("google-pprof", ["--text", "--nodecount=\(count)", exe, profile])
        guard !text.isEmpty else { return nil }
        let demangled = run("swift", ["demangle", "--simplified"], stdin: Data(text.utf8))
        // google-pprof lists every node after the requested ones with zero
        // self samples; keep the header and the top `count`.
        return (demangled.isEmpty ? text : demangled)
            .split(separator: "\n").prefix(count + 1).map { String($0.prefix(150)) }.joined(separator: "\n")
    }
}
