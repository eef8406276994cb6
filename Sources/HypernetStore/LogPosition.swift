import Foundation
import GRDB
import HypernetCrypto

extension Store {
    /// The sequence number of the newest entry of `tree`'s log in this store (0 when it has none): where a
    /// reader that wants only what comes next starts.
    public func lastSeq(tree: SigningPublicKey) throws(StoreError) -> Int64 {
        try catalog.read { db in
            try Int64.fetchOne(
                db, sql: "SELECT MAX(seq) FROM (SELECT seq FROM revisions WHERE tree = ?1 UNION ALL SELECT seq FROM blocks WHERE tree = ?1)",
                arguments: [Data(tree.bytes)]) ?? 0
        }
    }
}
