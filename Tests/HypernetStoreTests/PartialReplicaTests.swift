import HypernetCrypto
import HypernetModel
import HypernetStore
import Synchronization
import Testing

/// A store holding a tree on demand (docs/store-format.md, "Partial replicas"): a file revision is stored without
/// its chunks, which stay listed in the log, and a read fetches them through the content source.
@Suite struct PartialReplicaTests {
    let replication = ReplicationStoreTests()

    @Test func anOnDemandRevisionIsStoredWithoutItsChunksAndAReadFetchesThem() throws {
        let (a, c) = (try temporaryStore("partial"), try temporaryStore("partial"))
        defer { replication.remove(a, c) }
        let bytes = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 9) }
        let entry = try replication.commit(bytes, on: a)
        let tree = a.keyring.identity.publicKey
        let signed = try SignedRevision(record: entry.record)
        let remote = RemoteRevision(signed: signed, tree: tree, chunks: entry.chunks, onDemand: true)
        #expect(try c.storeRemote([remote], chunks: []).isEmpty, "an on-demand file revision needs no chunk")
        #expect(try c.missingChunks(entry.chunks).count == entry.chunks.count, "no chunk came with it")
        #expect(Set(try c.log(tree: tree, after: 0, limit: 10)[0].chunks) == Set(entry.chunks), "the log lists them")
        #expect(try c.hasAbsent(in: tree))
        #expect(try c.fileRevisions([signed.id]) == [signed.id])

        // No source: a read fails (EIO above), never with other bytes.
        let root = try a.revision(signed.id).metadata.content
        #expect(throws: StoreError.self) { try c.readContent(root) }
        // A source that copies from `a`, counting what it is asked.
        let asked = Mutex<[ChunkID]>([])
        c.setContentSource { ids in
            asked.withLock { $0 += ids }
            return ids.compactMap { id in try? c.receiveChunk(id: id, sealed: try a.sealedChunk(id)!) }
        }
        #expect(try c.readContent(root) == bytes)
        // Asked once per chunk by the node's fetcher; this source has none, so the read and its readahead may both
        // ask for one chunk (DemandFetcherTests covers the one fetch per chunk).
        #expect(Set(asked.withLock { $0 }) == Set(entry.chunks), "each absent chunk is fetched")
        let asks = asked.withLock { $0.count }
        #expect(try c.missingChunks(entry.chunks).isEmpty, "fetched chunks are held")
        #expect(!(try c.hasAbsent(in: tree)))
        #expect(try c.readContent(root) == bytes)
        #expect(asked.withLock { $0.count } == asks, "held content is not fetched again")
        #expect(Set(try c.log(tree: tree, after: 0, limit: 10)[0].chunks) == Set(entry.chunks))
    }

    @Test func keptContentIsFetchedOutsideTheCacheAndJoinsItAgainOnceNoLongerKept() throws {
        let (a, c) = (try temporaryStore("partial"), try temporaryStore("partial"))
        defer { replication.remove(a, c) }
        let bytes = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ $0 >> 7) }
        let entry = try replication.commit(bytes, on: a)
        let signed = try SignedRevision(record: entry.record)
        let remote = RemoteRevision(
            signed: signed, tree: a.keyring.identity.publicKey, chunks: entry.chunks, onDemand: true)
        _ = try c.storeRemote([remote], chunks: [])
        c.setContentSource { ids in ids.compactMap { id in try? c.receiveChunk(id: id, sealed: try a.sealedChunk(id)!) }
        }
        try c.setCacheBound(1 << 30)
        let metadata = try a.revision(signed.id).metadata
        let size = UInt64(bytes.count)
        #expect(c.heldBytes(of: metadata) == (0, size), "nothing held before a fetch")

        var found = KeptObjects()
        try c.keptObjects(of: metadata, fetching: true, into: &found)
        #expect(found.ids == Set(entry.chunks) && found.fetchedIDs == found.ids && found.missing == 0)
        #expect(c.heldBytes(of: metadata) == (size, size))
        #expect(try c.settleKept(found) == found.fetched)
        #expect(c.cacheUse?.bytes == 0, "kept content is not in the cache")
        #expect(c.cacheStatus(served: 0).misses == 0 && c.cacheStatus(served: 0).keptBytes == found.fetched)

        try c.settleKept(KeptObjects())  // no longer kept: evictable again, not deleted
        #expect(c.cacheUse?.bytes == found.fetched)
        #expect(try c.missingChunks(entry.chunks).isEmpty)
        #expect(try c.readContent(metadata.content) == bytes)
    }

    @Test func aPinsContentModeIsRecordedAndDecidesHowItsTreeIsHeld() throws {
        let c = try temporaryStore("partial")
        defer { replication.remove(c) }
        let other = SigningKeyPair.generate().publicKey
        #expect(c.content(of: c.keyring.identity.publicKey) == .all)
        #expect(c.content(of: other) == nil, "neither pinned nor a contact: not followed")
        try c.setPinned("*", true, content: .onDemand)
        #expect(c.content(of: other) == .onDemand)
        try c.setPinned("*", true)
        #expect(try c.pinnedContent() == ["*": .all], "pinning again changes the mode")
        #expect(c.content(of: other) == .all)
    }
}
