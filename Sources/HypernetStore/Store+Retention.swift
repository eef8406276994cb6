import FoundationEssentials
import GRDB
import Glibc
import HypernetCrypto
import HypernetFailpoint
import HypernetModel

/// What the retention policies release (docs/design.md, "Retention decisions"): the revisions whose content no rule
/// keeps, and the chunks that then no kept revision of any tree needs. The chunks are dead in the sense agreed with
/// compaction: once no catalog row names them, compaction drops their records.
public struct CollectionSummary: Sendable, Codable, Equatable {
    /// Revisions whose content is released; their records stay, for the DAG.
    public var revisions = 0
    /// Chunks only released revisions need, and their stored (sealed) bytes.
    public var chunks = 0
    public var bytes: Int64 = 0
    public init() {}
}

extension Store {
    /// The retention rules of a document of this node's tree: the policy in force and the quorum; nil keeps all of
    /// its history (a document the caller cannot place, or a node that keeps everything).
    public typealias RetentionRules = (DocumentID) -> (policy: RetentionPolicy, quorum: Int)?

    /// Which revisions of this node's tree release their content at `now` (Unix milliseconds), and which chunks
    /// that frees. Released: file revisions that no rule of their document's policy keeps, that are not heads
    /// (visible or conflict), not refused, and held by their quorum (this node and `quorum - 1` replicas). Directory
    /// listings are never released: `log` and `restore` of a deleted file find it by its name in them. Dead: the
    /// objects (data chunks, manifest and xattr-list nodes, and the delta bases of each, recursively) that released
    /// revisions need and no other revision does. Revisions this identity cannot open (another tree's, without its
    /// key) are not walked: their chunks are sealed under keys of their own, so a released revision shares none.
    /// Reads every manifest node and opens every chunk a revision needs (to find delta bases); changes nothing.
    public func collectionPlan(rules: RetentionRules, now: UInt64) throws(StoreError) -> (
        summary: CollectionSummary, released: Set<RevisionID>, dead: Set<ChunkID>
    ) {
        let plan = try plannedCollection(rules: rules, now: now)
        return (plan.summary, plan.released, plan.dead)
    }

    /// Releases what `collectionPlan` lists (docs/design.md, "Retention decisions"): in one transaction, the rows of
    /// the dead chunks go and the released revisions are recorded as such (`released`), so a kill -9 leaves all of
    /// it or none; compaction then drops the records. Kept besides what the plan kept, checked while writers wait
    /// to note anything more: what writes in flight reference without appending it (`InFlight`), what catalog rows
    /// of documents name (written, no revision yet), and what revisions stored since the plan need. Called within a garbage collection pass (one at a time). Returns what was released.
    func releaseContent(rules: RetentionRules, now: UInt64) throws(StoreError) -> CollectionSummary {
        var plan = try plannedCollection(rules: rules, now: now)
        guard !plan.dead.isEmpty || !plan.released.isEmpty else { return CollectionSummary() }
        return try inFlight.withLock { (noted) throws(StoreError) -> CollectionSummary in
            for reference in Array(noted.objects.values) + noted.checking.values.map(\.reference)
            where plan.dead.contains(reference.id) {
                try plan.live.need(reference)
            }
            for root in noted.roots.values where plan.dead.contains(root.node.id) {
                try plan.live.walk(root, strict: false)
            }
            let (documents, stored) = try catalog.read { db in
                (
                    try Data.fetchAll(db, sql: "SELECT metadata FROM documents WHERE id IS NOT NULL"),
                    try Data.fetchAll(db, sql: "SELECT id FROM revisions WHERE seq > ?", arguments: [plan.seen])
                )
            }
            for encoded in documents {
                // A row that does not decode names nothing this pass can know: nothing goes.
                let metadata: RevisionMetadata
                do { metadata = try RevisionMetadata(decoding: Array(encoded)) } catch {
                    throw .corrupt(object: "a document row", reason: "\(error)")
                }
                for root in [metadata.content, metadata.xattrList] { try plan.live.walk(root, strict: true) }
            }
            for id in stored.compactMap({ try? Digest(bytes: $0) }) {
                let metadata: RevisionMetadata
                do throws(StoreError) { metadata = try revision(id, readingXattrs: false).metadata } catch {
                    if case .rights = error { continue }
                    throw error
                }
                for root in [metadata.content, metadata.xattrList] { try plan.live.walk(root, strict: false) }
            }
            let dead = plan.dead.subtracting(plan.live.objects)
            let released = plan.released
            var summary = CollectionSummary()
            summary.revisions = released.count
            summary.chunks = dead.count
            let sizes = try storedBytes(dead)
            summary.bytes = sizes.values.reduce(0) { $0 + $1 - Int64(PackStore.recordHeaderSize) }
            var statement: AddedRevision?
            let gone = try catalog.write { db in
                let gone = try Self.release(db, dead: dead, revisions: released)
                statement = try publishStatement(db, released: released, dead: dead, now: now)
                if Failpoint.hit("retention.release") { throw StoreError.io(path: home.catalogPath, errno: EIO) }
                return gone
            }
            forget(gone)
            if let statement { notify([statement]) }
            if !released.isEmpty {
                logger.notice(
                    "released the content of revisions the retention policies no longer keep",
                    metadata: [
                        "revisions": "\(released.count)", "chunks": "\(dead.count)", "bytes": "\(summary.bytes)",
                    ])
            }
            return summary
        }
    }

