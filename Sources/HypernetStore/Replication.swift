import Dispatch
import Foundation
import GRDB
import HypernetCrypto
import HypernetModel
import Synchronization

/// One record of a tree's log, as a peer is sent it: its position in this store's log, the signed record (a
/// revision or a permission block), and the chunks it introduced (docs/protocol.md, "Log").
public struct LogEntry: Sendable, Equatable {
    public var seq: Int64
    public var record: [UInt8]
    public var chunks: [ChunkID]

    public init(seq: Int64, record: [UInt8], chunks: [ChunkID]) {
        self.seq = seq
        self.record = record
        self.chunks = chunks
    }
}

/// A received revision ready to be stored: verified signature, its tree, the chunks it lists.
public struct RemoteRevision: Sendable {
    public var signed: SignedRevision
    public var tree: SigningPublicKey
    public var chunks: [ChunkID]
    /// Of a tree held on demand: the listed chunks not received are recorded as absent, not required.
    public var onDemand: Bool

    public init(signed: SignedRevision, tree: SigningPublicKey, chunks: [ChunkID], onDemand: Bool = false) {
        self.signed = signed
        self.tree = tree
        self.chunks = chunks
        self.onDemand = onDemand
    }
}

/// A received record ready to be stored, in log order: a revision, or a permission block of `tree`.
public enum RemoteRecord: Sendable {
    case revision(RemoteRevision)
    case block(SignedPermissionBlock, tree: SigningPublicKey)
    case release(SignedReleaseStatement, tree: SigningPublicKey)

    public var id: Digest {
        switch self {
        case .revision(let r): r.signed.id
        case .block(let b, _): b.id
        case .release(let s, _): s.id
        }
    }
}

/// Why a received revision or block was not stored.
public enum Rejection: Error, Sendable, Equatable, CustomStringConvertible {
    /// Its author holds no right for it in the epoch it names and the current one (or, for a document of no
    /// chain, is not the tree's owner), or it moves a document out of a chain it is no admin of.
    case notAuthorized
    case missingParent(RevisionID)
    case missingChunk(ChunkID)
    /// The block of that epoch of that document's chain is not here (yet).
    case missingBlock(DocumentID, UInt32)
    /// A block that is not the next link of its chain: forged, replayed, rolled back or forking.
    case badBlock(PermissionChainError)
    case badMetadata(String)
    /// A release statement of another tree than the run's, or older than the newest held of its tree (a replay).
    case badStatement(String)

    /// The revision may be stored once what it lacks arrives (from this peer later, or another).
    public var isTransient: Bool {
        switch self {
        case .missingParent, .missingChunk, .missingBlock: return true
        case .notAuthorized, .badBlock, .badMetadata, .badStatement: return false
        }
    }

    public var description: String {
        switch self {
        case .notAuthorized: return "author has no right for it"
        case .missingParent(let p): return "parent \(p.hex) is unknown"
        case .missingChunk(let c): return "chunk \(c.hex) is missing"
        case .missingBlock(let d, let e): return "permission block \(e) of \(d) is unknown"
        case .badBlock(let why): return "permission block refused: \(why)"
        case .badMetadata(let why): return "metadata does not open: \(why)"
        case .badStatement(let why): return "release statement refused: \(why)"
        }
    }
}

/// A peer address this node knows, configured or learned, and how the last attempt went.
public struct PeerRecord: Sendable, Codable, Equatable {
    public var address: String
    /// Node key (hex) seen at that address.
    public var node: String?
    public var configured: Bool
    /// Unix seconds of the last successful handshake.
    public var lastSeen: Int64?
    public var lastError: String?
}

extension Store {
    // MARK: Logs

    /// The trees this store holds revisions of.
    public func trees() throws(StoreError) -> [SigningPublicKey] {
        try catalog.read { db in
            try Data.fetchAll(db, sql: "SELECT DISTINCT tree FROM revisions WHERE tree IS NOT NULL").compactMap {
                try? SigningPublicKey(bytes: Array($0))
            }
        }
    }

