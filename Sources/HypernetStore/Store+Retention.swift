import FoundationEssentials
import GRDB
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
        let own = Data(keyring.identity.publicKey.bytes)
        let rows: [CollectedRevision] = try catalog.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT id, document, tree = ?, record, id IN (SELECT revision FROM heads),
                        id IN (SELECT revision FROM refused), (SELECT count(*) FROM replicas WHERE revision = id)
                    FROM revisions ORDER BY seq
                    """, arguments: [own]
            ).map { row in
                let signed = try SignedRevision(record: Array(row[3] as Data))
                return CollectedRevision(
                    id: signed.id, revision: signed.revision, own: row[2], head: row[4], refused: row[5],
                    replicas: row[6])
            }
        }
        var released = Set<RevisionID>()
        for (document, revisions) in Dictionary(grouping: rows.filter(\.own), by: \.revision.document) {
            guard let (policy, quorum) = rules(document) else { continue }
            let candidates = revisions.filter { $0.revision.kind == .file && !$0.refused }
            let kept = policy.kept(
                candidates.map {
                    RetentionPolicy.Candidate(id: $0.id, milliseconds: $0.revision.time.milliseconds, head: $0.head)
                }, now: now)
            for r in candidates where !kept.contains(r.id) && r.replicas + 1 >= quorum { released.insert(r.id) }
        }
        var plan = CollectionSummary()
        plan.revisions = released.count
        guard !released.isEmpty else { return (plan, released, []) }
        var live = Reach(store: self)
        var freed = Reach(store: self)
        for row in rows {
            let metadata: RevisionMetadata
            do throws(StoreError) { metadata = try revision(row.id, readingXattrs: false).metadata } catch {
                if case .rights = error { continue }
                throw error
            }
            // Another tree's content that is not here is not needed here; this tree's must all be, or what it
            // needs is unknown and nothing may go.
            let strict = row.own && !released.contains(row.id)
            for root in [metadata.content, metadata.xattrList] {
                if released.contains(row.id) {
                    try freed.walk(root, strict: false)
                } else {
                    try live.walk(root, strict: strict)
                }
            }
        }
        let dead = freed.objects.subtracting(live.objects)
        plan.chunks = dead.count
        plan.bytes = try catalog.read { db in
            var total: Int64 = 0
            for batch in Array(dead).chunked(500) {
                let marks = databaseQuestionMarks(count: batch.count)
                total +=
                    try Int64.fetchOne(
                        db, sql: "SELECT coalesce(sum(length), 0) FROM chunks WHERE id IN (\(marks))",
                        arguments: StatementArguments(batch.map { Data($0.bytes) })) ?? 0
            }
            return total
        }
        return (plan, released, dead)
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
    private mutating func need(_ reference: ChunkReference) throws(StoreError) {
        guard !reference.isHole, objects.insert(reference.id).inserted, try store.location(of: reference.id) != nil
        else { return }
        if case .delta(let delta) = try store.opened(reference) {
            for base in delta.bases { try need(base) }
        }
    }
}

extension Array {
    fileprivate func chunked(_ size: Int) -> [ArraySlice<Element>] {
        stride(from: 0, to: count, by: size).map { self[$0..<Swift.min($0 + size, count)] }
    }
}
