import Foundation
import GRDB
import HypernetCrypto
import HypernetModel

/// Damaged chunks repair themselves from peers (docs/store-format.md, "Repair"): a chunk whose stored record fails
/// verification is noted here when a read meets it; the sync node asks its peers for it as for a missing chunk, and
/// the copy that arrives, verified against its id and appended, replaces the damaged record in the catalog. The
/// damaged record stays in its pack, named by no row.
extension Store {
    /// Notes that the record of chunk `id` failed verification (`error`): logged once, and the damage observers
    /// (the sync node) learn of it.
    func noteDamaged(_ id: ChunkID, _ error: StoreError) {
        guard damaged.withLock({ $0.insert(id).inserted }) else { return }
        logger.error("\(error): damaged, to be fetched again from a peer")
        for o in damageObservers.withLock({ $0 }) { o() }
    }

    /// The chunks noted damaged and not repaired yet.
    public var damagedChunks: [ChunkID] { damaged.withLock { Array($0) } }

    /// `body` runs (on the reading thread) when a chunk is first noted damaged.
    public func observeDamage(_ body: @escaping @Sendable () -> Void) {
        damageObservers.withLock { $0.append(body) }
    }

    /// `body` runs after chunks were repaired (on the repairing thread).
    public func observeRepairs(_ body: @escaping @Sendable () -> Void) {
        repairObservers.withLock { $0.append(body) }
    }

    /// Points the catalog rows of damaged chunks at `copies` (received, checked against their ids and appended by
    /// `receiveChunk`) and makes that durable; the chunks read again from then on.
    public func repair(_ copies: [ChunkLocation]) throws(StoreError) {
        guard !copies.isEmpty else { return }
        let copies = copies.map(packs.current)
        try catalog.write { db in
            let statement = try db.cachedStatement(
                sql: "UPDATE chunks SET pack = ?, offset = ?, length = ? WHERE id = ?")
            for l in copies { try statement.execute(arguments: [l.pack, l.offset, l.length, Data(l.id.bytes)]) }
        }
        packs.settle(copies)
        try sync()
        damaged.withLock { d in for l in copies { d.remove(l.id) } }
        for l in copies {
            logger.notice("chunk \(l.id.hex) repaired from a peer: now in pack \(l.pack) at \(l.offset)")
        }
        for o in repairObservers.withLock({ $0 }) { o() }
    }
}