    /// Up to `limit` log entries of `tree` after `seq`, in log order (parents before children, a block before
    /// the revisions written under it).
    public func log(tree: SigningPublicKey, after seq: Int64, limit: Int) throws(StoreError) -> [LogEntry] {
        try catalog.read { db in
            // Absent chunks too: the list is the revision's, whether or not this node holds them.
            let chunks = try db.cachedStatement(
                sql: "SELECT id FROM chunks WHERE revision = ?1 UNION ALL SELECT id FROM absent WHERE revision = ?1")
            return try Row.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT seq, record, id FROM revisions WHERE tree = ?1 AND seq > ?2
                            AND id NOT IN (SELECT revision FROM refused)
                        UNION ALL SELECT seq, record, id FROM blocks WHERE tree = ?1 AND seq > ?2
                        UNION ALL SELECT seq, record, id FROM statements WHERE tree = ?1 AND seq > ?2
                        ORDER BY seq LIMIT ?3
                        """),
                arguments: [Data(tree.bytes), seq, limit]
            ).map { row in
                let ids = try Data.fetchAll(chunks, arguments: [row[2] as Data]).compactMap { try? Digest(bytes: $0) }
                return LogEntry(seq: row[0], record: Array(row[1] as Data), chunks: ids)
            }
        }
    }

    /// The subset of `ids` stored here.
    public func existingRevisions(_ ids: [RevisionID]) throws(StoreError) -> Set<RevisionID> {
        try catalog.read { db in
            let statement = try db.cachedStatement(sql: "SELECT 1 FROM revisions WHERE id = ?")
            return Set(try ids.filter { try Int.fetchOne(statement, arguments: [Data($0.bytes)]) != nil })
        }
    }

    /// The ids among `ids` this store lacks, in order, without repeats.
    public func missingChunks(_ ids: [ChunkID]) throws(StoreError) -> [ChunkID] {
        let have = try catalog.existing(ids)
        var seen = Set<ChunkID>()
        return ids.filter { !have.contains($0) && seen.insert($0).inserted }
    }

    /// A chunk's stored (sealed) bytes, for serving to a peer; nil if not stored here or damaged (noted for repair:
    /// a peer would take damaged bytes for a hostile sender's).
    public func sealedChunk(_ id: ChunkID) throws(StoreError) -> [UInt8]? {
        do {
            guard let sealed = try record(of: id) else { return nil }
            guard BLAKE2b.hash(sealed) == id else {
                noteDamaged(id, .corrupt(object: "chunk \(id.hex)", reason: "bytes do not match its id"))
                return nil
            }
            return sealed
        } catch {
            guard case .corrupt = error else { throw error }
            noteDamaged(id, error)
            return nil
        }
    }

    /// Verifies a received chunk against its id and appends it to the packs. Its catalog row is written
    /// with the revision that lists it (`storeRemote`); until then it is an orphan, as after a crash.
    public func receiveChunk(id: ChunkID, sealed: [UInt8]) throws(StoreError) -> ChunkLocation {
        guard BLAKE2b.hash(sealed) == id else {
            throw .corrupt(object: "received chunk \(id.hex)", reason: "bytes do not match its id")
        }
        try admit(Int64(sealed.count + PackStore.recordHeaderSize))
        let location = try packs.append(id: id, ciphertext: sealed)
        remember([location])
        return location
    }

    /// Stores received revisions in one transaction, in order (a revision may name an earlier one of the
    /// batch as parent). Each is checked first: author's right, parents present, listed chunks present
    /// (stored, or among `chunks` just received). Rejected ones are left out and returned with the reason.
    public func storeRemote(_ batch: [RemoteRevision], chunks received: [ChunkLocation]) throws(StoreError)
        -> [(RevisionID, Rejection)]
    {
        try storeRemote(records: batch.map { .revision($0) }, chunks: received)
    }

    /// Stores received revisions and blocks in one transaction, in log order. A block is stored only as the
    /// next link of its chain; a revision only if its author holds the right for it (`checkRights`), its
    /// parents are here, and the chunks it lists are stored or among `chunks` just received.
    public func storeRemote(records batch: [RemoteRecord], chunks received: [ChunkLocation]) throws(StoreError)
        -> [(Digest, Rejection)]
    {
        let arrived = Dictionary(received.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        return try transaction { tx in
            var rejected: [(Digest, Rejection)] = []
            for record in batch {
                guard case .revision(let remote) = record else {
                    if case .block(let block, let tree) = record, let problem = try tx.receive(block, tree: tree) {
                        rejected.append((block.id, problem))
                    }
                    if case .release(let statement, let tree) = record,
                        let problem = try tx.receive(statement, tree: tree)
                    {
                        rejected.append((statement.id, problem))
                    }
                    continue
                }
                let id = remote.signed.id
                let revision = remote.signed.revision
                if try tx.hasRevision(id) { continue }
                if let problem = try tx.check(remote, arrived: arrived) {
                    rejected.append((id, problem))
                    continue
                }
                // The size is known only to a reader of the epoch; a node without its key stores it as 0.
                var metadata: RevisionMetadata?
                if let key = try epochKey(tx.db, tree: remote.tree, rights: revision.rights, epoch: revision.epoch) {
                    do {
                        metadata = try RevisionMetadata(
                            unsealing: revision.sealedMetadata, epochKey: key, document: revision.document)
                    } catch {
                        rejected.append((id, .badMetadata("\(error)")))
                        continue
                    }
                }
                let size = metadata?.size ?? 0
                try tx.recordChunks(remote.chunks.compactMap { arrived[$0] })
                try tx.insert(remote.signed, tree: remote.tree, size: size)
                // Another node of this identity may have moved the document to a chain: write under it too.
                try tx.setRights(of: revision.document, to: revision.rights)
                try tx.claim(remote.chunks, for: id)
                if let metadata, revision.kind == .file, !remote.onDemand {
                    try tx.noteReleasedBySender(id, metadata, arrived: arrived)
                }
                // A revision held in full keeps the chunks it lists, also those fetched on demand before.
                if remote.onDemand {
                    try tx.recordAbsent(remote.chunks, for: id)
                } else {
                    try tx.uncache(remote.chunks)
                }
                observe(revision.time)
                tx.added.list.append(
                    AddedRevision(
                        id: id, document: revision.document, tree: remote.tree, isLocal: false,
                        chunkCount: remote.chunks.count))
            }
            return rejected
        }
    }

    // MARK: Replicas and quorum

    /// `node` (a peer's node key) durably holds `revisions`: fsyncs waiting on it wake up, and the fact is persisted
    /// soon after (a failure to is logged).
    public func recordReplicas(node: SigningPublicKey, revisions: [RevisionID]) {
        guard !revisions.isEmpty else { return }
        // Waiting fsyncs learn first: the ack already proves the replica durable; the row below is bookkeeping
        // (xattrs, backlog) and would only add a catalog write to every quorum fsync.
        replicas.note(node: node, revisions: revisions)
        replicas.changed { ids, count in (try? self.haveReplicas(ids, count: count)) ?? false }
        // The row after, on its own queue: the acks that follow (the other replicas') wake their fsyncs without
        // waiting behind this catalog write.
        replicaRows.async { [self] in
            do {
                try catalog.write { db in
                    let statement = try db.cachedStatement(
                        sql: "INSERT OR IGNORE INTO replicas (revision, node) VALUES (?, ?)")
                    for r in revisions { try statement.execute(arguments: [Data(r.bytes), Data(node.bytes)]) }
                }
            } catch {
                logger.error("recording replicas: \(error)")
            }
        }
    }

    /// Returns once the replica rows recorded so far are written (at stop).
    public func finishReplicaRows() {
        replicaRows.sync {}
    }

    /// Remote nodes known to hold `revision` durably (this node not counted).
    /// (Including acks whose row is still being written: a fsync that returned is never contradicted.)
    public func replicaCount(_ revision: RevisionID) throws(StoreError) -> Int {
        let stored = try catalog.read { db in
            try Int.fetchOne(
                db.cachedStatement(sql: "SELECT COUNT(*) FROM replicas WHERE revision = ?"),
                arguments: [Data(revision.bytes)]) ?? 0
        }
        return max(stored, replicas.recentCount(revision))
    }

    /// Checked on every ack while an fsync waits: the acks counted in memory first, the catalog only for the
    /// revisions they do not settle (acked before this start, or forgotten).
    private func haveReplicas(_ ids: [RevisionID], count: Int) throws(StoreError) -> Bool {
        for id in ids where replicas.recentCount(id) < count {
            if try replicaCount(id) < count { return false }
        }
        return true
    }

    /// Blocks until every revision in `ids` is held by `count` remote nodes, or `timeout` passes (nil: no
    /// limit), or `interruption` fires. Woken by `recordReplicas`, never polling.
    public func waitForReplicas(
        _ ids: [RevisionID], count: Int, timeout: Duration?, interruption: Interruption? = nil
    ) -> ReplicaWait {
        guard count > 0 else { return .reached }
        return replicas.wait(ids: ids, count: count, timeout: timeout, interruption: interruption) {
            (try? self.haveReplicas(ids, count: count)) ?? false
        }
    }

    /// This node's own revisions held by fewer than `quorum - 1` remote nodes, and the bytes they list.
    public func backlog(quorum: Int) throws(StoreError) -> (revisions: Int, bytes: Int64) {
        guard quorum > 1 else { return (0, 0) }
        return try catalog.read { db in
            let row = try Row.fetchOne(
                db,
                sql: """
                    SELECT COUNT(*), COALESCE(SUM((SELECT COALESCE(SUM(length), 0) FROM chunks WHERE chunks.revision = r.id)), 0)
                    FROM revisions r
                    WHERE r.tree = ? AND (SELECT COUNT(*) FROM replicas WHERE replicas.revision = r.id) < ?
                    """, arguments: [Data(keyring.identity.publicKey.bytes), quorum - 1])
            return (row?[0] ?? 0, row?[1] ?? 0)
        }
    }

    // MARK: Peers, pins, progress

    /// The addresses this node dials (`removed`: false), or those removed with `peer remove` (true).
    public func peers(removed: Bool = false) throws(StoreError) -> [PeerRecord] {
        try catalog.read { db in try Self.peerRecords(db, "removed = ?", [removed]) }
    }

    private static func peerRecords(
        _ db: Database, _ condition: String, _ arguments: StatementArguments
    ) throws -> [PeerRecord] {
        try Row.fetchAll(
            db,
            sql: """
                SELECT address, node, configured, last_seen, last_error FROM peers WHERE \(condition) ORDER BY address
                """,
            arguments: arguments
        ).map {
            let node: Data? = $0[1]
            return PeerRecord(
                address: $0[0], node: node.map { Hex.encode($0) }, configured: $0[2], lastSeen: $0[3], lastError: $0[4])
        }
    }

    /// Adds an address; a configured one stays configured even if later learned from a peer. Configuring an address
    /// undoes its removal; learning it again does not.
    public func addPeer(_ address: String, configured: Bool) throws(StoreError) {
        try catalog.write { db in
            try db.execute(
                sql: """
                    INSERT INTO peers (address, configured, added) VALUES (?, ?, ?) ON CONFLICT(address) DO UPDATE
                    SET configured = configured OR excluded.configured, removed = removed AND NOT excluded.configured
                    """,
                arguments: [address, configured, Int64(Date().timeIntervalSince1970)])
        }
    }

    /// Marks `address` removed (`peer remove`): no longer dialed, listed or relearned from peers until configured
    /// again. Returns its record as it was, or nil if the address is not in the table (or removed already).
    public func removePeer(_ address: String) throws(StoreError) -> PeerRecord? {
        try catalog.write { db in
            guard let record = try Self.peerRecords(db, "address = ? AND removed = 0", [address]).first else {
                return nil
            }
            try db.execute(sql: "UPDATE peers SET removed = 1, configured = 0 WHERE address = ?", arguments: [address])
            return record
        }
    }

    /// Deletes `address` if it was learned (not configured, not removed) and its last handshake, or its learning when
    /// it never answered, is older than `cutoff` (Unix seconds). Returns whether it did.
    public func forgetLearnedPeer(_ address: String, unseenSince cutoff: Int64) throws(StoreError) -> Bool {
        try catalog.write { db in
            try db.execute(
                sql: """
                    DELETE FROM peers WHERE address = ? AND configured = 0 AND removed = 0
                    AND COALESCE(last_seen, added, 0) < ?
                    """, arguments: [address, cutoff])
            return db.changesCount > 0
        }
    }

    /// Records the outcome of a connection attempt to `address`.
    public func updatePeer(_ address: String, node: SigningPublicKey?, error: String?) throws(StoreError) {
        try catalog.write { db in
            if let node {
                try db.execute(
                    sql: "UPDATE peers SET node = ?, last_seen = ?, last_error = NULL WHERE address = ?",
                    arguments: [Data(node.bytes), Int64(Date().timeIntervalSince1970), address])
            } else {
                try db.execute(sql: "UPDATE peers SET last_error = ? WHERE address = ?", arguments: [error, address])
            }
        }
    }

    /// Identity tokens (or `*`) whose trees this node stores and serves besides its own.
    public func pins() throws(StoreError) -> [String] {
        try catalog.read { db in try String.fetchAll(db, sql: "SELECT who FROM pins ORDER BY who") }
    }

    public func setPinned(_ who: String, _ pinned: Bool, content: ContentMode = .all) throws(StoreError) {
        try catalog.write { db in
            if pinned {
                try db.execute(
                    sql: "INSERT OR REPLACE INTO pins (who, content) VALUES (?, ?)", arguments: [who, content.rawValue])
            } else {
                try db.execute(sql: "DELETE FROM pins WHERE who = ?", arguments: [who])
            }
        }
    }

    /// How far into `peer`'s log of `tree` this node has durably stored: valid while the peer's store id is `storeID`.
    public func progress(peer: SigningPublicKey, tree: SigningPublicKey) throws(StoreError) -> (
        storeID: String, seq: Int64
    )? {
        try catalog.read { db in
            try Row.fetchOne(
                db, sql: "SELECT store_id, seq FROM progress WHERE peer = ? AND tree = ?",
                arguments: [Data(peer.bytes), Data(tree.bytes)]
            ).map { ($0[0], $0[1]) }
        }
    }

    public func setProgress(peer: SigningPublicKey, tree: SigningPublicKey, storeID: String, seq: Int64)
        throws(StoreError)
    {
        try catalog.write { db in
            try db.execute(
                sql: "INSERT OR REPLACE INTO progress (peer, tree, store_id, seq) VALUES (?, ?, ?, ?)",
                arguments: [Data(peer.bytes), Data(tree.bytes), storeID, seq])
        }
    }

    // MARK: Documents

    /// The current heads of `document`.
    public func heads(of document: DocumentID) throws(StoreError) -> [RevisionID] {
        try catalog.readStatement { db in
            try Data.fetchAll(
                db.cachedStatement(sql: "SELECT revision FROM heads WHERE document = ?"),
                arguments: [Data(document.bytes)]
            )
            .compactMap { try? Digest(bytes: $0) }
        }
    }

    /// Documents whose catalog row does not show their winning head, or that have no row yet: what
    /// received revisions left to apply to the materialized tree (checked at start).
    public func documentsBehindHeads() throws(StoreError) -> [DocumentID] {
        let own = keyring.identity.publicKey
        return try catalog.read { db in
            try Data.fetchAll(
                db,
                sql: """
                    SELECT DISTINCT h.document FROM heads h JOIN revisions r ON r.id = h.revision
                    WHERE r.tree = ? AND NOT EXISTS (SELECT 1 FROM documents d WHERE d.id = h.document AND d.head = h.revision)
                    """, arguments: [Data(own.bytes)]
            ).compactMap { try? DocumentID(bytes: Array($0)) }
        }
    }

    /// The catalog row of `document`, if it has one.
    public func document(_ id: DocumentID) throws(StoreError) -> DocumentRecord? {
        let row = try catalog.readStatement { db in
            try Row.fetchOne(
                db.cachedStatement(
                    sql: "SELECT inode, id, kind, head, metadata, atime_s, atime_ns, dirty FROM documents WHERE id = ?"),
                arguments: [Data(id.bytes)])
        }
        guard let row else { return nil }
        do { return try Self.document(row) } catch { throw .corrupt(object: "document \(id)", reason: "\(error)") }
    }
}

extension StoreTransaction {
    func hasRevision(_ id: RevisionID) throws -> Bool {
        try Int.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM revisions WHERE id = ?"), arguments: [Data(id.bytes)])
            != nil
    }

    func check(_ remote: RemoteRevision, arrived: [ChunkID: ChunkLocation]) throws -> Rejection? {
        let revision = remote.signed.revision
        // A document belongs to one tree, and its parents are its own revisions: a tree's owner cannot
        // write into another tree by reusing its document ids.
        let doc = Data(revision.document.bytes)
        if let tree = try Data.fetchOne(
            db.cachedStatement(sql: "SELECT tree FROM revisions WHERE document = ? LIMIT 1"), arguments: [doc]),
            Array(tree) != remote.tree.bytes
        {
            return .notAuthorized
        }
        for p in revision.parents {
            guard
                let parentDocument = try Data.fetchOne(
                    db.cachedStatement(sql: "SELECT document FROM revisions WHERE id = ?"), arguments: [Data(p.bytes)])
            else {
                return .missingParent(p)
            }
            guard parentDocument == doc else { return .notAuthorized }
        }
        if let problem = try checkRights(revision, tree: remote.tree) { return problem }
        if remote.onDemand { return nil }
        let stored = try store.catalog.existing(remote.chunks.filter { arrived[$0] == nil })
        for c in remote.chunks where arrived[c] == nil && !stored.contains(c) { return .missingChunk(c) }
        return nil
    }

    /// Records `revision` (a received file revision of a tree held in full) as released when its content's or xattr
    /// list's root is neither stored here nor received with it: its sender had released that content (a log entry
    /// lists only the chunks its sender holds), so that this node's collection does not wait for it
    /// (docs/design.md, "Retention decisions").
    func noteReleasedBySender(_ revision: RevisionID, _ metadata: RevisionMetadata, arrived: [ChunkID: ChunkLocation])
        throws
    {
        let held = try db.cachedStatement(sql: "SELECT 1 FROM chunks WHERE id = ?")
        for root in [metadata.content, metadata.xattrList].compactMap({ $0 }) where arrived[root.node.id] == nil {
            guard try Int.fetchOne(held, arguments: [Data(root.node.id.bytes)]) == nil else { continue }
            try run("INSERT OR IGNORE INTO released (revision) VALUES (?)", arguments: [Data(revision.bytes)])
            return
        }
    }

    /// Lists the chunks under `revision` where no earlier revision lists them.
    func claim(_ chunks: [ChunkID], for revision: RevisionID) throws {
        let statement = try db.cachedStatement(sql: "UPDATE chunks SET revision = ? WHERE id = ? AND revision IS NULL")
        for c in chunks { try statement.execute(arguments: [Data(revision.bytes), Data(c.bytes)]) }
    }
}

/// How a wait for replicas ended.
public enum ReplicaWait: Sendable {
    case reached, timedOut, interrupted
}

/// fsyncs waiting for replicas. Each waiter has its own semaphore; `changed` re-checks every waiter.
final class ReplicaTracker: Sendable {
    private final class Waiter: Sendable {
        let ids: [RevisionID]
        let count: Int
        let semaphore = DispatchSemaphore(value: 0)
        init(ids: [RevisionID], count: Int) {
            self.ids = ids
            self.count = count
        }
    }

    private let waiters = Mutex<[ObjectIdentifier: Waiter]>([:])
    /// Replicas acked since start, ahead of their catalog rows; dropped when large (the rows remain).
    private let recent = Mutex<[RevisionID: Set<SigningPublicKey>]>([:])

    func note(node: SigningPublicKey, revisions: [RevisionID]) {
        recent.withLock { map in
            if map.count > 100_000 { map.removeAll() }
            for r in revisions { map[r, default: []].insert(node) }
        }
    }

    func recentCount(_ revision: RevisionID) -> Int {
        recent.withLock { $0[revision]?.count ?? 0 }
    }

    func wait(
        ids: [RevisionID], count: Int, timeout: Duration?, interruption: Interruption?, satisfied: () -> Bool
    ) -> ReplicaWait {
        let waiter = Waiter(ids: ids, count: count)
        let key = ObjectIdentifier(waiter)
        waiters.withLock { $0[key] = waiter }
        defer { _ = waiters.withLock { $0.removeValue(forKey: key) } }
        let deadline: DispatchTime =
            timeout.map {
                .now()
                    + .nanoseconds(
                        Int($0.components.seconds) * 1_000_000_000 + Int($0.components.attoseconds / 1_000_000_000))
            } ?? .distantFuture
        // Registered before the first check, so a replica recorded in between still wakes it.
        func wait() -> ReplicaWait {
            while !satisfied() {
                if interruption?.isInterrupted == true { return .interrupted }
                if waiter.semaphore.wait(timeout: deadline) == .timedOut { return satisfied() ? .reached : .timedOut }
            }
            return .reached
        }
        return interruption.map { $0.waking(waiter.semaphore, wait) } ?? wait()
    }

    func changed(_ satisfied: ([RevisionID], Int) -> Bool) {
        for w in waiters.withLock({ Array($0.values) }) where satisfied(w.ids, w.count) { w.semaphore.signal() }
    }
}
