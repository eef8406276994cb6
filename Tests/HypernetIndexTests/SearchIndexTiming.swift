import Foundation
import HypernetIndex
import Testing

/// A timing harness, not a test: off unless `HYPERNET_INDEX_TIMING=N` is set. It indexes N documents made like
/// bench/search.py's corpus (slices of the text Debian ships, mean 10 KB, 1,000 a folder) in-process and prints the
/// indexing rate and the p50/p99 of bench/search_queries.txt's queries as the daemon runs them (a page of 64).
/// `HYPERNET_INDEX_TIMING_FILE=PATH` keeps the index there and reuses it on the next run. Figures only: nothing
/// is asserted of them.
@Suite struct SearchIndexTiming {
    static let count = Int(ProcessInfo.processInfo.environment["HYPERNET_INDEX_TIMING"] ?? "") ?? 0

    static func corpusText(limit: Int) -> [UInt8] {
        var out: [UInt8] = []
        for top in ["/usr/share/doc", "/usr/share/man"] {
            guard let walker = FileManager.default.enumerator(atPath: top) else { continue }
            for case let relative as String in walker {
                let path = top + "/" + relative
                guard !relative.hasSuffix(".gz"),
                    let data = FileManager.default.contents(atPath: path), data.count < 1 << 20,
                    !data.prefix(8192).contains(0), String(data: data, encoding: .utf8) != nil
                else { continue }
                out += data
                out.append(10)
                if out.count >= limit { return out }
            }
        }
        return out
    }

    static func seconds(_ body: () throws -> Void) rethrows -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    @Test(.enabled(if: count > 0)) func figures() throws {
        let now: Int64 = 1_800_000_000_000
        let kept = ProcessInfo.processInfo.environment["HYPERNET_INDEX_TIMING_FILE"]
        let t = SearchIndexTests.Temporary()
        let path = kept ?? t.path
        let reuse = kept.map { FileManager.default.fileExists(atPath: $0) } ?? false
        let index = try SearchIndex(path: path)
        if !reuse {
            let text = Self.corpusText(limit: 32 << 20)
            let words = Set(String(decoding: text.prefix(4 << 20), as: UTF8.self).split(separator: " "))
                .filter { $0.count >= 4 && $0.count <= 12 && $0.allSatisfy(\.isLetter) }.sorted()
            var rng = SystemRandomNumberGenerator()
            var batch: [(document: IndexedDocument, text: String?)] = []
            var bytes = 0
            let elapsed = try Self.seconds {
                for i in 0..<Self.count {
                    let length = max(64, Int(-log(Double.random(in: 0.0001..<1, using: &rng)) * 10_000))
                    let start = Int.random(in: 0..<(text.count - length), using: &rng)
                    let header = (["hnbench\(i)"] + (0..<6).map { _ in String(words.randomElement(using: &rng)!) })
                        .joined(separator: " ")
                    let body = header + "\n" + String(decoding: text[start..<start + length], as: UTF8.self)
                    bytes += body.utf8.count
                    let name = String(format: "/d%03d/doc%06d.txt", i / 1000, i)
                    var d = SearchIndexTests.document(
                        String(format: "%032x", i), name, size: UInt64(body.utf8.count),
                        mtime: now - Int64(Self.count - i) * 10)
                    d.textEnd = Int64(body.utf8.count)
                    batch.append((d, body))
                    if batch.count == 512 {
                        try index.apply(batch, removing: [])
                        batch = []
                    }
                }
                try index.apply(batch, removing: [])
            }
            print(
                "timing: indexed \(Self.count) documents, \(bytes / 1_000_000) MB in \(elapsed) s: "
                    + "\(Int(Double(Self.count) / elapsed)) documents/s")
        }
        let queries = [
            "name:doc000042.txt", "name:doc0*", "size:>20K", "modified:<1d kind:file", "owner:hn1me kind:file",
            "hnbench42", "the", "file", "\"free software\"", "licen*", "hnbench42 path:/d000/*", "the size:>20K",
            "the name:doc00*",
        ]
        for text in queries {
            let query = try SearchQuery(text, now: now)
            var times: [Double] = []
            var found = 0
            for _ in 0..<20 {
                times.append(
                    try Self.seconds {
                        found = try index.search(SearchPlan(query, sort: .relevance, limit: 64, offset: 0)).count
                    })
            }
            times.sort()
            print(
                "timing: \(text): \(found) hits, p50 \(String(format: "%.2f", times[10] * 1000)) ms, "
                    + "max \(String(format: "%.2f", times[19] * 1000)) ms")
        }
    }
}
