import HypernetCrypto
import HypernetModel
import Testing

@Suite struct RevisionTests {
    let key = SigningKeyPair.generate()

    func sample(parents: [RevisionID] = [], time: UInt64 = 1) -> Revision {
        Revision(
            document: DocumentID.random(), kind: .file, epoch: 0, time: HLCTime(rawValue: time), author: key.publicKey,
            parents: parents, sealedMetadata: [1, 2, 3])
    }

    @Test func signedRecordRoundTripsAndVerifies() throws {
        let signed = sample(parents: [BLAKE2b.hash([9])]).signed(by: key)
        let decoded = try SignedRevision(record: signed.record)
        #expect(decoded == signed)
        #expect(decoded.id == signed.id)
    }

    @Test func anyFlippedBitIsRejected() throws {
        let record = sample().signed(by: key).record
        for i in stride(from: 0, to: record.count, by: 7) {
            var bad = record
            bad[i] ^= 0x10
            #expect(throws: DecodingError.self) { try SignedRevision(record: bad) }
        }
    }

    @Test func truncatedRecordsAreRejectedAtEveryLength() {
        let record = sample().signed(by: key).record
        for n in 0..<record.count {
            #expect(throws: DecodingError.self) { try SignedRevision(record: Array(record[..<n])) }
        }
    }

    @Test func unknownVersionIsRefused() {
        var record = sample().signed(by: key).record
        record[0] = 99
        #expect(throws: DecodingError.self) { try SignedRevision(record: record) }
    }

    @Test func metadataSealsToItsDocumentOnly() throws {
        let epochKey = SecureBytes.random(count: 32)
        let doc = DocumentID.random()
        let m = RevisionMetadata(
            mode: 0o100644, uid: 1, gid: 2, mtimeSeconds: 3, mtimeNanoseconds: 4, ctimeSeconds: 5, ctimeNanoseconds: 6,
            size: 7, quorum: 2, xattrs: [.init(name: "user.a", value: [1])],
            content: ManifestReference(
                node: ChunkReference(id: BLAKE2b.hash([1]), key: BLAKE2b.hash([2]), length: 7), level: 0),
            symlinkTarget: [])
        let sealed = m.sealed(epochKey: epochKey, document: doc)
        #expect(try RevisionMetadata(unsealing: sealed, epochKey: epochKey, document: doc) == m)
        #expect(throws: DecodingError.self) {
            try RevisionMetadata(unsealing: sealed, epochKey: epochKey, document: DocumentID.random())
        }
        #expect(throws: DecodingError.self) {
            try RevisionMetadata(unsealing: sealed, epochKey: SecureBytes.random(count: 32), document: doc)
        }
    }

    @Test func manifestNodeAndListingRoundTrip() throws {
        let node = ManifestNode(
            level: 0,
            children: (0..<5).map { ChunkReference(id: BLAKE2b.hash([$0]), key: BLAKE2b.hash([$0, 1]), length: 10) })
        #expect(try ManifestNode(decoding: node.encoded()) == node)
        #expect(throws: DecodingError.self) { try ManifestNode(decoding: Array(node.encoded().dropLast())) }
        let listing = DirectoryListing(entries: [
            .init(name: "b", document: DocumentID.random(), kind: .file),
            .init(name: "a", document: DocumentID.random(), kind: .directory),
        ])
        #expect(listing.entries.map(\.name) == ["a", "b"])
        #expect(try DirectoryListing(decoding: listing.encoded()) == listing)
    }
}

@Suite struct ClockAndGraphTests {
    @Test func clockNeverGoesBackwards() {
        var clock = HybridLogicalClock()
        let a = clock.now(wallMilliseconds: 1000)
        let b = clock.now(wallMilliseconds: 999)
        let c = clock.now(wallMilliseconds: 1000)
        #expect(a < b && b < c)
        clock.observe(HLCTime(milliseconds: 5000, counter: 3))
        #expect(clock.now(wallMilliseconds: 1001) > HLCTime(milliseconds: 5000, counter: 3))
        #expect(clock.now(wallMilliseconds: 6000) == HLCTime(milliseconds: 6000, counter: 0))
    }

    @Test func forkHasTwoHeadsAndADeterministicWinner() {
        let root = BLAKE2b.hash([0])
        let left = BLAKE2b.hash([1])
        let right = BLAKE2b.hash([2])
        let nodes = [
            RevisionGraph.Node(id: root, parents: [], time: HLCTime(rawValue: 1)),
            RevisionGraph.Node(id: left, parents: [root], time: HLCTime(rawValue: 5)),
            RevisionGraph.Node(id: right, parents: [root], time: HLCTime(rawValue: 4)),
        ]
        let g1 = RevisionGraph(nodes)
        let g2 = RevisionGraph(nodes.reversed())
        #expect(g1.heads == [left, right].sorted())
        #expect(g1.winner == left && g2.winner == left)
        var merged = g1
        let merge = BLAKE2b.hash([3])
        merged.insert(.init(id: merge, parents: [left, right], time: HLCTime(rawValue: 6)))
        #expect(merged.heads == [merge])
    }
}
