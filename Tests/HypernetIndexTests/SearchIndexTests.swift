import GRDB
import Glibc
import HypernetIndex
import Testing

/// The index in-process, on a temporary SQLite file.
@Suite struct SearchIndexTests {
    final class Temporary {
        let directory: String
        var path: String { directory + "/search.sqlite" }
        init() {
            var template = Array("/tmp/hypernet-index-XXXXXX".utf8CString)
            directory = String(cString: mkdtemp(&template)!)
        }
        deinit {
            for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) }
            rmdir(directory)
        }
    }

    static func document(
        _ id: String, _ path: String, kind: String = "file", owner: String = "hn1me", size: UInt64 = 10,
        mtime: Int64 = 1000, tags: [String: String] = [:], source: String? = nil
    ) -> IndexedDocument {
        IndexedDocument(
            document: id, tree: "tree", revision: "rev-" + id, path: path, kind: kind, owner: owner, author: owner,
            size: size, mtime: mtime, created: mtime, conflict: false, shared: false, tags: tags,
            source: source ?? "src-" + id)
    }

    func paths(_ index: SearchIndex, _ query: String, sort: SearchSort = .relevance) throws -> [String] {
        try index.search(SearchPlan(SearchQuery(query, now: 10_000_000), sort: sort, limit: 100, offset: 0)).map(
            \.document.path)
    }

    @Test func textAndMetadataTogether() throws {
        let t = Temporary()
        let index = try SearchIndex(path: t.path)
        #expect(FileManagerless.mode(t.path) == 0o600)
        try index.apply(
            [
                (Self.document("a", "/plans/q4.txt", size: 5000, mtime: 2000), "The quarterly plan for Q4"),
                (Self.document("b", "/plans/draft.txt", mtime: 3000), "quarterly plan, a draft"),
                (Self.document("c", "/photo.jpg", size: 2 << 20, tags: ["color": "red"]), nil),
                (Self.document("d", "/plans", kind: "directory"), nil),
            ], removing: [], cursor: 7)
        #expect(try index.cursor() == 7)
        #expect(try paths(index, #""quarterly plan""#, sort: .modified) == ["/plans/draft.txt", "/plans/q4.txt"])
        #expect(try paths(index, #""quarterly plan" -draft"#) == ["/plans/q4.txt"])
        #expect(try paths(index, "plan*", sort: .path) == ["/plans", "/plans/draft.txt", "/plans/q4.txt"])
        #expect(try paths(index, "plan* size:>1K") == ["/plans/q4.txt"])
        #expect(try paths(index, "photo") == ["/photo.jpg"], "a binary file is found by its name")
        #expect(try paths(index, "tag:color=red") == ["/photo.jpg"])
        #expect(try paths(index, "tag:color=blue").isEmpty)
        #expect(try paths(index, "kind:dir") == ["/plans"])
        #expect(try paths(index, "-quarterly kind:file") == ["/photo.jpg"])
        #expect(
            try paths(index, "path:/plans/* modified:<3h", sort: .path) == ["/plans/draft.txt", "/plans/q4.txt"])
        #expect(try paths(index, "q4 OR photo", sort: .path) == ["/photo.jpg", "/plans/q4.txt"])
        #expect(try paths(index, "name:*.txt size:>1M OR kind:dir", sort: .path).isEmpty)
    }

    /// FTS5 and SQL syntax in a query are only ever text to find.
    @Test func queriesCannotInject() throws {
        let t = Temporary()
        let index = try SearchIndex(path: t.path)
        try index.apply([(Self.document("a", "/it's \"odd\".txt"), #"say "hi" NEAR(x y) a*b"#)], removing: [])
        #expect(try paths(index, #""say ""hi""""#) == [#"/it's "odd".txt"#])
        #expect(try paths(index, #"NEAR(x"#) == [#"/it's "odd".txt"#], "the phrase \"near x\"")
        #expect(try paths(index, #"name:it's* -"y x" OR AND"#) == [#"/it's "odd".txt"#])
        #expect(try paths(index, #"name:x';DROP* owner:"a'' OR 1=1""#).isEmpty)
        #expect(index.check().isEmpty)
        #expect(try index.statistics().documents == 1)
    }

    @Test func deletionRenameAndRebuild() throws {
        let t = Temporary()
        let index = try SearchIndex(path: t.path)
        try index.apply(
            [
                (Self.document("d", "/a", kind: "directory"), nil),
                (Self.document("f", "/a/f.txt"), "secret words"),
            ], removing: [])
        try index.move("/a", to: "/b")
        #expect(try paths(index, "secret") == ["/b/f.txt"])
        #expect(try index.documents(in: "/b").map(\.document) == ["f"])
        // The same source keeps the text row; a new one replaces it (the old row stays, unreachable).
        try index.apply([(Self.document("f", "/b/f.txt", mtime: 5), nil)], removing: [])
        #expect(try paths(index, "secret") == ["/b/f.txt"])
        try index.apply([(Self.document("f", "/b/f.txt", source: "new"), "other words")], removing: [])
        #expect(try paths(index, "secret").isEmpty)
        #expect(try index.statistics().orphans == 1)
        try index.apply([], removing: ["f"])
        #expect(try paths(index, "other").isEmpty)
        #expect(try index.statistics().documents == 1)
        try index.reset()
        #expect(try index.statistics().documents == 0)
        #expect(try index.cursor() == 0)
    }

    /// An append is one more text row of its document: found alone, answered once, excluded by any of its rows,
    /// and dropped with the rest when the document is indexed whole again.
    @Test func appendedTextIsARowOfItsDocument() throws {
        let t = Temporary()
        let index = try SearchIndex(path: t.path)
        var log = Self.document("l", "/var/app.log", source: "v1")
        log.textEnd = 12
        try index.apply([(log, "boot started\n"), (Self.document("o", "/other.txt"), "started")], removing: [])
        log.source = "v2"
        log.size = 40
        log.textEnd = 30
        try index.apply([], appending: [(log, "disk failed\nretry started\n")], removing: [])
        let indexed = try #require(try index.indexed("l"))
        #expect(indexed.segments == 2 && indexed.textEnd == 30 && indexed.size == 40)
        #expect(try paths(index, "failed") == ["/var/app.log"])
        #expect(try paths(index, "started", sort: .path) == ["/other.txt", "/var/app.log"], "once, though in 2 rows")
        #expect(try paths(index, "boot", sort: .path) == ["/var/app.log"])
        #expect(try paths(index, "started -failed") == ["/other.txt"], "excluded by its appended row")
        #expect(try paths(index, "-failed kind:file") == ["/other.txt"])
        #expect(try paths(index, "app.log") == ["/var/app.log"], "the name is in the first row")
        // The same source keeps both rows; a new text replaces them (both unreachable).
        log.mtime = 9
        try index.apply([(log, nil)], removing: [])
        #expect(try index.indexed("l")?.segments == 2)
        #expect(try paths(index, "failed") == ["/var/app.log"])
        log.source = "v3"
        try index.apply([(log, "rewritten\n")], removing: [])
        #expect(try paths(index, "failed").isEmpty)
        #expect(try index.indexed("l")?.segments == 1)
        #expect(try index.statistics().orphans == 2)
    }

    /// A broad query is answered from its window (the best-scoring text rows, or the first documents of its order)
    /// without joining and sorting every match, and always exactly as the whole query answers: ties at the window's
    /// edge, filters the window cannot fill a page from, appended rows and deep pages fall back to the whole query.
    @Test func aBroadQueryIsAnsweredFromItsWindowExactly() throws {
        let t = Temporary()
        let index = try SearchIndex(path: t.path)
        var documents: [(document: IndexedDocument, text: String?)] = []
        for i in 0..<3000 {
            // Scores differ by the word's count and the length; every tenth text is the same (equal scores).
            let text = i % 10 == 0 ? "common tie" : Array(repeating: "common", count: 1 + i % 7).joined(separator: " ")
            var d = Self.document(
                String(format: "%05d", i), "/d\(i % 3)/f\(i).txt", size: UInt64(i), mtime: Int64(i % 50))
            d.textEnd = 0
            documents.append((d, text + " " + Array(repeating: "filler", count: i % 13).joined(separator: " ")))
        }
        try index.apply(documents, removing: [])
        var grown = documents[2999].document
        grown.source = "grown"
        try index.apply(
            [], appending: [(grown, "common common common common common common common common")], removing: [])
        let reader = try DatabaseQueue(path: t.path)
        let queries = [
            "common", "common tie", "common -tie", "common size:>2990", "common name:f29*", "kind:file", "name:f1*",
            "size:>2990", "path:/d1/*", "tie OR filler", "", "size:>100", "modified:<1d kind:file",
            "modified:>1d", "owner:hn1me",
        ]
        for query in queries {
            for sort in SearchSort.allCases {
                for (limit, offset) in [(20, 0), (64, 64), (64, 1024), (1000, 0), (10, 2995)] {
                    let plan = SearchPlan(try SearchQuery(query, now: 0), sort: sort, limit: limit, offset: offset)
                    var whole = plan
                    whole.window = nil
                    let paths = try index.search(plan).map(\.document.path)
                    #expect(paths == (try index.search(whole).map(\.document.path)), "\(query) \(sort) \(offset)")
                }
            }
        }
        // The first page of a broad query comes from the window alone.
        for query in ["common", "common -tie", "kind:file", "name:f1*"] {
            let window = try #require(
                SearchPlan(try SearchQuery(query, now: 0), sort: .relevance, limit: 20, offset: 0).window)
            let rows = try reader.read { try Row.fetchAll($0, sql: window.sql, arguments: window.arguments) }
            #expect(window.answers(rows), "\(query)")
        }
    }

    /// A window without text terms reads through its order's index and stops once the page is full: a broad
    /// filter (`size:>20K`, `modified:<1d`) costs about a page of rows, not a copy of the window sorted again (which
    /// cost more than the whole query through the filter's own index). Its exactness: the test above.
    @Test func aMetadataWindowStopsAtItsPage() throws {
        let t = Temporary()
        let index = try SearchIndex(path: t.path)
        try index.apply(
            (0..<2000).map { (Self.document(String($0), "/f\($0)", size: UInt64($0), mtime: Int64($0 % 50)), nil) },
            removing: [])
        let reader = try DatabaseQueue(path: t.path)
        let columns = [
            SearchSort.relevance: "mtime", .modified: "mtime", .created: "created", .size: "size", .name: "name",
            .path: "path",
        ]
        for query in ["size:>1000", "modified:<1d kind:file", "owner:hn1me", "name:f1*"] {
            for sort in SearchSort.allCases {
                let plan = SearchPlan(try SearchQuery(query, now: 0), sort: sort, limit: 64, offset: 0)
                let window = try #require(plan.window)
                let steps = try reader.read { db in
                    try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + window.sql, arguments: window.arguments).map {
                        $0["detail"] as String
                    }
                }
                #expect(steps.first?.hasPrefix("SEARCH d USING INDEX docs_\(columns[sort]!) ") == true, "\(steps)")
                #expect(!steps.contains("USE TEMP B-TREE FOR ORDER BY"), "\(query) \(sort): \(steps)")
                let rows = try reader.read { try Row.fetchAll($0, sql: window.sql, arguments: window.arguments) }
                #expect(window.answers(rows), "\(query) \(sort)")
            }
        }
    }

    /// The text table keeps no prefix indexes (they made the index larger than the text): a prefix of any length
    /// is found by merging its words' lists, and an index of the format that had them is rebuilt.
    @Test func prefixesAreFoundWithoutPrefixIndexes() throws {
        let t = Temporary()
        let index = try SearchIndex(path: t.path)
        try index.apply([(Self.document("a", "/q.txt"), "quarterly planning, planned plans")], removing: [])
        for query in ["pl*", "pla*", "plann*", "quarter*", "q*"] { #expect(try paths(index, query) == ["/q.txt"]) }
        #expect(try paths(index, "plano*").isEmpty)
        let reader = try DatabaseQueue(path: t.path)
        let table = try reader.read {
            try String.fetchOne($0, sql: "SELECT sql FROM sqlite_master WHERE name = 'fulltext'")
        }
        #expect(table?.contains("prefix") == false)
        try reader.write { try $0.execute(sql: "PRAGMA user_version = 2") }
        try reader.close()
        try index.close()
        let (rebuilt, reason) = try SearchIndex.openOrRecreate(path: t.path)
        #expect(reason?.contains("index format 2") == true)
        #expect(try rebuilt.statistics().documents == 0)
    }

    @Test func aDamagedFileIsReplaced() throws {
        let t = Temporary()
        let fd = open(t.path, O_WRONLY | O_CREAT, 0o600)
        _ = Array(repeating: UInt8(0x41), count: 8192).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        #expect(throws: (any Error).self) { try SearchIndex(path: t.path) }
        let (index, reason) = try SearchIndex.openOrRecreate(path: t.path)
        #expect(reason != nil)
        #expect(index.check().isEmpty)
        #expect(try index.statistics().documents == 0)
    }

    @Test func aQueryReadsWhileTheIndexerWrites() throws {
        let t = Temporary()
        let index = try SearchIndex(path: t.path)
        try index.apply([(Self.document("a", "/a.txt"), "alpha")], removing: [])
        let writer = try DatabaseQueue(path: t.path)
        // A write transaction held open: a query still answers, from the last commit.
        try writer.inTransaction(.immediate) { db in
            try db.execute(sql: "DELETE FROM docs")
            #expect(try paths(index, "alpha") == ["/a.txt"])
            return .rollback
        }
    }

    /// A query's pages read one snapshot: rows the indexer removes before the page reached meanwhile (a revoke
    /// being applied while `search --offset` pages on) shift none of the pages after it.
    @Test func aQuerysPagesReadOneSnapshot() throws {
        let t = Temporary()
        let index = try SearchIndex(path: t.path)
        let paths = (0..<300).map { "/f" + String(1000 + $0).dropFirst() + ".txt" }
        try index.apply(paths.enumerated().map { (Self.document("d\($0.offset)", $0.element), nil) }, removing: [])
        let writer = try DatabaseQueue(path: t.path)
        let query = try SearchQuery("kind:file", now: 10_000_000)
        var found: [String] = []
        var failure: (any Error)?
        let plan = { (offset: Int) in SearchPlan(query, sort: .path, limit: 100, offset: offset) }
        try index.search(
            pages: plan,
            while: { hits in
                found += hits.map(\.document.path)
                if found.count == 100 {
                    do { try writer.write { try $0.execute(sql: "DELETE FROM docs WHERE path < '/f050'") } } catch {
                        failure = error
                    }
                }
                return hits.count == 100
            })
        #expect(failure == nil)
        #expect(found == paths)
        #expect(try self.paths(index, "kind:file", sort: .path).first == "/f050.txt", "the delete committed")
    }
}

enum FileManagerless {
    static func mode(_ path: String) -> mode_t {
        var st = stat()
        return stat(path, &st) == 0 ? st.st_mode & 0o777 : 0
    }
}
