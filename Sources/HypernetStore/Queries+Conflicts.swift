import Foundation
import GRDB
import HypernetCrypto
import HypernetModel

extension Store {
    /// Documents with more than one head: file conflicts, directories the VFS shows merged, and deletes
    /// that lost to a concurrent change.
    public func forkedDocuments() throws(StoreError) -> [DocumentID] {
        try catalog.read { db in
            try Data.fetchAll(db, sql: "SELECT document FROM heads GROUP BY document HAVING COUNT(*) > 1").map {
                try DocumentID(bytes: Array($0))
            }
        }
    }

    /// The documents (and their trees) holding a revision a permission block made invalid after it was stored.
    public func documentsWithRefusedRevisions() throws(StoreError) -> [(document: DocumentID, tree: SigningPublicKey)] {
        try catalog.read { db in
            try Row.fetchAll(
                db, sql: "SELECT DISTINCT r.document, r.tree FROM refused f JOIN revisions r ON r.id = f.revision"
            ).compactMap { row in
                guard let document = try? DocumentID(bytes: Array(row[0] as Data)),
                    let tree = try? SigningPublicKey(bytes: Array(row[1] as Data))
                else { return nil }
                return (document, tree)
            }
        }
    }

    /// This identity's documents with a directory head: every directory whose listing may place a document
    /// (a live one: a directory head wins over tombstones), shown or not.
    public func directoryDocuments() throws(StoreError) -> [DocumentID] {
        try catalog.read { db in
            try Data.fetchAll(
                db,
                sql: """
                    SELECT DISTINCT h.document FROM heads h JOIN revisions r ON r.id = h.revision
                    WHERE r.tree = ? AND r.kind = ?
                    """, arguments: [Data(keyring.identity.publicKey.bytes), Int(RevisionKind.directory.rawValue)]
            ).map { try DocumentID(bytes: Array($0)) }
        }
    }

    /// This identity's documents with a tombstone among several heads: deletes that may have lost to a
    /// concurrent change.
    public func forkedDeletes() throws(StoreError) -> [DocumentID] {
        try catalog.read { db in
            try Data.fetchAll(
                db,
                sql: """
                    SELECT h.document FROM heads h JOIN revisions r ON r.id = h.revision WHERE r.tree = ?
                    GROUP BY h.document HAVING COUNT(*) > 1 AND MAX(r.kind = ?) = 1
                    """, arguments: [Data(keyring.identity.publicKey.bytes), Int(RevisionKind.tombstone.rawValue)]
            ).map { try DocumentID(bytes: Array($0)) }
        }
    }

    /// This identity's directory revisions with their documents, newest first by (HLC time, id).
    public func directoryRevisions() throws(StoreError) -> [(id: RevisionID, document: DocumentID)] {
        try catalog.read { db in
            try Row.fetchAll(
                db, sql: "SELECT id, document FROM revisions WHERE tree = ? AND kind = ? ORDER BY time DESC, id DESC",
                arguments: [Data(keyring.identity.publicKey.bytes), Int(RevisionKind.directory.rawValue)]
            ).map { row in
                (try RevisionID(bytes: Array(row[0] as Data)), try DocumentID(bytes: Array(row[1] as Data)))
            }
        }
    }
}

extension Store {
    /// This identity's revisions whose id starts with the lowercase hex `prefix` (at most two: enough to tell
    /// a unique prefix from an ambiguous one), with their log sequence numbers.
    public func ownRevisions(prefix: String) throws(StoreError) -> [(seq: Int64, id: RevisionID)] {
        try catalog.read { db in
            try Row.fetchAll(
                db, sql: "SELECT seq, id FROM revisions WHERE tree = ? AND lower(hex(id)) LIKE ? LIMIT 2",
                arguments: [Data(keyring.identity.publicKey.bytes), prefix + "%"]
            ).map { row in (row[0], try RevisionID(bytes: Array(row[1] as Data))) }
        }
    }

    /// The id of this identity's revision stored under `seq`.
    public func ownRevision(seq: Int64) throws(StoreError) -> RevisionID? {
        try catalog.read { db in
            try Data.fetchOne(
                db, sql: "SELECT id FROM revisions WHERE seq = ? AND tree = ?",
                arguments: [seq, Data(keyring.identity.publicKey.bytes)]
            ).map { try RevisionID(bytes: Array($0)) }
        }
    }
}
