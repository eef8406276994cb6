// swift-tools-version:6.1
// libFuzzer targets for the peer protocol, the record decoders and the control socket's requests. A package of its own because a libFuzzer
// build instruments everything with `-sanitize=fuzzer` (and links libFuzzer), which the main package's
// builds must not. Build and run them with `Fuzz/run.sh`; what each target feeds where is described in
// Sources/HypernetSync/Wire/FuzzEntryPoints.swift. Their corpus (Fuzz/corpus/<target>/) is replayed by
// `swift test` in the main package (Tests/HypernetSyncTests/FuzzCorpusTests.swift).
//
// Each main.swift hands control to libFuzzer through LLVMFuzzerRunDriver rather than letting libFuzzer's
// own main run (the usual `-parse-as-library` recipe): SwiftPM on Linux links executables with
// `--defsym main=<Module>_main`, which needs the module's top-level code to exist.
import PackageDescription

// A path dependency's identity is its directory's name, whatever the checkout is called.
let root = String(#filePath.split(separator: "/").dropLast(2).last ?? "main")

let package = Package(
    name: "HypernetFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(path: "..")],
    targets: [.target(name: "CFuzzDriver", path: "CFuzzDriver")]
        + [
            ("FuzzFrames", "HypernetSync"), ("FuzzHandshake", "HypernetSync"), ("FuzzRecords", "HypernetSync"),
            ("FuzzStore", "HypernetSync"), ("FuzzControl", "HypernetDaemon"),
            ("FuzzHaves", "HypernetSync"),
        ].map { name, library in
            .executableTarget(
                name: name,
                dependencies: ["CFuzzDriver", .product(name: library, package: root)],
                path: name)
        },
    swiftLanguageModes: [.v6]
)
