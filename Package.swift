// swift-tools-version:6.1
// Layers, bottom to top (dependencies point down only; see docs/design.md):
//   C shims (CSodium, COpenSSL, CZstd, CFuse3, CLinux) -> HypernetCrypto -> HypernetModel -> HypernetStore
//   -> HypernetVFS -> HypernetFUSE -> HypernetDaemon -> hypernet (CLI)
//   HypernetStore -> HypernetSync -> HypernetDaemon (HypernetVFS and HypernetSync never import each other)
//   HypernetIndex (the search index and query language; GRDB only) -> HypernetDaemon
//   CPCRE2 -> HypernetScan (grep's line scanner; no Hypernet module) -> HypernetDaemon
import PackageDescription

let package = Package(
    name: "Hypernet",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "hypernet", targets: ["hypernet"]),
        // For the libFuzzer package in Fuzz/ (built separately: it needs -sanitize=fuzzer).
        .library(name: "HypernetSync", targets: ["HypernetSync"]),
        .library(name: "HypernetDaemon", targets: ["HypernetDaemon"]),
    ],
    dependencies: [
        .package(url: "https://github.com/groue/GRDB.swift", exact: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", exact: "2.101.3"),
    ],
    targets: [
        // C modules: a module map and a shim header each, no logic.
        .systemLibrary(name: "CSodium", pkgConfig: "libsodium", providers: [.apt(["libsodium-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CFuse3", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        .systemLibrary(name: "CPCRE2", pkgConfig: "libpcre2-8", providers: [.apt(["libpcre2-dev"])]),
        // Linux calls Glibc's Swift module hides behind _GNU_SOURCE (memfd_create).
        .target(name: "CLinux"),

        // Named steps where a test build (-DHYPERNET_FAILPOINTS) crashes, stalls or fails on demand; nothing otherwise.
        .target(name: "HypernetFailpoint"),
        // The only importer of CSodium and COpenSSL: keys in sodium memory, sign, AEAD, hash.
        .target(name: "HypernetCrypto", dependencies: ["CSodium", "COpenSSL"]),
        // Pure values and codecs: ids, revisions, manifests, HLC, DAG. No I/O.
        .target(name: "HypernetModel", dependencies: ["HypernetCrypto"]),
        // Durable local state: SQLite catalog, packs, chunker, zstd (the only importer of CZstd).
        .target(
            name: "HypernetStore",
            dependencies: [
                "HypernetCrypto", "HypernetFailpoint", "HypernetModel", "CZstd",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The local search index (a SQLite file of its own) and the query language: docs/search.md.
        .target(name: "HypernetIndex", dependencies: [.product(name: "GRDB", package: "GRDB.swift")]),
        // grep's patterns and line scanner over bytes (PCRE2 with its JIT; the only importer of CPCRE2): docs/grep.md.
        .target(name: "HypernetScan", dependencies: ["CPCRE2"]),
        // Filesystem semantics without a kernel: inodes, handles, staging, xattrs.
        .target(
            name: "HypernetVFS",
            dependencies: [
                "CLinux", "HypernetCrypto", "HypernetFailpoint", "HypernetModel", "HypernetStore",
                .product(name: "Logging", package: "swift-log"),
            ]),
        // Node to node: Noise handshake, framing, sessions, replication, quorum acks (SwiftNIO TCP).
        .target(
            name: "HypernetSync",
            dependencies: [
                "CLinux", "HypernetCrypto", "HypernetFailpoint", "HypernetModel", "HypernetStore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The only importer of CFuse3: low-level FUSE ops mapped onto HypernetVFS.
        .target(
            name: "HypernetFUSE",
            dependencies: [
                "CFuse3", "HypernetStore", "HypernetVFS",
                .product(name: "Logging", package: "swift-log"),
            ]),
        // Composition root: node start-up, mount, control socket, signals, logging.
        .target(
            name: "HypernetDaemon",
            dependencies: [
                "CLinux", "HypernetCrypto", "HypernetFailpoint", "HypernetIndex", "HypernetModel", "HypernetScan",
                "HypernetStore", "HypernetVFS", "HypernetFUSE", "HypernetSync",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(
            name: "hypernet",
            dependencies: [
                "CLinux", "HypernetCrypto", "HypernetDaemon", "HypernetModel", "HypernetScan", "HypernetStore",
                "HypernetSync", "HypernetVFS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // A misbehaving peer for tests/integration/test_hostile_peers.py (loopback only).
        .executableTarget(
            name: "hypernet-peer-double",
            dependencies: ["HypernetCrypto", "HypernetModel", "HypernetStore", "HypernetSync"]),
        // A modified node for tests/integration/test_forgery.py: writes forged records into a stopped node's store.
        .executableTarget(
            name: "hypernet-forge",
            dependencies: [
                "HypernetCrypto", "HypernetModel", "HypernetStore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ]),

        .testTarget(name: "HypernetCryptoTests", dependencies: ["HypernetCrypto"]),
        .testTarget(
            name: "HypernetIndexTests",
            dependencies: ["HypernetIndex", .product(name: "GRDB", package: "GRDB.swift")]),
        .testTarget(name: "HypernetScanTests", dependencies: ["HypernetScan"]),
        .testTarget(name: "HypernetModelTests", dependencies: ["HypernetModel", "HypernetCrypto"]),
        .testTarget(
            name: "HypernetStoreTests",
            dependencies: [
                "HypernetStore", "HypernetModel", "HypernetCrypto",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(
            name: "HypernetVFSTests",
            dependencies: [
                "HypernetVFS", "HypernetStore", "HypernetModel", "HypernetCrypto",
                .product(name: "Logging", package: "swift-log"),
            ],
            // Read by path (`#filePath`), not bundled.
            exclude: ["Fixtures"]),
        .testTarget(
            name: "HypernetSyncTests",
            dependencies: [
                // HypernetDaemon for FuzzCorpusTests only (the control socket's requests).
                "HypernetSync", "HypernetStore", "HypernetModel", "HypernetCrypto", "HypernetDaemon",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["Fixtures"]),
    ],
    swiftLanguageModes: [.v6]
)
