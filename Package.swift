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
    platforms: [.macOS(.v13)],
    products: [
        // MARK: Public API
        .library(name: "JSAECore", targets: ["JSAECore"]),
        .library(name: "JSAEIO", targets: ["JSAEIO"]),
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
        .systemLibrary(name: "CGPerfTools", pkgConfig: "libprofiler",
                       providers: [.apt(["libgoogle-perftools-dev"])]),

        // MARK: Implementation
        .target(name: "JSAECore", dependencies: ["CBLAS"]),
        // Per-token Jacobian kernels in C, runtime-dispatched (AVX-512F, AVX2+FMA,
        // portable) through function-level target attributes: no compiler flags.
        .target(name: "CJSAEKernels"),
        .target(name: "JSAEIO", dependencies: ["JSAECore", "CHDF5"]),
        .target(name: "JSAEReport", dependencies: ["JSAECore", "JSAEIO"]),
        .executableTarget(name: "jsae", dependencies: [
            "JSAECore", "JSAEIO", "JSAEReport",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], linkerSettings: tcmalloc),

        // MARK: Benchmarks
        .executableTarget(name: "jsae-bench", dependencies: [
            "JSAECore", "JSAEIO", "CGPerfTools", "CBLAS",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], path: "Benchmarks/jsae-bench", linkerSettings: tcmalloc),

        .executableTarget(name: "jacobian-kernel-bench", dependencies: ["CJSAEKernels", "CBLAS"],
                          path: "Benchmarks/jacobian-kernel-bench"),

        // MARK: Tests
        .target(name: "JSAETestSupport", dependencies: ["JSAECore", "JSAEIO"], path: "Sources/JSAETestSupport"),
        .testTarget(name: "JSAECoreTests", dependencies: ["JSAECore", "JSAETestSupport"]),
        .testTarget(name: "JSAEIOTests", dependencies: ["JSAECore", "JSAEIO", "JSAETestSupport"]),
        .target(name: "KernelReference", path: "Tests/KernelReference"),
        .testTarget(name: "KernelTests", dependencies: ["CJSAEKernels", "KernelReference"]),
        .testTarget(name: "CLITests", dependencies: ["jsae", "jsae-bench", "JSAECore", "JSAEIO", "JSAEReport", "JSAETestSupport"]),
    ]
)
