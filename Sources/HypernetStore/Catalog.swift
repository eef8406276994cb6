import Foundation
import GRDB
import HypernetCrypto
import HypernetModel

/// The SQLite catalog (WAL, `synchronous=NORMAL`: a commit survives a process crash; `Store.sync` makes it
/// survive a power loss). Schema and invariants: docs/store-format.md, "Catalog".
final class Catalog: Sendable {
    /// The format this code writes; a catalog with a greater one is refused, never misread.
    static let formatVersion = 13
    let pool: DatabasePool
    let path: String

    init(path: String) throws(StoreError) {
        self.path = path
        var config = Configuration()
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            // SQLite's automatic checkpoint would make catalog rows durable before the pack records
            // they name; `Store.checkpoint` syncs the packs first, then checkpoints.
            try db.execute(sql: "PRAGMA wal_autocheckpoint = 0")
            // A checkpoint restarts the WAL in place without shrinking it: cut back to the limit at the first
            // commit after, its size says when the next checkpoint is due (else every pass checkpointed).
            try db.execute(sql: "PRAGMA journal_size_limit = \(Store.walLimit)")
            // What a row leaves behind (a replaced name, xattr value or symlink target) is zeroed, not left in
            // the page's free space: a stopped store's catalog holds the current state only (security.md).
            try db.execute(sql: "PRAGMA secure_delete = ON")
        }
        config.busyMode = .timeout(10)
        // SQLite creates a database 0644 less the umask, and its -wal and -shm with the database's mode: the
        // catalog holds names, metadata and content keys in plaintext, so it is made 0600 first.
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .io(path: path, errno: errno) }
        close(fd)
        do {
            pool = try DatabasePool(path: path, configuration: config)
            try pool.write { db in
                try db.execute(sql: "CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                if let found = try String.fetchOne(db, sql: "SELECT value FROM settings WHERE key = 'format'"),
                    let version = Int(found), version > Self.formatVersion
                {
                    throw StoreError.unsupportedFormat(found: version, supported: Self.formatVersion)
                }
            }
            try Self.migrator.migrate(pool)
        } catch {
            throw Self.storeError(error, path: path, context: "\(path): ")
        }
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1-documents-revisions-chunks") { db in
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO settings (key, value) VALUES ('format', '1');
                    CREATE TABLE documents (
                        inode INTEGER PRIMARY KEY AUTOINCREMENT,
                        id BLOB UNIQUE,            -- NULL once replaced by a rename-over
                        kind INTEGER NOT NULL,
                        head BLOB,                 -- visible head revision
                        metadata BLOB NOT NULL,    -- RevisionMetadata encoding of the current state
                        atime_s INTEGER NOT NULL DEFAULT 0,
                        atime_ns INTEGER NOT NULL DEFAULT 0,
                        dirty INTEGER NOT NULL DEFAULT 0  -- the row is ahead of its head revision (a revision is due)
                    );
                    CREATE TABLE entries (
                        parent INTEGER NOT NULL REFERENCES documents(inode),
                        name TEXT NOT NULL,
                        child INTEGER NOT NULL REFERENCES documents(inode),
                        PRIMARY KEY (parent, name)
                    ) WITHOUT ROWID;
                    CREATE INDEX entries_child ON entries(child);
                    CREATE TABLE revisions (
                        id BLOB PRIMARY KEY,
                        document BLOB NOT NULL,
                        time INTEGER NOT NULL,
                        kind INTEGER NOT NULL,
                        size INTEGER NOT NULL,
                        record BLOB NOT NULL       -- the exact signed bytes
                    );
                    CREATE INDEX revisions_document ON revisions(document, time);
                    CREATE TABLE heads (
                        document BLOB NOT NULL,
                        revision BLOB NOT NULL,
                        PRIMARY KEY (document, revision)
                    ) WITHOUT ROWID;
                    CREATE TABLE chunks (
                        id BLOB PRIMARY KEY,
                        pack INTEGER NOT NULL,
                        offset INTEGER NOT NULL,
                        length INTEGER NOT NULL
                    ) WITHOUT ROWID;
                    """)
        }
        // Format 2: what replication needs (docs/store-format.md, "Catalog").
        m.registerMigration("v2-replication") { db in
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO settings (key, value) VALUES ('format', '2');
                    INSERT OR IGNORE INTO settings (key, value) VALUES ('store-id', lower(hex(randomblob(16))));
                    ALTER TABLE revisions ADD COLUMN tree BLOB;
                    ALTER TABLE revisions ADD COLUMN seq INTEGER;
                    UPDATE revisions SET seq = rowid;
                    CREATE UNIQUE INDEX revisions_seq ON revisions(seq);
                    CREATE INDEX revisions_tree ON revisions(tree, seq);
                    ALTER TABLE chunks ADD COLUMN revision BLOB;
                    CREATE INDEX chunks_revision ON chunks(revision);
                    UPDATE documents SET dirty = 1 WHERE head IS NULL;
                    CREATE TABLE replicas (
                        revision BLOB NOT NULL,
                        node BLOB NOT NULL,
                        PRIMARY KEY (revision, node)
                    ) WITHOUT ROWID;
                    CREATE TABLE peers (
                        address TEXT PRIMARY KEY,
                        node BLOB,
                        configured INTEGER NOT NULL,
                        last_seen INTEGER,
                        last_error TEXT
                    );
                    CREATE TABLE pins (who TEXT PRIMARY KEY);
                    CREATE TABLE progress (
                        peer BLOB NOT NULL,
                        tree BLOB NOT NULL,
                        store_id TEXT NOT NULL,
                        seq INTEGER NOT NULL,
                        PRIMARY KEY (peer, tree)
                    ) WITHOUT ROWID;
                    """)
            // Every format-1 revision is its author's own tree (one identity per store), and the chunks
            // written so far are listed under the store's first revision so that they replicate with it.
            let rows = try Row.fetchAll(db, sql: "SELECT id, record FROM revisions")
            for row in rows {
                let record: Data = row[1]
                let author = try SignedRevision(record: Array(record)).revision.author
                try db.execute(
                    sql: "UPDATE revisions SET tree = ? WHERE id = ?", arguments: [Data(author.bytes), row[0] as Data])
            }
            try db.execute(sql: "UPDATE chunks SET revision = (SELECT id FROM revisions ORDER BY seq LIMIT 1)")
        }
        // Format 3: packs may hold delta chunks (codec 2), which format-2 code cannot open: it must refuse the store.
        m.registerMigration("v3-delta-chunks") { db in
            try db.execute(sql: "INSERT OR REPLACE INTO settings (key, value) VALUES ('format', '3')")
        }
        // Format 4: packs may hold multi-base deltas (codec 3). Format-3 code reports them as corrupt ("unknown
        // codec 3": EIO on reads, fsck problems) though they are not: it must refuse the store instead.
        m.registerMigration("v4-multi-base-deltas") { db in
            try db.execute(sql: "INSERT OR REPLACE INTO settings (key, value) VALUES ('format', '4')")
        }
        // Format 5: permission blocks in the log, revisions of format 2 (governed by a document's chain), and
        // the chain each document is written under. Format-4 code would report format-2 revisions as corrupt.
        m.registerMigration("v5-permission-blocks") { db in
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO settings (key, value) VALUES ('format', '5');
                    CREATE TABLE blocks (
                        id BLOB PRIMARY KEY,
                        tree BLOB NOT NULL,
                        document BLOB NOT NULL,    -- whose chain
                        epoch INTEGER NOT NULL,
                        record BLOB NOT NULL,      -- the exact signed bytes
                        seq INTEGER NOT NULL UNIQUE,  -- shares the log's numbering with revisions.seq
                        UNIQUE (tree, document, epoch)
                    );
                    CREATE INDEX blocks_tree ON blocks(tree, seq);
                    ALTER TABLE revisions ADD COLUMN rights BLOB;   -- the governing chain's document; NULL: owner's key
                    ALTER TABLE documents ADD COLUMN rights BLOB;   -- the chain new revisions are written under
                    """)
        }
        // Not a format change: format-5 code reads and writes the peer table as before, ignoring both columns.
        m.registerMigration("v5-peer-removal") { db in
            try db.execute(
                sql: """
                    -- `peer remove`: not dialed nor relearned; when the address was added (Unix seconds)
                    ALTER TABLE peers ADD COLUMN removed INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE peers ADD COLUMN added INTEGER;
                    UPDATE peers SET added = CAST(strftime('%s', 'now') AS INTEGER);
                    """)
        }
        m.registerMigration("v6-refused-revisions") { db in
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO settings (key, value) VALUES ('format', '6');
                    CREATE TABLE refused (
                        revision BLOB PRIMARY KEY,  -- a stored revision a block learnt since makes invalid
                        epoch INTEGER NOT NULL      -- that block's epoch
                    ) WITHOUT ROWID;
                    """)
        }
        // Format 7: manifests may list holes and metadata may carry the content flag 2, which older code would
        // report as corrupt: it must refuse the store instead.
        m.registerMigration("v7-holes") { db in
            try db.execute(sql: "INSERT OR REPLACE INTO settings (key, value) VALUES ('format', '7')")
        }
        // Format 8: metadata may name its xattrs by a stored list (metadata version 4), which older code would
        // report as corrupt: it must refuse the store instead.
        m.registerMigration("v8-xattr-lists") { db in
            try db.execute(sql: "INSERT OR REPLACE INTO settings (key, value) VALUES ('format', '8')")
        }
        // Format 9: partial replicas. A revision of a tree held on demand may list chunks this node does not hold
        // (`absent`); older code would send such a revision with an incomplete chunk list, so it must refuse the store.
        m.registerMigration("v9-partial-replicas") { db in
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO settings (key, value) VALUES ('format', '9');
                    ALTER TABLE pins ADD COLUMN content TEXT NOT NULL DEFAULT 'all';  -- 'all' or 'on-demand'
                    CREATE TABLE absent (
                        id BLOB PRIMARY KEY,      -- a chunk listed by a stored revision and not held here
                        revision BLOB NOT NULL    -- the first revision that lists it, as chunks.revision
                    ) WITHOUT ROWID;
                    CREATE INDEX absent_revision ON absent(revision);
                    CREATE TABLE cached (id BLOB PRIMARY KEY);  -- chunks fetched on demand: evictable, in fetch order
                    """)
        }
        // Format 10: retention releases content (docs/design.md, "Retention decisions"). A revision may name chunks
        // no row names; older code would take that for damage (fsck, reads) and its collection plan would stop.
        m.registerMigration("v10-released") { db in
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO settings (key, value) VALUES ('format', '10');
                    CREATE TABLE released (revision BLOB PRIMARY KEY) WITHOUT ROWID;  -- its content is gone
                    """)
        }
        // Format 11: kept subtrees (`hypernet keep`). Older code would evict their content from the cache, breaking
        // the promise that it reads offline, so it must refuse the store.
        m.registerMigration("v11-kept") { db in
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO settings (key, value) VALUES ('format', '11');
                    CREATE TABLE kept (
                        document BLOB PRIMARY KEY,  -- a file or directory kept on this node, with what it holds below
                        tree BLOB NOT NULL          -- the tree it belongs to
                    ) WITHOUT ROWID;
                    -- chunks a pass over the kept subtrees took out of `cached` or fetched: back in it once not kept
                    CREATE TABLE keeping (id BLOB PRIMARY KEY) WITHOUT ROWID;
                    """)
        }
        // Format 12: owners' release statements (docs/design.md, "Release statements"), records of a tree's log that
        // older code would neither serve nor apply.
        m.registerMigration("v12-statements") { db in
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO settings (key, value) VALUES ('format', '12');
                    CREATE TABLE statements (
                        id BLOB PRIMARY KEY,
                        tree BLOB NOT NULL,
                        time INTEGER NOT NULL,        -- the statement's, Unix milliseconds
                        record BLOB NOT NULL,         -- the exact signed bytes
                        seq INTEGER NOT NULL UNIQUE,  -- shares the log's numbering with revisions.seq
                        applied INTEGER NOT NULL DEFAULT 0  -- 1: applied here, or made here
                    );
                    CREATE INDEX statements_tree ON statements(tree, seq);
                    """)
        }
        // Format 13: blind token indexes, named by revision records of formats 3 and 4. Older code would report
        // those revisions as corrupt, so it must refuse the store.
        m.registerMigration("v13-blind-index") { db in
            try db.execute(sql: "INSERT OR REPLACE INTO settings (key, value) VALUES ('format', '13')")
        }
        return m
    }

    func read<T>(_ body: (Database) throws -> T) throws(StoreError) -> T {
        do { return try pool.read(body) } catch { throw Self.storeError(error, path: path) }
    }

    /// A read made of ONE statement: SQLite runs it in an implicit read transaction of its own, so it sees one
    /// state of the catalog without `read`'s BEGIN and COMMIT, which GRDB compiles anew (and authorizes) on every
    /// read. Point reads (a row by id) are most of the catalog's reads: a listing's indexing, `winner`.
    func readStatement<T>(_ body: (Database) throws -> T) throws(StoreError) -> T {
        do { return try pool.unsafeRead(body) } catch { throw Self.storeError(error, path: path) }
    }

    func write<T>(_ body: (Database) throws -> T) throws(StoreError) -> T {
        do { return try pool.write(body) } catch { throw Self.storeError(error, path: path) }
    }

    /// Copies the WAL into the database file (outside any transaction, as SQLite requires); `.truncate` also
    /// empties the WAL file, whose older frames hold earlier states of rows.
    func checkpoint(_ mode: Database.CheckpointMode = .restart) throws(StoreError) {
        do { try pool.writeWithoutTransaction { db in _ = try db.checkpoint(mode) } } catch {
            throw Self.storeError(error, path: path, context: "checkpoint: ")
        }
    }

    /// SQLite's "database or disk is full" is the disk's ENOSPC (SQLite's own size limits are far above a
    /// store's), so that it reaches the caller as ENOSPC like a full pack write, not as a catalog failure.
    private static func storeError(_ error: any Error, path: String, context: String = "") -> StoreError {
        if let e = error as? StoreError { return e }
        if let e = error as? DatabaseError, e.resultCode == .SQLITE_FULL { return .io(path: path, errno: ENOSPC) }
        return .database(context + "\(error)")
    }

    func location(of id: ChunkID) throws(StoreError) -> ChunkLocation? {
        try read { db in
            try Row.fetchOne(
                db.cachedStatement(sql: "SELECT pack, offset, length FROM chunks WHERE id = ?"),
                arguments: [Data(id.bytes)]
            )
            .map { ChunkLocation(id: id, pack: $0[0], offset: $0[1], length: $0[2]) }
        }
    }

    /// The subset of `ids` already stored.
    func existing(_ ids: [ChunkID]) throws(StoreError) -> Set<ChunkID> {
        guard !ids.isEmpty else { return [] }
        return try read { db in
            let statement = try db.cachedStatement(sql: "SELECT 1 FROM chunks WHERE id = ?")
            var found = Set<ChunkID>()
            for id in ids where try Int.fetchOne(statement, arguments: [Data(id.bytes)]) != nil {
                found.insert(id)
            }
            return found
        }
    }
}
