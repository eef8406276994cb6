import Glibc
import HypernetCrypto
import HypernetModel
import HypernetStore
import Testing

/// Release statements (docs/design.md, "Release statements"): an owner's release reaches a node without the tree's
/// keys, which applies it only where its own checks agree, and refuses forged and replayed ones.
@Suite struct ReleaseStatementTests {
    /// Copies `source`'s log of its own tree after `seq` into `target` (chunks first, as fetching does); the last
    /// seq copied.
    @discardableResult
    static func replicate(from source: Store, to target: Store, after seq: Int64 = 0) throws -> Int64 {
        let tree = source.keyring.identity.publicKey
        let entries = try source.log(tree: tree, after: seq, limit: 1000)
        let arrived = try target.missingChunks(entries.flatMap(\.chunks)).map { id in
            try target.receiveChunk(id: id, sealed: try #require(try source.sealedChunk(id)))
        }
        #expect(try target.storeRemote(records: remoteRecords(entries, tree: tree), chunks: arrived).isEmpty)
        return entries.last?.seq ?? seq
    }

    static let now = UInt64(time(nil)) * 1000 + 60_000

    /// Four saves of one document on `owner`, replicated to `storage`; the revisions and their roots.
    static func history(_ owner: Store, _ storage: Store) throws -> [(id: RevisionID, root: ManifestReference?)] {
        let document = DocumentID.random()
        var history: [(id: RevisionID, root: ManifestReference?)] = []
        for seed in 1...4 as ClosedRange<UInt64> {
            history.append(
                try RetentionStoreTests.commit(
                    RetentionStoreTests.bytes(seed), document, parents: history.last.map { [$0.id] } ?? [], on: owner))
        }
        try replicate(from: owner, to: storage)
        return history
    }

    @Test func aKeylessNodeAppliesTheOwnersReleaseAndKeepsTheRest() throws {
        let (owner, storage) = (try temporaryStore("owner"), try temporaryStore("storage"))
        defer { [owner, storage].forEach(removeTemporaryStore) }
        let history = try Self.history(owner, storage)
        let last1 = try RetentionPolicy(parsing: "last 1")
        let plan = try owner.collectionPlan(rules: { _ in (last1, 1) }, now: Self.now)
        let released = try owner.collectGarbage(retention: ({ _ in (last1, 1) }, Self.now)).retention
        #expect(released == plan.summary && released?.revisions == 3)
        // Before the statement arrives, the storage node has nothing to apply.
        #expect(try storage.collectGarbage(statements: true).retention == CollectionSummary())
        try Self.replicate(from: owner, to: storage, after: 0)
        #expect(try storage.collectGarbage(dryRun: true, statements: true).retention == plan.summary)
        let applied = try storage.collectGarbage(statements: true).retention
        #expect(applied == plan.summary, "the storage node releases what the owner's plan said")
        for id in plan.dead { #expect(try storage.sealedChunk(id) == nil) }
        for id in try RetentionStoreTests.objects(history[3].root, owner) {
            #expect(try storage.sealedChunk(id) == owner.sealedChunk(id), "the retained revision stays whole")
        }
        for r in history.prefix(3) { #expect(try storage.isReleased(r.id)) }
        #expect(try storage.collectGarbage(statements: true).retention == CollectionSummary(), "applied once")
        #expect(storage.check().isEmpty)
    }

    @Test func aStatementThatDidNotWeighARevisionHeldHereWaitsAndForgedOrReplayedOnesAreRefused() throws {
        let (owner, storage) = (try temporaryStore("owner"), try temporaryStore("storage"))
        defer { [owner, storage].forEach(removeTemporaryStore) }
        _ = try Self.history(owner, storage)
        let tree = owner.keyring.identity.publicKey
        let last1 = try RetentionPolicy(parsing: "last 1")
        let dead = try owner.collectionPlan(rules: { _ in (last1, 1) }, now: Self.now).dead
        #expect(!dead.isEmpty)
        _ = try owner.collectGarbage(retention: ({ _ in (last1, 1) }, Self.now))
        let entry = try #require(try owner.log(tree: tree, after: 0, limit: 100).last)
        guard case .release(let signed) = try LogRecord(record: entry.record) else {
            Issue.record("the owner's last log record is no statement")
            return
        }
        // Forged: the owner's statement signed by another key does not decode.
        var forged = signed.record
        forged.replaceSubrange(
            (forged.count - 64)...,
            with: SigningKeyPair.generate().signature(
                for: Array("hypernet release statement v1\n".utf8) + Array(forged.dropLast(64))))
        #expect(throws: HypernetModel.DecodingError.self) { try SignedReleaseStatement(record: forged) }
        // A statement of another tree in this tree's run is refused.
        let stranger = SigningKeyPair.generate()
        let foreign = try #require(
            SignedReleaseStatement(
                ReleaseStatement(tree: stranger.publicKey, time: Self.now, released: [], covered: [], dead: []),
                signer: stranger))
        let refused = try storage.storeRemote(records: [.release(foreign, tree: tree)], chunks: [])
        #expect(refused.map(\.1) == [.badStatement("it is of another tree")])
        // A revision of the tree the release did not weigh (written after it, as by another device): the storage
        // node holds it with the statement, and the statement waits.
        _ = try RetentionStoreTests.commit(RetentionStoreTests.bytes(5), DocumentID.random(), parents: [], on: owner)
        try Self.replicate(from: owner, to: storage)
        #expect(try storage.collectGarbage(statements: true).retention == CollectionSummary(), "it waits")
        for id in dead { #expect(try storage.sealedChunk(id) != nil, "nothing went") }
        // Replayed: a statement older than one held is refused; the one held, sent again, is no news.
        let older = try #require(
            SignedReleaseStatement(
                ReleaseStatement(tree: tree, time: signed.statement.time - 1, released: [], covered: [], dead: []),
                signer: owner.keyring.identity))
        let replayed = try storage.storeRemote(records: [.release(older, tree: tree)], chunks: [])
        #expect(replayed.map(\.1) == [.badStatement("it is not newer than one held (replayed)")])
        #expect(try storage.storeRemote(records: [.release(signed, tree: tree)], chunks: []).isEmpty)
    }
}
