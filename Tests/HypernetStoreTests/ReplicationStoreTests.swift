import Dispatch
import Glibc
import HypernetCrypto
import HypernetModel
import HypernetStore
import Logging
import Testing

/// A store receiving revisions from another, as replication does: verification, logs, replicas, quorum.
@Suite struct ReplicationStoreTests {
    func makeStore() throws -> Store { try temporaryStore("repl") }

    func remove(_ stores: Store...) { for s in stores { removeTemporaryStore(s) } }

    /// Writes `bytes` as a new document's revision on `store` and returns the log entry a peer would get.
    func commit(_ bytes: [UInt8], on store: Store, parents: [RevisionID] = [], document: DocumentID = .random()) throws
        -> LogEntry
    {
        let written = try store.writeContent(bytes, key: store.keyring.treeKey)
        var metadata = RevisionMetadata(
            mode: 0o100644, uid: 0, gid: 0, mtimeSeconds: 0, mtimeNanoseconds: 0, ctimeSeconds: 0, ctimeNanoseconds: 0,
            size: UInt64(bytes.count), quorum: 0, xattrs: [], content: written.root, symlinkTarget: [])
        metadata.size = UInt64(bytes.count)
        let id = try store.transaction { tx in
            try tx.recordChunks(written.locations)
            return try tx.appendRevision(document: document, kind: .file, metadata: metadata, parents: parents)
        }
        let log = try store.log(tree: store.keyring.identity.publicKey, after: 0, limit: 10_000)
        return log.first { BLAKE2b.hash($0.record) == id }!
    }

    /// Copies the chunks `entry` lists from `source` into `target`'s packs (as fetching does).
    func transfer(_ entry: LogEntry, from source: Store, to target: Store) throws -> [ChunkLocation] {
        try entry.chunks.map { id in try target.receiveChunk(id: id, sealed: try source.sealedChunk(id)!) }
    }

    @Test func aRevisionWithItsChunksIsStoredAndLogged() throws {
        let (a, c) = (try makeStore(), try makeStore())
        defer { remove(a, c) }
        let entry = try commit(Array(repeating: 5, count: 100_000), on: a)
        #expect(!entry.chunks.isEmpty, "a new revision lists the chunks it introduced")
        let tree = a.keyring.identity.publicKey
        let signed = try SignedRevision(record: entry.record)
        let rejected = try c.storeRemote(
            [RemoteRevision(signed: signed, tree: tree, chunks: entry.chunks)],
            chunks: try transfer(entry, from: a, to: c))
        #expect(rejected.isEmpty)
        let log = try c.log(tree: tree, after: 0, limit: 10)
        #expect(log.map(\.record) == [entry.record])
        #expect(Set(log[0].chunks) == Set(entry.chunks), "a relay lists the same chunks")
        #expect(try c.trees() == [tree])
        #expect(c.check().isEmpty)
    }

    @Test func aRevisionByAnotherIdentityIsRejected() throws {
        let (a, c) = (try makeStore(), try makeStore())
        defer { remove(a, c) }
        let entry = try commit([1, 2, 3], on: a)
        let otherTree = c.keyring.identity.publicKey
        let signed = try SignedRevision(record: entry.record)
        let rejected = try c.storeRemote(
            [RemoteRevision(signed: signed, tree: otherTree, chunks: entry.chunks)],
            chunks: try transfer(entry, from: a, to: c))
        #expect(rejected.map(\.1) == [.notAuthorized])
        #expect(try c.existingRevisions([signed.id]).isEmpty)
    }

    @Test func missingParentsAndChunksAreTransientRejections() throws {
        let (a, c) = (try makeStore(), try makeStore())
        defer { remove(a, c) }
        let tree = a.keyring.identity.publicKey
        let document = DocumentID.random()
        let first = try commit([1], on: a, document: document)
        let second = try commit([2], on: a, parents: [BLAKE2b.hash(first.record)], document: document)
        let secondSigned = try SignedRevision(record: second.record)
        var rejected = try c.storeRemote(
            [RemoteRevision(signed: secondSigned, tree: tree, chunks: second.chunks)],
            chunks: try transfer(second, from: a, to: c))
        #expect(rejected.map(\.1) == [.missingParent(BLAKE2b.hash(first.record))])
        #expect(rejected.allSatisfy { $0.1.isTransient })
        let firstSigned = try SignedRevision(record: first.record)
        rejected = try c.storeRemote(
            [RemoteRevision(signed: firstSigned, tree: tree, chunks: first.chunks)], chunks: [])
        #expect(rejected.map(\.1) == [.missingChunk(first.chunks[0])])
        // Both, in order, in one batch: stored.
        let locations = try transfer(first, from: a, to: c) + transfer(second, from: a, to: c)
        rejected = try c.storeRemote(
            [
                RemoteRevision(signed: firstSigned, tree: tree, chunks: first.chunks),
                RemoteRevision(signed: secondSigned, tree: tree, chunks: second.chunks),
            ],
            chunks: locations)
        #expect(rejected.isEmpty)
        #expect(try c.heads(of: document) == [secondSigned.id])
    }

