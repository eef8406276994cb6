import Glibc
import HypernetModel
import HypernetStore
import Testing

/// `Store.collectionPlan`: which revisions a policy releases and which chunks that frees, across documents.
@Suite struct RetentionStoreTests {
    /// Distinct, incompressible bytes for `seed`, several chunks long.
    static func bytes(_ seed: UInt64, count: Int = 200_000) -> [UInt8] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        return (0..<count).map { _ in
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return UInt8(truncatingIfNeeded: state)
        }
    }

    /// A revision of `document` holding `content`; its root, so that tests can list its chunks.
    static func commit(
        _ content: [UInt8], _ document: DocumentID, parents: [RevisionID], previous: ManifestTree = .empty,
        on store: Store
    ) throws -> (id: RevisionID, root: ManifestReference?) {
        let written = try store.writeContent(content, key: store.keyring.treeKey, previous: previous)
        let metadata = RevisionMetadata(
            mode: 0o100644, uid: 0, gid: 0, mtimeSeconds: 0, mtimeNanoseconds: 0, ctimeSeconds: 0, ctimeNanoseconds: 0,
            size: UInt64(content.count), quorum: 0, xattrs: [], content: written.root, symlinkTarget: [])
        let id = try store.transaction { tx in
            try tx.recordChunks(written.locations)
            return try tx.appendRevision(document: document, kind: .file, metadata: metadata, parents: parents)
        }
        return (id, written.root)
    }

    static func objects(_ root: ManifestReference?, _ store: Store) throws -> Set<ChunkID> {
        Set(try store.loadManifest(root).chunks.map(\.id) + [root!.node.id])
    }

    @Test func lastTwoReleasesOlderContentButNotWhatAnotherDocumentShares() throws {
        let store = try temporaryStore("retention")
        defer { removeTemporaryStore(store) }
        let (a, b) = (DocumentID.random(), DocumentID.random())
        var history: [(id: RevisionID, root: ManifestReference?)] = []
        for seed in 1...4 as ClosedRange<UInt64> {
            history.append(try Self.commit(Self.bytes(seed), a, parents: history.last.map { [$0.id] } ?? [], on: store))
        }
        // b holds a's first content: its chunks are shared (deduplicated) and must stay.
        let shared = try Self.commit(Self.bytes(1), b, parents: [], on: store)
        let now = UInt64(time(nil)) * 1000 + 60_000
        let last2 = try RetentionPolicy(parsing: "last 2")
        let plan = try store.collectionPlan(rules: { _ in (last2, 1) }, now: now)
        #expect(plan.released == [history[0].id, history[1].id])
        let second = try Self.objects(history[1].root, store)
        #expect(plan.dead == second, "exactly the chunks only the second revision uses")
        #expect(plan.summary.revisions == 2 && plan.summary.chunks == second.count && plan.summary.bytes > 200_000)
        #expect(plan.dead.isDisjoint(with: try Self.objects(shared.root, store)))
        #expect(plan.dead.isDisjoint(with: try Self.objects(history[3].root, store)))
        // The default keeps the last 30 days; a document the caller cannot place keeps everything.
        #expect(try store.collectionPlan(rules: { _ in (.default, 1) }, now: now).released.isEmpty)
        #expect(try store.collectionPlan(rules: { _ in nil }, now: now).released.isEmpty)
    }

    @Test func conflictHeadsAndRevisionsBelowQuorumStay() throws {
        let store = try temporaryStore("retention")
        defer { removeTemporaryStore(store) }
        let a = DocumentID.random()
        let first = try Self.commit(Self.bytes(1), a, parents: [], on: store)
        let conflict = try Self.commit(Self.bytes(2), a, parents: [first.id], on: store)
        let winner = try Self.commit(Self.bytes(3), a, parents: [first.id], on: store)
        let now = UInt64(time(nil)) * 1000 + 60_000
        let last1 = try RetentionPolicy(parsing: "last 1")
        let plan = try store.collectionPlan(rules: { _ in (last1, 1) }, now: now)
        #expect(plan.released == [first.id], "both heads stay: \(conflict.id.hex), \(winner.id.hex)")
        // With quorum 2 and no replica recorded, this node may hold the only copy: nothing goes.
        #expect(try store.collectionPlan(rules: { _ in (last1, 2) }, now: now).released.isEmpty)
    }

    /// A manifest node stored as a delta needs its base, a node of the previous revision's tree, even once that
    /// revision is released.
    @Test func aDeltaKeepsItsBaseFromAReleasedRevision() throws {
        let store = try temporaryStore("retention")
        defer { removeTemporaryStore(store) }
        let a = DocumentID.random()
        let old = Self.bytes(7, count: 2_000_000)
        var new = old
        new[new.count - 10] ^= 0xff
        let first = try Self.commit(old, a, parents: [], on: store)
        let second = try Self.commit(
            new, a, parents: [first.id], previous: try store.loadManifest(first.root), on: store)
        let now = UInt64(time(nil)) * 1000 + 60_000
        let plan = try store.collectionPlan(rules: { _ in (try! RetentionPolicy(parsing: "last 1"), 1) }, now: now)
        #expect(plan.released == [first.id])
        #expect(!plan.dead.contains(first.root!.node.id), "the first leaf is the base of the second's delta")
        let kept = Set(try store.loadManifest(second.root).chunks.map(\.id))
        let firstChunks = Set(try store.loadManifest(first.root).chunks.map(\.id))
        #expect(plan.dead == firstChunks.subtracting(kept) && plan.dead.count == 1, "only the changed last chunk")
    }
}

