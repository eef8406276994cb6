import GRDB
import Glibc

/// One document as the index holds it: the state its node shows (the visible head), never a copy of its content.
public struct IndexedDocument: Sendable, Equatable {
    /// Hex ids: the document, its tree's owner key, the revision indexed.
    public var document: String
    public var tree: String
    public var revision: String
    /// From the mount root: "/a/b.txt", "/@alice/share/doc.txt".
    public var path: String
    public var kind: String
    /// Identity tokens.
    public var owner: String
    public var author: String
    public var size: UInt64
    /// Milliseconds since the epoch: the POSIX mtime, and the time of the document's first revision.
    public var mtime: Int64
    public var created: Int64
    public var conflict: Bool
    public var shared: Bool
    /// `user.*` xattrs other than `user.hypernet.*`, names without `user.`; values as UTF-8 (lossy).
    public var tags: [String: String]
    /// What the text row is made from (name and content root): equal sources keep the row, so a metadata change
    /// neither reads the content nor rewrites the full-text index.
    public var source: String
    /// Where indexing may resume when the file grows by an append: the byte after the last line feed of the text
    /// indexed (UTF-8 without a byte-order mark, within `SearchIndex.textLimit`); -1 when an append re-indexes whole.
    public var textEnd: Int64
    /// How many full-text rows the text is: the first, and one per append indexed since.
    public var segments: Int

    public init(
        document: String, tree: String, revision: String, path: String, kind: String, owner: String, author: String,
        size: UInt64, mtime: Int64, created: Int64, conflict: Bool, shared: Bool, tags: [String: String],
        source: String, textEnd: Int64 = -1, segments: Int = 0
    ) {
        self.document = document
        self.tree = tree
        self.revision = revision
        self.path = path
        self.kind = kind
        self.owner = owner
        self.author = author
        self.size = size
        self.mtime = mtime
        self.created = created
        self.conflict = conflict
        self.shared = shared
        self.tags = tags
        self.source = source
        self.textEnd = textEnd
        self.segments = segments
    }

    public var name: String { path == "/" ? "/" : String(path[path.index(after: path.lastIndex(of: "/")!)...]) }
    var directory: String {
        let slash = path.lastIndex(of: "/")!
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }
}

/// One result row, as the index has it (the caller checks rights and the current path before showing it).
public struct SearchHit: Sendable, Equatable {
    /// Without its tags.
    public var document: IndexedDocument
    /// bm25 (lower is better); 0 without text terms.
    public var score: Double
}

/// The local search index: a SQLite file of its own (derived state, never replicated: docs/search.md), with a
/// contentless FTS5 table, so it holds no second copy of the text. A document's text is one or more rows of it
/// (`segments`): the first, and one per append indexed since, so a grown log costs only its new lines. WAL: queries read on their own connections and
/// never wait for the indexer, and each document changes in one transaction, so no query sees half of it.
public final class SearchIndex: Sendable {
    /// The schema this code writes; a file with another is dropped and rebuilt (the index is derived state).
    static let formatVersion = 3
    /// At most this much of a file's text is indexed (the rest of a larger file is not searchable by words).
    public static let textLimit = 8 << 20
    /// A document with this many text rows is indexed whole again at its next append (one row).
    public static let segmentLimit = 64

    public let path: String
    let pool: DatabasePool

