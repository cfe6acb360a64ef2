// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "jsae-harness",
    platforms: [.macOS(.v13)],
    products: [
        // MARK: Public API
        .library(name: "JSAECore", targets: ["JSAECore"]),
        .library(name: "JSAEIO", targets: ["JSAEIO"]),
        .executable(name: "jsae", targets: ["jsae"]),
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
        .target(name: "JSAEIO", dependencies: ["JSAECore", "CHDF5"]),
        .executableTarget(name: "jsae", dependencies: [
            "JSAECore", "JSAEIO",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // MARK: Tests
        .target(name: "JSAETestSupport", dependencies: ["JSAECore", "JSAEIO"], path: "Sources/JSAETestSupport"),
        .testTarget(name: "JSAECoreTests", dependencies: ["JSAECore", "JSAETestSupport"]),
        .testTarget(name: "JSAEIOTests", dependencies: ["JSAECore", "JSAEIO", "JSAETestSupport"]),
        .testTarget(name: "CLITests", dependencies: ["jsae", "JSAECore", "JSAEIO", "JSAETestSupport"]),
    ]
)
