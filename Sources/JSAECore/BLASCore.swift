import Foundation

/// Which of OpenBLAS's kernel sets runs. A dynamic-architecture OpenBLAS
/// picks one at load from a table of CPU models. Debian 12's 0.3.21 sends
/// some models newer than its release (a family 6, model 207 Xeon with
/// AVX-512, for one) to its generic Prescott (SSE3) kernels, which run
/// sgemm at about a quarter of the AVX-512 kernels' speed there. OpenBLAS
/// reads `OPENBLAS_CORETYPE` at load to force a set, so the executables
/// start again with it set (JSAECLIOptions) when this says so.
package enum BLASCore {
    package static let variable = "OPENBLAS_CORETYPE"

    /// The kernel set to force when OpenBLAS fell back to Prescott on a CPU
    /// with more: SkylakeX with AVX-512, Haswell with AVX2 and FMA,
    /// Sandybridge with AVX, the rungs of OpenBLAS's own feature ladder.
    /// Each rung asks for every extension its kernels are compiled for
    /// (`-march=skylake-avx512`, `-march=haswell`), more than OpenBLAS's own
    /// check (AVX512VL alone, AVX2 alone) asks, so that a virtual CPU with
    /// an unusual subset gets a slower rung rather than an illegal
    /// instruction. Not Cooperlake: 0.3.21 does not accept that name in the
    /// variable, and its float and double kernels are SkylakeX's.
    /// nil when OpenBLAS chose from its table, when `OPENBLAS_CORETYPE` is
    /// set (the user's choice, or this one already made), or when the CPU
    /// has nothing wider than SSE3.
    package static func replacement(loaded: String, cpuFlags: Set<Substring>, environment: [String: String]) -> String? {
        guard mayReplace(loaded: loaded, environment: environment) else { return nil }
        let haswell: Set<Substring> = ["avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "abm", "movbe"]
        let skylakeX = haswell.union(["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"])
        if skylakeX.isSubset(of: cpuFlags) { return "SkylakeX" }
        if haswell.isSubset(of: cpuFlags) { return "Haswell" }
        if cpuFlags.contains("avx") { return "Sandybridge" }
        return nil
    }

    /// Whether `replacement` may choose at all: OpenBLAS fell back to
    /// Prescott and nobody set the variable.
    static func mayReplace(loaded: String, environment: [String: String]) -> Bool {
        environment[variable] == nil && loaded.caseInsensitiveCompare("Prescott") == .orderedSame
    }

    /// The feature flags of the first processor in /proc/cpuinfo's text:
    /// the kernel lists a vector extension only when it also saves its
    /// registers, which is what OpenBLAS's own check (XGETBV) asks.
    package static func cpuFlags(cpuinfo: String) -> Set<Substring> {
        guard let line = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
              let colon = line.firstIndex(of: ":") else { return [] }
        return Set(line[line.index(after: colon)...].split(separator: " "))
    }

    /// `replacement` for this process: its loaded core, its environment and
    /// this machine's /proc/cpuinfo, read only when a choice is open (no
    /// flags when it cannot be read).
    package static func replacementHere() -> String? {
        let environment = ProcessInfo.processInfo.environment, loaded = BLASThreads.coreName
        guard mayReplace(loaded: loaded, environment: environment) else { return nil }
        let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        return replacement(loaded: loaded, cpuFlags: cpuFlags(cpuinfo: info), environment: environment)
    }
}