    /// In a release's transaction: deletes the rows of the `dead` chunks (their records become dead for
    /// compaction) and records `revisions` as released. Returns where the deleted chunks were.
    fileprivate static func release(_ db: Database, dead: Set<ChunkID>, revisions: Set<RevisionID>) throws
        -> [ChunkLocation]
    {
        var gone: [ChunkLocation] = []
        let find = try db.cachedStatement(sql: "SELECT pack, offset, length FROM chunks WHERE id = ?")
        let delete = try db.cachedStatement(sql: "DELETE FROM chunks WHERE id = ?")
        for id in dead {
            let key = Data(id.bytes)
            if let row = try Row.fetchOne(find, arguments: [key]) {
                gone.append(ChunkLocation(id: id, pack: row[0], offset: row[1], length: row[2]))
            }
            try delete.execute(arguments: [key])
        }
        let mark = try db.cachedStatement(sql: "INSERT OR IGNORE INTO released (revision) VALUES (?)")
        for id in revisions { try mark.execute(arguments: [Data(id.bytes)]) }
        return gone
    }

    /// Whether revision `id`'s content was released (`releaseContent`, or before it was received here).
    public func isReleased(_ id: RevisionID) throws(StoreError) -> Bool {
        try catalog.readStatement { db in
            try Int.fetchOne(
                db.cachedStatement(sql: "SELECT 1 FROM released WHERE revision = ?"), arguments: [Data(id.bytes)])
                != nil
        }
    }

    /// The metadata of revision `id`, for a new revision that names its content and xattr list as they are
    /// (`restore`, `resolve`): noted as in flight first, so that a release from then on keeps them, then checked
    /// not released before. Throws `notFound` for released content.
    public func reusableMetadata(of id: RevisionID) throws(StoreError) -> RevisionMetadata {
        var metadata = try revision(id, readingXattrs: false).metadata
        inFlight.withLock { noted in
            for root in [metadata.content, metadata.xattrList].compactMap({ $0 }) { noted.roots[root.node.id] = root }
        }
        if try isReleased(id) {
            throw .notFound("the content of revision \(id.hex) (released by the retention policy)")
        }
        try readXattrList(&metadata)
        return metadata
    }

