// swift-tools-version:6.0
import PackageDescription

// A training step allocates ~800 MB of buffers at the Pythia-70m shape. glibc
// serves blocks over 32 MB with fresh mmaps, so every step page-faulted all of
// it again (10 s of system time per benchmark run); tcmalloc (from
// libgoogle-perftools-dev, which the profiler needs anyway) keeps freed spans
// for reuse and also provides HEAPPROFILE.
let tcmalloc: [LinkerSetting] = [.linkedLibrary("tcmalloc")]

let package = Package(
    name: "jsae-harness",
    products: [
        // MARK: Public API
        .library(name: "JSAECore", targets: ["JSAECore"]),
        .library(name: "JSAEIO", targets: ["JSAEIO"]),
        .library(name: "JSAERuns", targets: ["JSAERuns"]),
        .executable(name: "jsae", targets: ["jsae"]),
        .executable(name: "jsae-bench", targets: ["jsae-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // MARK: System-library shims (one header, one module map each; found through pkg-config)
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CHDF5", pkgConfig: "hdf5",
                       providers: [.apt(["libhdf5-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CGPerfTools", pkgConfig: "libprofiler",
                       providers: [.apt(["libgoogle-perftools-dev"])]),
        // Heap allocations counted through tcmalloc's MallocHook (jsae-bench's allocations per step).
        .target(name: "CAllocationCounter", linkerSettings: tcmalloc),

        // MARK: Implementation
        .target(name: "JSAECore", dependencies: ["CBLAS", "CJSAEKernels"]),
        // The Float step's per-token Jacobian and MLP GELU, in C: runtime-dispatched
        // (AVX-512F, AVX2+FMA, portable) through function-level target attributes,
        // so no compiler flag ties the build to one CPU.
        .target(name: "CJSAEKernels"),
        .target(name: "JSAEIO", dependencies: ["JSAECore", "CHDF5"]),
        // Drivers over files: training runs (batch stream, checkpoints, progress) and forward runs.
        .target(name: "JSAERuns", dependencies: ["JSAECore", "JSAEIO"]),
        .target(name: "JSAEReport", dependencies: ["JSAECore", "JSAEIO", "JSAERuns", "CZlib"]),
        // What jsae and jsae-bench share: options (threads, shapes, seed) and one-line errors.
        .target(name: "JSAECLIOptions", dependencies: [
            "JSAECore", "JSAEIO", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "jsae", dependencies: [
            "JSAECore", "JSAEIO", "JSAERuns", "JSAEReport", "JSAECLIOptions",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], linkerSettings: tcmalloc),

        // MARK: Benchmarks
        .executableTarget(name: "jsae-bench", dependencies: [
            "JSAECore", "JSAEIO", "JSAERuns", "JSAECLIOptions", "_JSAETestSupport", "CGPerfTools", "CBLAS", "CAllocationCounter",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], path: "Benchmarks/jsae-bench", linkerSettings: tcmalloc),

        // MARK: Tests
        // Test-only code: golden-file loaders, naive reference maths, seeded fixtures.
        // jsae-bench uses its golden loader for the CI gate's fingerprint.
        .target(name: "_JSAETestSupport", dependencies: ["JSAECore", "JSAEIO", "CZlib"]),
        .testTarget(name: "JSAECoreTests", dependencies: ["JSAECore", "_JSAETestSupport"]),
        .testTarget(name: "JSAEIOTests", dependencies: ["JSAECore", "JSAEIO", "JSAERuns", "_JSAETestSupport"]),
        .testTarget(name: "JSAERunsTests", dependencies: ["JSAECore", "JSAEIO", "JSAERuns", "_JSAETestSupport"]),
        .testTarget(name: "JSAEReportTests", dependencies: ["JSAEReport", "JSAECore", "JSAEIO", "_JSAETestSupport"]),
        .testTarget(name: "CLITests", dependencies: ["jsae", "jsae-bench", "JSAECore", "JSAEIO", "JSAERuns", "JSAEReport", "_JSAETestSupport", "CZlib"]),
        // Hostile input and faults: quick and seeded; the long
        // campaign in the same target runs only with JSAE_FUZZ_CAMPAIGN=N
        // (ci/fuzz-campaign.sh).
        .testTarget(name: "FuzzTests", dependencies: ["jsae", "jsae-bench", "JSAECore", "JSAEIO", "_JSAETestSupport", "CHDF5"]),
        // The C kernels, every path this CPU runs: the Jacobian against a
        // double-precision reference written in C (fast in debug builds), the
        // GELU against libm's erf and exp in Double.
        .target(name: "KernelReference", path: "Tests/KernelReference"),
        .testTarget(name: "KernelTests", dependencies: ["CJSAEKernels", "KernelReference"]),
    ]
)
