import Foundation
import HypernetDaemon
import HypernetStore
import HypernetSync
import Testing

/// Replays the libFuzzer corpus (`Fuzz/corpus/<target>/`: seeds, inputs the fuzzers found interesting,
/// and crashers once fixed) through the same entry points the fuzz targets call, on every `swift test`:
/// decoding errors are expected, traps and broken invariants are not. See `Fuzz/run.sh` and
/// Sources/HypernetSync/Wire/FuzzEntryPoints.swift.
@Suite struct FuzzCorpusTests {
    static let targets: [String: @Sendable ([UInt8]) -> [String]] = [
        "FuzzFrames": WireFuzz.frames,
        "FuzzHandshake": WireFuzz.handshake,
        "FuzzRecords": WireFuzz.records,
        "FuzzStore": StoreFuzz.records,
        "FuzzControl": ControlFuzz.requests,
        "FuzzHaves": WireFuzz.haveSets,
    ]

    /// `Fuzz/corpus`, found from this file: Tests/HypernetSyncTests/FuzzCorpusTests.swift.
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fuzz").appendingPathComponent("corpus")

    static func files(_ target: String) throws -> [URL] {
        let directory = corpus.appendingPathComponent(target)
        return try FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)
            .filter { !$0.lastPathComponent.hasPrefix(".") }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
    }

    @Test(arguments: ["FuzzFrames", "FuzzHandshake", "FuzzRecords", "FuzzStore", "FuzzControl", "FuzzHaves"])
    func corpusReplaysWithoutTrapping(target: String) throws {
        let entry = try #require(Self.targets[target])
        let files = try Self.files(target)
        #expect(!files.isEmpty, "no corpus in \(Self.corpus.path)/\(target)")
        for file in files {
            let violations = entry(Array(try Data(contentsOf: file)))
            #expect(violations.isEmpty, "\(target)/\(file.lastPathComponent): \(violations)")
        }
    }

    /// The seeds in the corpus are exactly what `WireFuzz.seeds()` generates, so they stay valid encodings
    /// (a wire or record format change shows up here). `HYPERNET_FUZZ_WRITE_SEEDS=1 swift test --filter
    /// FuzzCorpusTests` rewrites them.
    @Test func seedsMatchTheGenerator() throws {
        let write = ProcessInfo.processInfo.environment["HYPERNET_FUZZ_WRITE_SEEDS"] == "1"
        let seeds =
            WireFuzz.seeds() + StoreFuzz.seeds().map { ("FuzzStore", $0.name, $0.bytes) }
            + ControlFuzz.seeds().map { ("FuzzControl", $0.name, $0.bytes) }
        #expect(Set(seeds.map(\.target)) == Set(Self.targets.keys))
        for seed in seeds {
            #expect(Self.targets[seed.target]!(seed.bytes).isEmpty, "seed \(seed.target)/\(seed.name)")
            let file = Self.corpus.appendingPathComponent(seed.target).appendingPathComponent("seed-\(seed.name)")
            if write {
                try FileManager.default.createDirectory(
                    at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
                try Data(seed.bytes).write(to: file)
            }
            let stored = (try? Data(contentsOf: file)).map(Array.init)
            #expect(
                stored == seed.bytes,
                "\(file.path) is missing or stale: regenerate with HYPERNET_FUZZ_WRITE_SEEDS=1 swift test --filter FuzzCorpusTests"
            )
        }
    }
}