    /// Opens the index at `path`, creating it (0600) if missing. Throws if the file is not a usable index.
    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw IndexError("cannot create \(path): \(String(cString: strerror(errno)))") }
        Glibc.close(fd)
        var config = Configuration()
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            // A deleted row's names and metadata do not stay in free pages.
            try db.execute(sql: "PRAGMA secure_delete = ON")
        }
        config.busyMode = .timeout(10)
        pool = try DatabasePool(path: path, configuration: config)
        try pool.write { db in
            let version = try Int.fetchOne(db, sql: "PRAGMA user_version") ?? 0
            if version == 0 {
                try Self.create(db)
            } else if version != Self.formatVersion {
                throw IndexError("\(path): index format \(version), this hypernet writes \(Self.formatVersion)")
            }
        }
        let problems = check()
        if !problems.isEmpty { throw IndexError(problems.joined(separator: "; ")) }
    }

    /// Opens the index at `path`, or, if it is damaged or of another format, deletes it and starts an empty one
    /// (the caller indexes everything again: its cursor is 0). `reason` is why it was rebuilt, if it was.
    public static func openOrRecreate(path: String) throws -> (index: SearchIndex, reason: String?) {
        do {
            return (try SearchIndex(path: path), nil)
        } catch {
            for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) }
            return (try SearchIndex(path: path), "\(error)")
        }
    }

    private static func create(_ db: Database) throws {
        try db.execute(
            sql: """
                CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
                CREATE TABLE docs (
                    document TEXT PRIMARY KEY,
                    tree TEXT NOT NULL,
                    revision TEXT NOT NULL,
                    path TEXT NOT NULL,
                    dir TEXT NOT NULL,
                    name TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    owner TEXT NOT NULL,
                    author TEXT NOT NULL,
                    size INTEGER NOT NULL,
                    mtime INTEGER NOT NULL,
                    created INTEGER NOT NULL,
                    conflict INTEGER NOT NULL,
                    shared INTEGER NOT NULL,
                    source TEXT NOT NULL,
                    text_end INTEGER NOT NULL,
                    segments INTEGER NOT NULL
                );
                CREATE INDEX docs_dir ON docs(dir);
                CREATE INDEX docs_path ON docs(path);
                CREATE INDEX docs_name ON docs(name);
                CREATE INDEX docs_mtime ON docs(mtime);
                CREATE INDEX docs_created ON docs(created);
                CREATE INDEX docs_size ON docs(size);
                CREATE INDEX docs_owner ON docs(owner);
                CREATE INDEX docs_author ON docs(author);
                CREATE INDEX docs_tree ON docs(tree);
                CREATE TABLE tags (
                    document TEXT NOT NULL,
                    name TEXT NOT NULL,
                    value TEXT NOT NULL,
                    PRIMARY KEY (document, name)
                ) WITHOUT ROWID;
                CREATE INDEX tags_name ON tags(name, value);
                CREATE TABLE segments (text_id INTEGER PRIMARY KEY, document TEXT NOT NULL);
                CREATE INDEX segments_document ON segments(document);
                -- No prefix indexes: they held each word again per prefix length (the index was 1.05x the text
                -- rather than 0.53x, and slower to write); a `plan*` merges the lists of the words it covers.
                CREATE VIRTUAL TABLE fulltext USING fts5(
                    name, body, content='', tokenize='unicode61 remove_diacritics 2');
                INSERT INTO meta (key, value) VALUES ('cursor', 0), ('orphans', 0);
                PRAGMA user_version = \(formatVersion);
                """)
    }

    /// Empties the index (`hypernet index --rebuild`): the caller indexes everything again from cursor 0.
    public func reset() throws {
        try pool.write { db in
            try db.execute(
                sql: "DROP TABLE docs; DROP TABLE tags; DROP TABLE segments; DROP TABLE fulltext; DROP TABLE meta")
            try Self.create(db)
        }
        try pool.writeWithoutTransaction { db in try db.execute(sql: "VACUUM") }
    }

    /// Closes the file, its WAL checkpointed and emptied (what stays in the file is all there is); nothing may use
    /// the index after.
    public func close() throws {
        try pool.writeWithoutTransaction { db in _ = try db.checkpoint(.truncate) }
        try pool.close()
    }

    /// The last log position indexed.
    public func cursor() throws -> Int64 {
        try pool.read { db in try Self.meta(db, "cursor") }
    }

    public func statistics() throws -> (documents: Int, orphans: Int64) {
        try pool.read { db in
            (try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM docs") ?? 0, try Self.meta(db, "orphans"))
        }
    }

    private static func meta(_ db: Database, _ key: String) throws -> Int64 {
        try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = ?", arguments: [key]) ?? 0
    }

    private static func setMeta(_ db: Database, _ key: String, _ value: Int64) throws {
        try db.execute(sql: "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", arguments: [key, value])
    }

    /// The document as indexed, if it is.
    public func indexed(_ document: String) throws -> IndexedDocument? {
        try pool.read { db in try Self.fetch(db, "document = ?", [document]).first }
    }

    /// The documents indexed in directory `dir` (by its indexed path), for re-checking their paths.
    public func documents(in dir: String) throws -> [IndexedDocument] {
        try pool.read { db in try Self.fetch(db, "dir = ?", [dir]) }
    }

    /// Every document indexed of `tree` (hex), for re-checking them after its rights changed.
    public func documents(tree: String) throws -> [IndexedDocument] {
        try pool.read { db in try Self.fetch(db, "tree = ?", [tree]) }
    }

    private static func fetch(_ db: Database, _ condition: String, _ arguments: StatementArguments) throws
        -> [IndexedDocument]
    {
        let tags = try db.cachedStatement(sql: "SELECT name, value FROM tags WHERE document = ?")
        return try Row.fetchAll(
            db, sql: "SELECT \(SearchPlan.columns) FROM docs d WHERE \(condition)", arguments: arguments
        )
        .map { row in
            var d = document(row)
            let pairs = try Row.fetchAll(tags, arguments: [d.document]).map { ($0[0] as String, $0[1] as String) }
            d.tags = Dictionary(pairs) { a, _ in a }
            return d
        }
    }

    /// A row of `SearchPlan.columns`, without its tags.
    private static func document(_ row: Row) -> IndexedDocument {
        IndexedDocument(
            document: row[0], tree: row[1], revision: row[2], path: row[3], kind: row[4], owner: row[5],
            author: row[6], size: UInt64(clamping: row[7] as Int64), mtime: row[8], created: row[9],
            conflict: row[10], shared: row[11], tags: [:], source: row[12], textEnd: row[13], segments: row[14])
    }

    /// One transaction: each document's new state (with `text` when its source changed; nil keeps the text rows if
    /// the source is the same, else indexes the name only), the documents whose text grew by an append (their new
    /// state, and the appended text: one more row), the removed documents, and the new cursor.
    public func apply(
        _ documents: [(document: IndexedDocument, text: String?)],
        appending appended: [(document: IndexedDocument, text: String)] = [], removing removed: [String],
        cursor: Int64? = nil
    ) throws {
        try pool.write { db in
            var orphans: Int64 = 0
            for document in removed { orphans += try Self.remove(db, document) }
            for (d, text) in documents {
                var d = d
                let old = try Row.fetchOne(
                    db, sql: "SELECT source, text_end, segments FROM docs WHERE document = ?", arguments: [d.document])
                if let old, old["source"] as String? == d.source, text == nil {
                    d.textEnd = old["text_end"]
                    d.segments = old["segments"]
                } else {
                    // A contentless table cannot delete a row without its text: the old ones are left unreachable.
                    orphans += try Self.dropSegments(db, d.document)
                    try Self.addSegment(db, d.document, name: d.name, text ?? "")
                    d.segments = 1
                }
                try Self.write(db, d)
            }
            for (d, text) in appended {
                var d = d
                d.segments =
                    try Int.fetchOne(
                        db, sql: "SELECT COUNT(*) FROM segments WHERE document = ?", arguments: [d.document]) ?? 0
                // The name is in the first row only, so a name match weighs the same however long the file grew.
                try Self.addSegment(db, d.document, name: "", text)
                d.segments += 1
                try Self.write(db, d)
            }
            if orphans > 0 { try Self.setMeta(db, "orphans", try Self.meta(db, "orphans") + orphans) }
            if let cursor { try Self.setMeta(db, "cursor", cursor) }
        }
    }

    private static func addSegment(_ db: Database, _ document: String, name: String, _ text: String) throws {
        try db.execute(sql: "INSERT INTO fulltext (name, body) VALUES (?, ?)", arguments: [name, text])
        try db.execute(
            sql: "INSERT INTO segments (text_id, document) VALUES (?, ?)", arguments: [db.lastInsertedRowID, document])
    }

    /// Unlinks the document's text rows; returns how many (now unreachable).
    private static func dropSegments(_ db: Database, _ document: String) throws -> Int64 {
        try db.execute(sql: "DELETE FROM segments WHERE document = ?", arguments: [document])
        return Int64(db.changesCount)
    }

    private static func write(_ db: Database, _ d: IndexedDocument) throws {
        try db.execute(
            sql: """
                INSERT OR REPLACE INTO docs (document, tree, revision, path, dir, name, kind, owner, author,
                    size, mtime, created, conflict, shared, source, text_end, segments)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                d.document, d.tree, d.revision, d.path, d.directory, d.name, d.kind, d.owner, d.author,
                Int64(clamping: d.size), d.mtime, d.created, d.conflict, d.shared, d.source, d.textEnd, d.segments,
            ])
        try db.execute(sql: "DELETE FROM tags WHERE document = ?", arguments: [d.document])
        for (name, value) in d.tags {
            try db.execute(
                sql: "INSERT INTO tags (document, name, value) VALUES (?, ?, ?)", arguments: [d.document, name, value])
        }
    }

    /// Whether the document was indexed; its text rows become unreachable.
    private static func remove(_ db: Database, _ document: String) throws -> Int64 {
        try db.execute(sql: "DELETE FROM tags WHERE document = ?", arguments: [document])
        try db.execute(sql: "DELETE FROM docs WHERE document = ?", arguments: [document])
        return db.changesCount > 0 ? try dropSegments(db, document) : 0
    }

    /// A directory moved from `old` to `new`: the paths of everything indexed below it follow.
    public func move(_ old: String, to new: String) throws {
        guard old != new, old != "/" else { return }
        try pool.write { db in
            let count = old.unicodeScalars.count + 1
            try db.execute(
                sql: """
                    UPDATE docs SET path = ? || substr(path, ?),
                        dir = CASE WHEN dir = ? THEN ? ELSE ? || substr(dir, ?) END
                    WHERE substr(path, 1, ?) = ? || '/'
                    """,
                arguments: [new, count, old, new, new, count, count, old])
        }
    }

    /// Runs `plan` on a reading connection (never waiting for the indexer): its window first, then, if that does
    /// not answer exactly, the whole query (both in one snapshot).
    public func search(_ plan: SearchPlan) throws -> [SearchHit] {
        try pool.read { db in try Self.hits(db, plan) }
    }

    /// Runs `plan(offset)` page after page, each from where the page before ended, while `more(page)` says so; all
    /// pages read one snapshot of the index, so a commit of the indexer between two pages neither skips nor
    /// repeats a row (a caller that drops some hits, as rights checks do, pages on until it has enough).
    public func search(pages plan: (_ offset: Int) -> SearchPlan, while more: ([SearchHit]) -> Bool) throws {
        try pool.read { db in
            var offset = 0
            while true {
                let hits = try Self.hits(db, plan(offset))
                offset += hits.count
                guard more(hits) else { return }
            }
        }
    }

    /// `plan`'s window first; if that does not answer exactly, the whole query.
    private static func hits(_ db: Database, _ plan: SearchPlan) throws -> [SearchHit] {
        if let window = plan.window {
            let rows = try Row.fetchAll(db, sql: window.sql, arguments: window.arguments)
            if window.answers(rows) { return rows.map(hit) }
        }
        return try Row.fetchAll(db, sql: plan.sql, arguments: plan.arguments).map(hit)
    }

    private static func hit(_ row: Row) -> SearchHit { SearchHit(document: document(row), score: row[15]) }

    /// Problems of the file (SQLite's integrity check, and FTS5's own for the text table); empty when sound.
    public func check() -> [String] {
        do {
            return try pool.read { db in
                let found = try String.fetchAll(db, sql: "PRAGMA quick_check").filter { $0 != "ok" }
                let tables = try Set(String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table'"))
                let missing = ["meta", "docs", "tags", "segments", "fulltext"].filter { !tables.contains($0) }
                return found.map { "\(path): \($0)" } + missing.map { "\(path): no table \($0)" }
            }
        } catch {
            return ["\(path): \(error)"]
        }
    }
}

public struct IndexError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