    /// `collectionPlan`, with what `releaseContent` needs besides: the objects found live, and the last log
    /// position the plan saw.
    private func plannedCollection(rules: RetentionRules, now: UInt64) throws(StoreError) -> PlannedCollection {
        let own = Data(keyring.identity.publicKey.bytes)
        let rows: [CollectedRevision] = try catalog.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT id, document, tree = ?, record, id IN (SELECT revision FROM heads),
                        id IN (SELECT revision FROM refused), (SELECT count(*) FROM replicas WHERE revision = id),
                        id IN (SELECT revision FROM released), seq
                    FROM revisions ORDER BY seq
                    """, arguments: [own]
            ).map { row in
                let signed = try SignedRevision(record: Array(row[3] as Data))
                return CollectedRevision(
                    id: signed.id, revision: signed.revision, own: row[2], head: row[4], refused: row[5],
                    replicas: row[6], released: row[7], seq: row[8])
            }
        }
        var released = Set<RevisionID>()
        for (document, revisions) in Dictionary(grouping: rows.filter(\.own), by: \.revision.document) {
            guard let (policy, quorum) = rules(document) else { continue }
            let candidates = revisions.filter { $0.revision.kind == .file && !$0.refused && !$0.released }
            let kept = policy.kept(
                candidates.map {
                    RetentionPolicy.Candidate(id: $0.id, milliseconds: $0.revision.time.milliseconds, head: $0.head)
                }, now: now)
            for r in candidates where !kept.contains(r.id) && r.replicas + 1 >= quorum { released.insert(r.id) }
        }
        var planned = PlannedCollection(released: released, live: Reach(store: self), seen: rows.last?.seq ?? 0)
        planned.summary.revisions = released.count
        // Released before: what of their content is still here goes once nothing else needs it.
        let gone = Set(rows.lazy.filter(\.released).map(\.id))
        guard !released.isEmpty || !gone.isEmpty else { return planned }
        var freed = Reach(store: self)
        for row in rows {
            // A stopping node does not wait for the walk: nothing is released.
            if stopCollecting.load(ordering: .relaxed) {
                return PlannedCollection(released: [], live: Reach(store: self), seen: 0)
            }
            let metadata: RevisionMetadata
            do throws(StoreError) { metadata = try revision(row.id, readingXattrs: false).metadata } catch {
                if case .rights = error { continue }
                throw error
            }
            let roots = [metadata.content, metadata.xattrList]
            if released.contains(row.id) || gone.contains(row.id) {
                for root in roots { try freed.walk(root, strict: false) }
            } else {
                // Another tree's content that is not here is not needed here; this tree's must all be, or what
                // it needs is unknown and nothing may go.
                for root in roots { try planned.live.walk(root, strict: row.own) }
            }
        }
        planned.dead = freed.objects.subtracting(planned.live.objects)
        planned.summary.chunks = planned.dead.count
        planned.summary.bytes = try storedBytes(planned.dead).values.reduce(0) {
            $0 + $1 - Int64(PackStore.recordHeaderSize)
        }
        return planned
    }
}

// MARK: Received revisions that reuse released content (docs/design.md, "Retention decisions", item 5)

extension Store {
    /// For each received file revision (held in full, its metadata open here), the objects its content and xattr
    /// list need that are neither stored here nor arrived with it: those this node released and the revision reuses
    /// (its sender lists only the chunks new to it). Only a node that released content (or stored revisions
    /// released by their sender) can lack such objects, so others answer at once. A stored object's whole subtree
    /// is stored (a release removes nothing a kept revision needs), so the walk only enters objects that arrived:
    /// about the nodes new to the revision. A root that is missing is listed too: its sender may hold it (a
    /// restore of a released revision), or may have released it (then it answers "not held", and the revision is
    /// recorded released as before). The caller fetches them from the sender and walks again, for what the
    /// fetched nodes name.
    public func unlistedObjects(of revisions: [RemoteRevision]) throws(StoreError) -> [RevisionID: [ChunkID]] {
        let released = try catalog.read { db in try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM released)") }
        guard released == true else { return [:] }
        var found: [RevisionID: [ChunkID]] = [:]
        for remote in revisions where !remote.onDemand && remote.signed.revision.kind == .file {
            let r = remote.signed.revision
            guard let key = epochKey(tree: remote.tree, rights: r.rights, epoch: r.epoch),
                let metadata = try? RevisionMetadata(unsealing: r.sealedMetadata, epochKey: key, document: r.document)
            else { continue }
            var walk = UnlistedWalk(store: self)
            // What does not read (damaged bytes) is the storing's to refuse, not this look-ahead's.
            for root in [metadata.content, metadata.xattrList].compactMap({ $0 }) {
                try? walk.visit(root.node, level: root.level)
            }
            if !walk.missing.isEmpty { found[remote.signed.id] = walk.missing }
        }
        return found
    }
}

/// `Store.unlistedObjects`' walk of one revision.
private struct UnlistedWalk {
    let store: Store
    var missing: [ChunkID] = []
    var seen = Set<ChunkID>()

    /// `level`: of a manifest node; nil for a data chunk or a delta base.
    mutating func visit(_ reference: ChunkReference, level: UInt8?) throws(StoreError) {
        guard !reference.isHole, seen.insert(reference.id).inserted, try store.catalog.location(of: reference.id) == nil
        else { return }
        guard try store.location(of: reference.id) != nil else { return missing.append(reference.id) }
        // Arrived with the revision: its delta bases, then what a node lists.
        let before = missing.count
        if case .delta(let delta) = try store.opened(reference) {
            for base in delta.bases { try visit(base, level: nil) }
        }
        guard let level, missing.count == before else { return }
        for child in try store.manifestNode(reference).children {
            try visit(child, level: level == 0 ? nil : level - 1)
        }
    }
}

// MARK: Release statements (docs/design.md, "Release statements")

extension Store {
    /// Records, in the release's transaction, this tree owner's signed statement of what it released, for the
    /// nodes that cannot read the policies (`applyStatements`). `covered`: every other revision of the tree stored
    /// here, each of which the release walked as live. A statement past `ReleaseStatement.maximumIds` is not made:
    /// those nodes keep more.
    fileprivate func publishStatement(_ db: Database, released: Set<RevisionID>, dead: Set<ChunkID>, now: UInt64)
        throws -> AddedRevision?
    {
        guard !released.isEmpty else { return nil }
        let tree = keyring.identity.publicKey
        let all = try Data.fetchAll(db, sql: "SELECT id FROM revisions WHERE tree = ?", arguments: [Data(tree.bytes)])
        let covered = Set(all.compactMap { try? Digest(bytes: $0) }).subtracting(released)
        // Later than every statement held of the tree: a receiver refuses an older one as a replay.
        let newest =
            try Int64.fetchOne(
                db, sql: "SELECT MAX(time) FROM statements WHERE tree = ?", arguments: [Data(tree.bytes)])
        let time = max(now, newest.map { UInt64($0) + 1 } ?? 0)
        let statement = ReleaseStatement(tree: tree, time: time, released: released, covered: covered, dead: dead)
        guard let signed = SignedReleaseStatement(statement, signer: keyring.identity) else {
            logger.notice("the release names too many revisions for a release statement; storage nodes keep them")
            return nil
        }
        return try StoreTransaction(db: db, store: self, added: AddedRevisions()).insert(signed, applied: true)
    }

    /// Applies the release statements received from tree owners (docs/design.md, "Release statements"), oldest
    /// first: by a node that keeps every revision unless told, one serving without a mount and without
    /// `--keep-all`. A statement is applied only where this node's own checks agree: every revision of its tree
    /// stored here is one the statement covers or releases (none arrived that it did not weigh), no released one is
    /// a head here, and an object goes only if no other revision this node can open needs it. A statement that
    /// fails them stays and is tried at the next pass. `dryRun`: what would go now, changing nothing.
    func applyStatements(dryRun: Bool) throws(StoreError) -> CollectionSummary {
        let pending: [SignedReleaseStatement] = try catalog.read { db in
            try Data.fetchAll(db, sql: "SELECT record FROM statements WHERE applied = 0 ORDER BY time, seq").compactMap
            {
                try? SignedReleaseStatement(record: Array($0))
            }
        }
        var summary = CollectionSummary()
        for signed in pending {
            if stopCollecting.load(ordering: .relaxed) { break }
            guard let applied = try apply(signed, dryRun: dryRun) else { continue }
            summary.revisions += applied.revisions
            summary.chunks += applied.chunks
            summary.bytes += applied.bytes
        }
        return summary
    }

    /// One statement (`applyStatements`); nil when this node's checks do not let it apply now.
    private func apply(_ signed: SignedReleaseStatement, dryRun: Bool) throws(StoreError) -> CollectionSummary? {
        let statement = signed.statement
        let released = Set(statement.released)
        let weighed = released.union(statement.covered)
        let tree = Data(statement.tree.bytes)
        // Checked again in the transaction below: nothing arrived meanwhile (`seen`).
        func agrees(_ db: Database) throws -> Bool {
            let held = try Data.fetchAll(db, sql: "SELECT id FROM revisions WHERE tree = ?", arguments: [tree])
            guard held.allSatisfy({ (try? Digest(bytes: $0)).map(weighed.contains) ?? false }) else { return false }
            let head = try db.cachedStatement(sql: "SELECT 1 FROM heads WHERE revision = ?")
            return try released.allSatisfy { try Int.fetchOne(head, arguments: [Data($0.bytes)]) == nil }
        }
        let (agreed, rows, seen) = try catalog.read { db in
            (
                try agrees(db),
                try Row.fetchAll(
                    db,
                    sql: "SELECT id, seq FROM revisions WHERE id NOT IN (SELECT revision FROM released) ORDER BY seq"),
                try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM revisions") ?? 0
            )
        }
        guard agreed else { return nil }
        // What any other revision this node can open needs stays (public content shared across trees; the tree's
        // own revisions on a node that holds its keys).
        var live = Reach(store: self)
        for row in rows {
            guard let id = try? Digest(bytes: row[0] as Data), !released.contains(id) else { continue }
            let metadata: RevisionMetadata
            do throws(StoreError) { metadata = try revision(id, readingXattrs: false).metadata } catch {
                if case .rights = error { continue }
                throw error
            }
            for root in [metadata.content, metadata.xattrList] { try live.walk(root, strict: false) }
        }
        let dead = Set(statement.dead).subtracting(live.objects)
        let sizes = try storedBytes(dead)
        var summary = CollectionSummary()
        summary.chunks = sizes.count
        summary.bytes = sizes.values.reduce(0) { $0 + $1 - Int64(PackStore.recordHeaderSize) }
        let gone: [ChunkLocation]? = try catalog.write { db in
            guard try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM revisions") ?? 0 == seen, try agrees(db) else {
                return nil
            }
            let has = try db.cachedStatement(sql: "SELECT 1 FROM revisions WHERE id = ?")
            summary.revisions = try released.filter { try Int.fetchOne(has, arguments: [Data($0.bytes)]) != nil }.count
            if dryRun { return [] }
            let gone = try Self.release(db, dead: dead, revisions: released)
            try db.execute(sql: "UPDATE statements SET applied = 1 WHERE id = ?", arguments: [Data(signed.id.bytes)])
            return gone
        }
        guard let gone else { return nil }
        forget(gone)
        if !dryRun {
            logger.notice(
                "applied a release statement of a tree's owner",
                metadata: [
                    "tree": "\(statement.tree.bytes.prefix(8).map { String($0, radix: 16) }.joined())",
                    "revisions": "\(summary.revisions)", "chunks": "\(summary.chunks)", "bytes": "\(summary.bytes)",
                ])
        }
        return summary
    }
}

extension StoreTransaction {
    /// A release statement received in `tree`'s log: stored (to be applied by `Store.applyStatements`, and served
    /// on) unless it is of another tree, or older than one held of its tree (a replay; docs/security.md). Its
    /// signature was checked when it was decoded. Nil if stored or held already.
    func receive(_ signed: SignedReleaseStatement, tree: SigningPublicKey) throws -> Rejection? {
        guard signed.statement.tree == tree else { return .badStatement("it is of another tree") }
        if try Int.fetchOne(db, sql: "SELECT 1 FROM statements WHERE id = ?", arguments: [Data(signed.id.bytes)]) != nil
        {
            return nil
        }
        if let newest = try Int64.fetchOne(
            db, sql: "SELECT MAX(time) FROM statements WHERE tree = ?", arguments: [Data(tree.bytes)]),
            UInt64(newest) >= signed.statement.time
        {
            return .badStatement("it is not newer than one held (replayed)")
        }
        added.list.append(try insert(signed, applied: false))
        return nil
    }

    /// Stores a statement at the next seq of the log; what its subscribers are told.
    func insert(_ signed: SignedReleaseStatement, applied: Bool) throws -> AddedRevision {
        let tree = signed.statement.tree
        try db.execute(
            sql: "INSERT INTO statements (id, tree, time, record, seq, applied) VALUES (?, ?, ?, ?, ?, ?)",
            arguments: [
                Data(signed.id.bytes), Data(tree.bytes), Int64(signed.statement.time), Data(signed.record),
                try nextSeq(), applied,
            ])
        return AddedRevision(id: signed.id, document: .root(of: tree), tree: tree, isLocal: false, isStatement: true)
    }
}

/// A stored revision as `collectionPlan` weighs it.
private struct CollectedRevision {
    var id: RevisionID
    var revision: Revision
    /// Of this node's identity's tree.
    var own: Bool
    var head: Bool
    var refused: Bool
    /// Other nodes recorded as holding it.
    var replicas: Int
    /// Its content was released before (`released` table).
    var released: Bool
    var seq: Int64
}

/// A plan, and what its release checks again against the writes made since.
private struct PlannedCollection {
    var summary = CollectionSummary()
    /// The revisions the policies release now.
    var released: Set<RevisionID>
    var dead = Set<ChunkID>()
    /// What every other revision needs.
    var live: Reach
    /// The last log position the plan read.
    var seen: Int64
}

/// The stored objects a set of manifest trees needs: their nodes and data chunks, and the delta bases of each.
private struct Reach {
    let store: Store
    var objects = Set<ChunkID>()
    /// Manifest nodes whose children were walked (a node reached first as a delta base was not).
    var nodes = Set<ChunkID>()

    /// `strict` false: a node not stored here is skipped (what it lists is not known, and not needed here).
    mutating func walk(_ root: ManifestReference?, strict: Bool) throws(StoreError) {
        guard let root else { return }
        try walk(node: root.node, level: root.level, strict: strict)
    }

    private mutating func walk(node reference: ChunkReference, level: UInt8, strict: Bool) throws(StoreError) {
        if !strict, try store.location(of: reference.id) == nil { return }
        try need(reference)
        guard nodes.insert(reference.id).inserted else { return }
        let node = try store.manifestNode(reference)
        // Walking a node at another level would take its nodes for chunks and miss what they list.
        guard node.level == level else {
            throw .corrupt(object: "manifest node \(reference.id.hex)", reason: "wrong level")
        }
        for child in node.children {
            if level == 0 { try need(child) } else { try walk(node: child, level: level - 1, strict: strict) }
        }
    }

    /// The object and, if it is a delta, its bases (as objects only: their children belong to older trees).
    mutating func need(_ reference: ChunkReference) throws(StoreError) {
        guard !reference.isHole, objects.insert(reference.id).inserted, try store.location(of: reference.id) != nil
        else { return }
        if case .delta(let delta) = try store.opened(reference) {
            for base in delta.bases { try need(base) }
        }
    }
}

/// What writes in flight reference without appending it: checked by a release while it holds them
/// (`Store.inFlight`), so a reference noted before the release began is kept, and one noted after finds the rows
/// it deleted gone. Noted for the life of the process (a write's revision may come much later): objects a write
/// found stored (deduplicated: a reference each, once per distinct chunk), and the roots `reusableMetadata` hands out.
struct InFlight {
    /// Objects a write found stored.
    var objects: [ChunkID: ChunkReference] = [:]
    /// Objects writes are checking for, with how many writes are.
    var checking: [ChunkID: (reference: ChunkReference, writes: Int)] = [:]
    var roots: [ChunkID: ManifestReference] = [:]

    /// Before a write checks which of `references` are stored.
    mutating func check(_ references: [ChunkReference]) {
        for r in references { checking[r.id, default: (reference: r, writes: 0)].writes += 1 }
    }

    /// After the check: those found stored stay noted; those it stores anew are named by no row until its
    /// transaction, which a release cannot delete.
    mutating func checked(_ references: [ChunkReference], found: Set<ChunkID>) {
        for r in references {
            if found.contains(r.id) { objects[r.id] = r }
            guard let entry = checking[r.id] else { continue }
            checking[r.id] = entry.writes > 1 ? (reference: entry.reference, writes: entry.writes - 1) : nil
        }
    }
}
