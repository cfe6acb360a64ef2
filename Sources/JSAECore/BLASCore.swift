import Foundation

/// Which of OpenBLAS's kernel sets runs. A dynamic-architecture OpenBLAS
/// picks one at load from a table of CPU models; a model newer than its
/// release (Debian 12's 0.3.21 and a Sapphire or Emerald Rapids Xeon, say)
/// is not in the table and gets the generic Prescott (SSE3) kernels, which
/// run sgemm at about a quarter of the AVX-512 kernels' speed. OpenBLAS
/// reads `OPENBLAS_CORETYPE` at load to force a set, so the executables
/// start again with it set (JSAECLIOptions) when this says so.
package enum BLASCore {
    package static let variable = "OPENBLAS_CORETYPE"

    /// The kernel set to force: the one OpenBLAS's own feature ladder gives
    /// a model it knows (Cooperlake with AVX-512 BF16, SkylakeX with
    /// AVX-512 F/BW/DQ/VL, Haswell with AVX2 and FMA, Sandybridge with AVX),
    /// when OpenBLAS fell back to Prescott on a CPU with more. nil when
    /// OpenBLAS chose from its table, when `OPENBLAS_CORETYPE` is set (the
    /// user's choice, or this one already made), or when the CPU has no
    /// wider vectors than SSE3.
    package static func replacement(loaded: String, cpuFlags: Set<Substring>, environment: [String: String]) -> String? {
        guard environment[variable] == nil, loaded.caseInsensitiveCompare("Prescott") == .orderedSame else { return nil }
        let avx512: Set<Substring> = ["avx512f", "avx512bw", "avx512dq", "avx512vl"]
        if avx512.isSubset(of: cpuFlags) { return cpuFlags.contains("avx512_bf16") ? "Cooperlake" : "SkylakeX" }
        if cpuFlags.contains("avx2") && cpuFlags.contains("fma") { return "Haswell" }
        if cpuFlags.contains("avx") { return "Sandybridge" }
        return nil
    }

    /// The feature flags of the first processor in /proc/cpuinfo's text:
    /// the kernel lists a vector extension only when it also saves its
    /// registers, which is what OpenBLAS's own check (XGETBV) asks.
    package static func cpuFlags(cpuinfo: String) -> Set<Substring> {
        guard let line = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
              let colon = line.firstIndex(of: ":") else { return [] }
        return Set(line[line.index(after: colon)...].split(separator: " "))
    }

    /// `replacement` for this process: its loaded core, this machine's
    /// /proc/cpuinfo (no flags when it cannot be read) and environment.
    package static func replacementHere() -> String? {
        let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        return replacement(loaded: BLASThreads.coreName, cpuFlags: cpuFlags(cpuinfo: info),
                           environment: ProcessInfo.processInfo.environment)
    }
}
