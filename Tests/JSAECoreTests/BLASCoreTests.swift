import Testing
@testable import JSAECore

@Suite("OpenBLAS core choice")
struct BLASCoreTests {
    static let avx512: Set<Substring> = ["sse3", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"]

    /// The ladder written out as OpenBLAS's dynamic.c walks it for a model it
    /// knows: BF16 first, then AVX-512, AVX2 with FMA, AVX.
    @Test("A Prescott fallback is replaced by the core the CPU's features call for")
    func ladder() {
        #expect(BLASCore.replacement(loaded: "Prescott", cpuFlags: Self.avx512.union(["avx512_bf16"]), environment: [:]) == "Cooperlake")
        #expect(BLASCore.replacement(loaded: "Prescott", cpuFlags: Self.avx512, environment: [:]) == "SkylakeX")
        #expect(BLASCore.replacement(loaded: "Prescott", cpuFlags: Self.avx512.subtracting(["avx512vl"]), environment: [:]) == "Haswell")
        #expect(BLASCore.replacement(loaded: "Prescott", cpuFlags: ["sse3", "avx", "avx2"], environment: [:]) == "Sandybridge")
        #expect(BLASCore.replacement(loaded: "Prescott", cpuFlags: ["sse3", "avx", "fma"], environment: [:]) == "Sandybridge")
        #expect(BLASCore.replacement(loaded: "Prescott", cpuFlags: ["sse3", "ssse3", "sse4_2"], environment: [:]) == nil)
        #expect(BLASCore.replacement(loaded: "Prescott", cpuFlags: [], environment: [:]) == nil)
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