/// `Store.collectGarbage` with retention rules: what the plan lists is released, and what a write in flight or a
/// restore is about to name stays (docs/design.md, "Retention decisions").
@Suite struct RetentionReleaseTests {
    let last1 = try! RetentionPolicy(parsing: "last 1")
    var now: UInt64 { UInt64(time(nil)) * 1000 + 60_000 }

    /// Two revisions of one document, of `bytes(1)` and `bytes(2)`: `last 1` releases the first.
    static func twoRevisions(on store: Store) throws -> (
        first: (id: RevisionID, root: ManifestReference?), second: (id: RevisionID, root: ManifestReference?)
    ) {
        let a = DocumentID.random()
        let first = try RetentionStoreTests.commit(RetentionStoreTests.bytes(1), a, parents: [], on: store)
        return (first, try RetentionStoreTests.commit(RetentionStoreTests.bytes(2), a, parents: [first.id], on: store))
    }

    @Test func releaseDeletesOnlyTheDeadChunksAndRecordsTheRevision() throws {
        let store = try temporaryStore("release")
        defer { removeTemporaryStore(store) }
        let (first, second) = try Self.twoRevisions(on: store)
        let objects = try RetentionStoreTests.objects(first.root, store)
        let report = try store.collectGarbage(retention: ({ _ in (last1, 1) }, now))
        #expect(report.retention?.revisions == 1 && report.retention?.chunks == objects.count)
        #expect(try store.isReleased(first.id) && !(try store.isReleased(second.id)))
        for id in objects { #expect(!store.holds(id)) }
        #expect(try store.readContent(second.root) == RetentionStoreTests.bytes(2))
        #expect(throws: StoreError.self) { try store.reusableMetadata(of: first.id) }
        #expect(try store.collectGarbage(retention: ({ _ in (last1, 1) }, now)).retention?.revisions == 0)
    }

    /// A writer that found the first revision's chunks stored (the same bytes written again) references them
    /// without appending them, and commits later: a release in between keeps them.
    @Test func aWriteInFlightKeepsTheChunksItFoundStored() throws {
        let store = try temporaryStore("release")
        defer { removeTemporaryStore(store) }
        let (first, second) = try Self.twoRevisions(on: store)
        let again = try store.writeContent(RetentionStoreTests.bytes(1), key: store.keyring.treeKey)
        #expect(again.root == first.root, "the same bytes, deduplicated: nothing appended")
        _ = try store.collectGarbage(retention: ({ _ in (last1, 1) }, now))
        #expect(try store.isReleased(first.id), "released, its content kept whole: a write names it")
        let b = DocumentID.random()
        let metadata = RevisionMetadata(
            mode: 0o100644, uid: 0, gid: 0, mtimeSeconds: 0, mtimeNanoseconds: 0, ctimeSeconds: 0, ctimeNanoseconds: 0,
            size: 200_000, quorum: 0, xattrs: [], content: again.root, symlinkTarget: [])
        _ = try store.transaction { tx in
            try tx.recordChunks(again.locations)
            return try tx.appendRevision(document: b, kind: .file, metadata: metadata, parents: [])
        }
        #expect(try store.readContent(again.root) == RetentionStoreTests.bytes(1))
        #expect(try store.readContent(second.root) == RetentionStoreTests.bytes(2))
    }

    /// `reusableMetadata` (restore, resolve) notes the revision's roots before it checks: a release after keeps
    /// them whole.
    @Test func aRestoreInFlightKeepsTheContentItNames() throws {
        let store = try temporaryStore("release")
        defer { removeTemporaryStore(store) }
        let first = try Self.twoRevisions(on: store).first
        let old = try store.reusableMetadata(of: first.id)
        _ = try store.collectGarbage(retention: ({ _ in (last1, 1) }, now))
        #expect(try store.readContent(old.content) == RetentionStoreTests.bytes(1))
    }
}
