import Foundation
import GRDB
import HypernetCrypto
import HypernetModel
import Synchronization

extension Store {
    /// The sequence number of the newest entry of `tree`'s log in this store (0 when it has none): where a
    /// reader that wants only what comes next starts.
    public func lastSeq(tree: SigningPublicKey) throws(StoreError) -> Int64 {
        try catalog.read { db in
            try Int64.fetchOne(
                db,
                sql: """
                    SELECT MAX(seq) FROM (SELECT seq FROM revisions WHERE tree = ?1
                        UNION ALL SELECT seq FROM blocks WHERE tree = ?1
                        UNION ALL SELECT seq FROM statements WHERE tree = ?1)
                    """,
                arguments: [Data(tree.bytes)]) ?? 0
        }
    }
}

/// One revision in the order this store stored it, whatever its tree.
public struct StoredRevision: Sendable {
    public var seq: Int64
    public var id: RevisionID
    public var tree: SigningPublicKey
    /// Its document (the catalog keeps it in the clear), known without opening the revision.
    public var document: DocumentID
}

extension Store {
    /// The sequence number of the newest revision this store holds, of any tree (0 when none).
    public func lastRevisionSeq() throws(StoreError) -> Int64 {
        try catalog.read { db in try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM revisions") ?? 0 }
    }

    /// The revisions stored after `seq`, of every tree, in store order (events are made from them).
    public func storedRevisions(after seq: Int64, limit: Int) throws(StoreError) -> [StoredRevision] {
        try catalog.read { db in
            try Row.fetchAll(
                db.cachedStatement(
                    sql: "SELECT seq, id, tree, document FROM revisions WHERE seq > ? ORDER BY seq LIMIT ?"),
                arguments: [seq, limit]
            ).compactMap { row -> StoredRevision? in
                guard let id = try? Digest(bytes: row[1] as Data),
                    let tree = try? SigningPublicKey(bytes: Array(row[2] as Data)),
                    let document = try? DocumentID(bytes: Array(row[3] as Data))
                else { return nil }
                return StoredRevision(seq: row[0], id: id, tree: tree, document: document)
            }
        }
    }
}

extension Store {
    /// Seqs recorded ahead of the log at each durable mark: one sync per this many entries sent.
    static let publishAhead: Int64 = 1024

    /// Opens the log's numbering at the durable mark of what may have been sent (`publish`): a catalog that lost
    /// its tail in a power loss would otherwise give those seqs again, to other revisions, which peers that
    /// processed the lost entries would never ask for. So the numbering goes on after the mark (`seq-floor`).
    static func openLog(_ catalog: Catalog) throws(StoreError) -> Int64 {
        try catalog.write { db in
            let published =
                try Int64.fetchOne(db, sql: "SELECT CAST(value AS INTEGER) FROM settings WHERE key = 'published-seq'")
                ?? 0
            try db.execute(
                sql: "INSERT OR REPLACE INTO settings (key, value) VALUES ('seq-floor', ?)",
                arguments: [String(published)])
            return published
        }
    }

    /// To be called before entries through `seq` are sent to a peer: makes a mark past `seq` durable, so that
    /// no seq sent is ever given again (`openLog`). Throws once a sync has failed (`sync`).
    public func publish(through seq: Int64) throws(StoreError) {
        try publishable.withLock { (mark: inout Int64) throws(StoreError) in
            guard seq > mark else { return }
            let next = seq + Self.publishAhead
            try catalog.write { db in
                try db.execute(
                    sql: "INSERT OR REPLACE INTO settings (key, value) VALUES ('published-seq', ?)",
                    arguments: [String(next)])
            }
            try sync()
            mark = next
        }
    }
}
