import Foundation
import GRDB
import HypernetCrypto
import HypernetModel

extension Store {
    /// The sequence number of the newest entry of `tree`'s log in this store (0 when it has none): where a
    /// reader that wants only what comes next starts.
    public func lastSeq(tree: SigningPublicKey) throws(StoreError) -> Int64 {
        try catalog.read { db in
            try Int64.fetchOne(
                db,
                sql:
                    "SELECT MAX(seq) FROM (SELECT seq FROM revisions WHERE tree = ?1 UNION ALL SELECT seq FROM blocks WHERE tree = ?1)",
                arguments: [Data(tree.bytes)]) ?? 0
        }
    }
}

/// One revision in the order this store stored it, whatever its tree.
public struct StoredRevision: Sendable {
    public var seq: Int64
    public var id: RevisionID
    public var tree: SigningPublicKey
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
                db.cachedStatement(sql: "SELECT seq, id, tree FROM revisions WHERE seq > ? ORDER BY seq LIMIT ?"),
                arguments: [seq, limit]
            ).compactMap { row -> StoredRevision? in
                guard let id = try? Digest(bytes: row[1] as Data),
                    let tree = try? SigningPublicKey(bytes: Array(row[2] as Data))
                else { return nil }
                return StoredRevision(seq: row[0], id: id, tree: tree)
            }
        }
    }
}