    @Test func aChunkWhoseBytesDoNotMatchItsIdIsRefused() throws {
        let c = try makeStore()
        defer { remove(c) }
        #expect(throws: StoreError.self) { try c.receiveChunk(id: BLAKE2b.hash([1]), sealed: [2]) }
    }

    @Test func fsyncWaitersWakeOnReplicasAndTimeOutOtherwise() throws {
        let a = try makeStore()
        defer { remove(a) }
        let entry = try commit([7], on: a)
        let id = BLAKE2b.hash(entry.record)
        #expect(a.waitForReplicas([id], count: 1, timeout: .milliseconds(50)) == .timedOut, "no replica yet")
        #expect(try a.backlog(quorum: 2).revisions == 1)
        let node = SigningKeyPair.generate().publicKey
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(100)) {
            a.recordReplicas(node: node, revisions: [id])
        }
        #expect(a.waitForReplicas([id], count: 1, timeout: .seconds(10)) == .reached)
        #expect(try a.replicaCount(id) == 1)
        // Waiters wake before the ack's catalog row is written (docs/protocol.md, "Acks"): the backlog follows.
        let deadline = ContinuousClock.now + .seconds(5)
        while try a.backlog(quorum: 2).revisions != 0 && ContinuousClock.now < deadline { usleep(10_000) }
        #expect(try a.backlog(quorum: 2).revisions == 0)
        #expect(try a.backlog(quorum: 3).revisions == 1)
    }

    @Test func anInterruptedFsyncWaitEnds() throws {
        let a = try makeStore()
        defer { remove(a) }
        let id = BLAKE2b.hash(try commit([7], on: a).record)
        let early = Interruption()
        early.interrupt()
        #expect(a.waitForReplicas([id], count: 1, timeout: nil, interruption: early) == .interrupted)
        let later = Interruption()
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(100)) { later.interrupt() }
        #expect(a.waitForReplicas([id], count: 1, timeout: nil, interruption: later) == .interrupted)
        #expect(try a.backlog(quorum: 2).revisions == 1, "the revision stays queued")
    }

    @Test func peersPinsAndProgressPersist() throws {
        let a = try makeStore()
        defer { remove(a) }
        try a.addPeer("127.0.0.1:7000", configured: false)
        try a.addPeer("127.0.0.1:7000", configured: true)
        try a.addPeer("127.0.0.1:7000", configured: false)
        #expect(try a.peers().map(\.configured) == [true], "configured stays configured")
        try a.setPinned("*", true)
        #expect(try a.pins() == ["*"])
        let peer = SigningKeyPair.generate().publicKey
        try a.setProgress(peer: peer, tree: peer, storeID: "x", seq: 5)
        #expect(try a.progress(peer: peer, tree: peer)?.seq == 5)
    }

    @Test func removedPeersStayRemovedUntilConfiguredAgain() throws {
        let a = try makeStore()
        defer { remove(a) }
        try a.addPeer("127.0.0.1:7000", configured: true)
        #expect(try a.removePeer("127.0.0.1:7000")?.address == "127.0.0.1:7000")
        #expect(try a.removePeer("127.0.0.1:7000") == nil, "removed already")
        #expect(try a.removePeer("127.0.0.1:7001") == nil, "never known")
        try a.addPeer("127.0.0.1:7000", configured: false)
        #expect(try a.peers().isEmpty, "learning it again does not bring it back")
        #expect(try a.peers(removed: true).map(\.address) == ["127.0.0.1:7000"])
        try a.addPeer("127.0.0.1:7000", configured: true)
        #expect(try a.peers().map(\.address) == ["127.0.0.1:7000"], "configuring it again does")
        #expect(try a.peers(removed: true).isEmpty)
    }

    @Test func onlyLearnedPeersUnseenSinceTheCutoffAreForgotten() throws {
        let a = try makeStore()
        defer { remove(a) }
        let now = Int64(time(nil))
        try a.addPeer("127.0.0.1:7000", configured: false)
        try a.addPeer("127.0.0.1:7001", configured: true)
        #expect(try !a.forgetLearnedPeer("127.0.0.1:7000", unseenSince: now - 60), "learned just now")
        #expect(try !a.forgetLearnedPeer("127.0.0.1:7001", unseenSince: now + 60), "configured")
        try a.updatePeer("127.0.0.1:7000", node: SigningKeyPair.generate().publicKey, error: nil)
        #expect(try !a.forgetLearnedPeer("127.0.0.1:7000", unseenSince: now - 60), "seen just now")
        #expect(try a.forgetLearnedPeer("127.0.0.1:7000", unseenSince: now + 60))
        #expect(try a.peers().map(\.address) == ["127.0.0.1:7001"])
    }
}
