import Testing
@testable import JSAECore

@Suite("OpenBLAS core choice")
struct BLASCoreTests {
    /// What `-march=haswell` and `-march=skylake-avx512` compile OpenBLAS's
    /// kernels for, as /proc/cpuinfo names the flags.
    static let haswell: Set<Substring> = ["sse3", "avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "abm", "movbe"]
    static let avx512 = haswell.union(["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"])

    /// OpenBLAS's ladder for a model it knows (AVX-512, AVX2, AVX), each rung
    /// asking for every extension its kernels are compiled for.
    @Test("A Prescott fallback is replaced by the core the CPU's features call for")
    func ladder() {
        func choice(_ flags: Set<Substring>) -> String? { BLASCore.replacement(loaded: "Prescott", cpuFlags: flags, environment: [:]) }
        #expect(choice(Self.avx512) == "SkylakeX")
        #expect(choice(Self.avx512.union(["avx512_bf16", "avx512_vnni"])) == "SkylakeX")
        for missing in ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"] as [Substring] {
            #expect(choice(Self.avx512.subtracting([missing])) == "Haswell", "without \(missing)")
        }
        #expect(choice(Self.haswell) == "Haswell")
        for missing in ["avx2", "fma", "f16c", "bmi1", "bmi2", "abm", "movbe"] as [Substring] {
            #expect(choice(Self.avx512.subtracting([missing])) == "Sandybridge", "without \(missing)")
        }
        #expect(choice(["sse3", "avx"]) == "Sandybridge")
        #expect(choice(["sse3", "ssse3", "sse4_2"]) == nil)
        #expect(choice([]) == nil)
    }

    @Test("OpenBLAS's own choice and a set OPENBLAS_CORETYPE are kept")
    func kept() {
        for loaded in ["Zen", "SkylakeX", "Cooperlake", "Haswell", "Nehalem"] {
            #expect(BLASCore.replacement(loaded: loaded, cpuFlags: Self.avx512, environment: [:]) == nil)
        }
        for value in ["Prescott", "", "Haswell"] {
            #expect(BLASCore.replacement(loaded: "Prescott", cpuFlags: Self.avx512, environment: ["OPENBLAS_CORETYPE": value]) == nil)
        }
    }

    @Test("Flags are the first processor's, split on spaces")
    func flags() {
        let info = "processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse3 avx512f avx512_bf16\nbugs\t\t: spectre\n\nprocessor\t: 1\nflags\t\t: fpu\n"
        #expect(BLASCore.cpuFlags(cpuinfo: info) == ["fpu", "sse3", "avx512f", "avx512_bf16"])
        #expect(BLASCore.cpuFlags(cpuinfo: "") == [])
        #expect(BLASCore.cpuFlags(cpuinfo: "flags without a colon") == [])
    }
}
