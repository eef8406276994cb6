import Glibc
import HypernetCrypto
import HypernetModel
import HypernetStore
import Logging
import Testing

/// Permission blocks in the store: chained on receipt, replicated in log order, and the rights every
/// received revision is checked against (docs/security.md, "Rights").
@Suite struct RightsStoreTests {
    let alice: Store
    let bob: Store
    let storage: Store
    let document = DocumentID.random()
    var tree: SigningPublicKey { alice.keyring.identity.publicKey }

    init() throws {
        (alice, bob, storage) = (
            try temporaryStore("rights"), try temporaryStore("rights"), try temporaryStore("rights")
        )
    }

    static let metadata = RevisionMetadata(
        mode: 0o100644, uid: 0, gid: 0, mtimeSeconds: 0, mtimeNanoseconds: 0, ctimeSeconds: 0, ctimeNanoseconds: 0,
        size: 0, quorum: 0, xattrs: [], content: nil, symlinkTarget: [])

    func removeStores() { for s in [alice, bob, storage] { removeTemporaryStore(s) } }

    func member(_ store: Store, _ roles: Roles) -> PermissionBlock.Member {
        .init(identity: store.keyring.identityToken, roles: roles)
    }

    /// What `receiver` does with `entries` of alice's log, as replication hands them over (chunks included).
    func deliver(_ entries: [LogEntry], to receiver: Store) throws -> [(Digest, Rejection)] {
        let records = try remoteRecords(entries, tree: tree)
        let chunks = try entries.flatMap(\.chunks).map {
            try receiver.receiveChunk(id: $0, sealed: try alice.sealedChunk($0)!)
        }
        return try receiver.storeRemote(records: records, chunks: chunks)
    }

    func aliceLog(after seq: Int64 = 0) throws -> [LogEntry] { try alice.log(tree: tree, after: seq, limit: 1000) }

    /// A revision of the shared document by `author`, sealed with the key it holds for `epoch`.
    func revision(by author: Store, epoch: UInt32, key: SecureBytes, parents: [RevisionID]) -> SignedRevision {
        let metadata = Self.metadata
        return Revision(
            document: document, kind: .file, epoch: epoch, rights: document, time: HLCTime(rawValue: 1 << 40),
            author: author.keyring.identity.publicKey, parents: parents,
            sealedMetadata: metadata.sealed(epochKey: key, document: document)
        ).signed(by: author.keyring.identity)
    }

    func remote(_ signed: SignedRevision) -> RemoteRecord {
        .revision(RemoteRevision(signed: signed, tree: tree, chunks: []))
    }

    @Test func blocksTravelInLogOrderAndRevisionsNeedTheirAuthorsRights() throws {
        defer { removeStores() }
        let first = try alice.changeRights(
            of: document, members: [member(alice, .all), member(bob, [.read, .write])], isPublic: false)
        let head = try alice.transaction { tx in
            _ = try tx.insertDocument(
                id: document, kind: .file, metadata: Self.metadata, dirty: false, rights: document)
            return try tx.appendRevision(document: document, kind: .file, metadata: Self.metadata, parents: [])
        }
        let log = try aliceLog()
        #expect(
            log.map { BLAKE2b.hash($0.record) } == [first.id, head],
            "the block comes before the revision written under it")
        #expect(try SignedRevision(record: log[1].record).revision.rights == document)

        for receiver in [storage, bob] { #expect(try deliver(log, to: receiver).isEmpty) }
        #expect(
            try storage.log(tree: tree, after: 0, limit: 10).map(\.record) == log.map(\.record),
            "a relay serves the same log")
        let key = try #require(bob.epochKey(tree: tree, rights: document, epoch: 0), "a reader opens the epoch key")
        #expect(key.isEqual(to: try #require(alice.epochKey(tree: tree, rights: document, epoch: 0))))
        #expect(storage.epochKey(tree: tree, rights: document, epoch: 0) == nil, "a storage node holds no key")
        #expect(throws: StoreError.self, "a storage node cannot open the metadata") { try storage.revision(head) }
        #expect(try bob.revision(head).revision.rights == document, "a reader can")

        let bobs = revision(by: bob, epoch: 0, key: key, parents: [head])
        #expect(try storage.storeRemote(records: [remote(bobs)], chunks: []).isEmpty, "a writer's revision is stored")
        let stranger = revision(by: storage, epoch: 0, key: key, parents: [bobs.id])
        #expect(try storage.storeRemote(records: [remote(stranger)], chunks: []).map(\.1) == [.notAuthorized])

        // Revoke bob: a new epoch whose key is not sealed to him.
        let second = try alice.changeRights(of: document, members: [member(alice, .all)], isPublic: false)
        for receiver in [storage, bob] {
            #expect(try deliver(try aliceLog(after: log.last!.seq), to: receiver).isEmpty)
        }
        #expect(
            bob.epochKey(tree: tree, rights: document, epoch: 1) == nil, "the new key is not sealed to a removed member"
        )
        #expect(
            alice.epochKey(tree: tree, rights: document, epoch: 1).map { !$0.isEqual(to: key) } == true, "a fresh key")

        // Bob, removed, back-dates into the epoch he was a writer of: refused.
        let backdated = revision(by: bob, epoch: 0, key: key, parents: [bobs.id])
        #expect(try storage.storeRemote(records: [remote(backdated)], chunks: []).map(\.1) == [.notAuthorized])

        // Replays and forgeries of blocks.
        #expect(
            try storage.storeRemote(records: [.block(first, tree: tree)], chunks: []).isEmpty,
            "a block held already is no news")
        let forged = SignedPermissionBlock.make(
            document: document, after: second, members: [member(bob, .all)], isPublic: false,
            signer: bob.keyring.identity)
        #expect(
            try storage.storeRemote(records: [.block(forged, tree: tree)], chunks: []).map(\.1) == [
                .badBlock(.signerNotAdmin)
            ])
        let fork = SignedPermissionBlock.make(
            document: document, after: first, members: [member(alice, .all), member(bob, .all)], isPublic: false,
            signer: alice.keyring.identity)
        #expect(
            try storage.storeRemote(records: [.block(fork, tree: tree)], chunks: []).map(\.1) == [
                .badBlock(.notNext(expected: 2, got: 1))
            ])
        #expect(try storage.chain(of: document, tree: tree).blocks.map(\.id) == [first.id, second.id])
    }

    @Test func aRevisionWaitsForTheBlockOfItsEpoch() throws {
        defer { removeStores() }
        let block = try alice.changeRights(
            of: document, members: [member(alice, .all), member(bob, [.read, .write])], isPublic: false)
        let key = try #require(alice.epochKey(tree: tree, rights: document, epoch: 0))
        let bobs = revision(by: bob, epoch: 0, key: key, parents: [])
        let early = try storage.storeRemote(records: [remote(bobs)], chunks: [])
        #expect(early.map(\.1) == [.missingBlock(document, 0)] && early[0].1.isTransient)
        #expect(try storage.storeRemote(records: [.block(block, tree: tree), remote(bobs)], chunks: []).isEmpty)
    }

    @Test func onlyTheOwnerWritesADocumentNoChainGoverns() throws {
        defer { removeStores() }
        let metadata = Self.metadata
        let bobs = Revision(
            document: document, kind: .file, epoch: 0, time: HLCTime(rawValue: 1 << 40),
            author: bob.keyring.identity.publicKey,
            parents: [], sealedMetadata: metadata.sealed(epochKey: bob.keyring.treeKey, document: document)
        ).signed(by: bob.keyring.identity)
        #expect(try storage.storeRemote(records: [remote(bobs)], chunks: []).map(\.1) == [.notAuthorized])
    }

    @Test func onlyAnAdminChangesRightsAndAChainKeepsOne() throws {
        defer { removeStores() }
        #expect(throws: StoreError.self, "no admin left") {
            try alice.changeRights(of: document, members: [member(alice, [.read, .write])], isPublic: false)
        }
        #expect(throws: StoreError.self, "the first block makes its creator an admin") {
            try alice.changeRights(of: document, members: [member(alice, .read), member(bob, .all)], isPublic: false)
        }
        _ = try alice.changeRights(of: document, members: [member(alice, .all), member(bob, .all)], isPublic: false)
        _ = try alice.changeRights(
            of: document, members: [member(alice, [.read, .write, .delete]), member(bob, .all)], isPublic: false)
        #expect(throws: StoreError.self, "alice handed admin to bob") {
            try alice.changeRights(of: document, members: [member(alice, .all)], isPublic: false)
        }
        #expect(try alice.chain(of: document, tree: tree).blocks.count == 2)
    }

    /// Issue 14, item 4: a block that would leave a writer unable to write is refused whole, nothing stored.
    @Test func aWriterMustReadAndTheTreesOwnerKeepsWritingItsTree() throws {
        defer { removeStores() }
        func refusal(_ members: [PermissionBlock.Member], isPublic: Bool = false) -> RightsError? {
            do throws(StoreError) {
                _ = try alice.changeRights(of: document, members: members, isPublic: isPublic)
            } catch {
                if case .rights(let why) = error { return why }
            }
            return nil
        }
        #expect(refusal([member(alice, .all), member(bob, .write)]) == .unreadable)
        #expect(refusal([member(alice, .all), member(bob, [.delete, .admin])]) == .unreadable)
        #expect(refusal([member(alice, [.write, .delete, .admin])]) == .unreadable, "alice revoking her own read")
        #expect(refusal([member(alice, [.read, .delete, .admin])]) == .ownerKeeps, "alice revoking her own write")
        #expect(refusal([member(alice, [.read, .write]), member(bob, .all)]) == .ownerKeeps)
        #expect(try alice.chain(of: document, tree: tree).blocks.isEmpty)
        // A public epoch's key is everyone's: a member may write there without a read of its own.
        #expect(refusal([member(alice, .all), member(bob, .write)], isPublic: true) == nil)
        #expect(refusal([member(alice, .all), member(bob, .write)]) == .unreadable, "made private again")
        #expect(try alice.chain(of: document, tree: tree).blocks.count == 1)
    }

    /// A block another admin signed (a node without the check above) takes write from the tree's owner: the
    /// owner's next revision would be refused by every node, so it is refused where it is made, nothing stored.
    @Test func aRevisionNoNodeWouldStoreIsRefusedWhereItIsMade() throws {
        defer { removeStores() }
        let first = try alice.changeRights(
            of: document, members: [member(alice, .all), member(bob, .all)], isPublic: false)
        let head = try alice.transaction { tx in
            _ = try tx.insertDocument(
                id: document, kind: .file, metadata: Self.metadata, dirty: false, rights: document)
            return try tx.appendRevision(document: document, kind: .file, metadata: Self.metadata, parents: [])
        }
        let second = SignedPermissionBlock.make(
            document: document, after: first, members: [member(alice, [.read, .admin]), member(bob, .all)],
            isPublic: false, signer: bob.keyring.identity)
        #expect(try alice.storeRemote(records: [.block(second, tree: tree)], chunks: []).isEmpty)
        var refusal: RightsError?
        do throws(StoreError) {
            _ = try alice.transaction { tx in
                try tx.appendRevision(document: document, kind: .file, metadata: Self.metadata, parents: [head])
            }
        } catch {
            if case .rights(let why) = error { refusal = why }
        }
        #expect(refusal == .notAllowed)
        #expect(try aliceLog().count == 3, "a block, a revision, the second block: nothing more")
    }

    @Test func aPublicEpochsContentIsStoredInTheClearAndCheckedAgainstItsIds() throws {
        defer { removeStores() }
        let bytes = (0..<200_000).map { _ in UInt8.random(in: 0...255) }
        let written = try alice.writeContent(bytes, key: PermissionBlock.publicEpochKey)
        try alice.transaction { tx in try tx.recordChunks(written.locations) }
        #expect(try alice.readContent(written.root) == bytes)
        var offset = 0
        for chunk in try alice.loadManifest(written.root).chunks {
            let stored = try #require(try alice.sealedChunk(chunk.id))
            #expect(
                stored.first == 0 && Array(stored.dropFirst()) == Array(bytes[offset..<offset + Int(chunk.length)]),
                "a public chunk is its frame, in the clear")
            offset += Int(chunk.length)
        }
        // A flipped byte is caught by the id, since no AEAD tag checks it.
        let location = try #require(written.locations.first)
        let pack = open(
            alice.home.packsDirectory + "/" + String(repeating: "0", count: 7) + "\(location.pack).pack", O_RDWR)
        #expect(pack >= 0)
        var byte: UInt8 = 0
        _ = pread(pack, &byte, 1, off_t(location.offset + 36 + 10))
        byte ^= 1
        _ = pwrite(pack, &byte, 1, off_t(location.offset + 36 + 10))
        close(pack)
        let reopened = try Store(home: alice.home, keyring: alice.keyring, logger: Logger(label: "test"))
        #expect(throws: StoreError.self) { try reopened.readContent(written.root) }
    }

    /// The byte-level form of "revisions after a revoke are unreadable to the removed member": bob's node
    /// stores all of it, and neither the metadata nor any chunk opens with a key bob holds, even for one who
    /// guesses the plaintext (the convergent key under his old epoch key is not the chunk's).
    @Test func afterARevokeNothingNewOpensWithAnyKeyTheRemovedMemberHolds() throws {
        defer { removeStores() }
        _ = try alice.changeRights(of: document, members: [member(alice, .all), member(bob, .read)], isPublic: false)
        #expect(try deliver(aliceLog(), to: bob).isEmpty)
        let seen = try aliceLog().last!.seq
        let old = try #require(bob.epochKey(tree: tree, rights: document, epoch: 0))
        _ = try alice.changeRights(of: document, members: [member(alice, .all)], isPublic: false)
        let secret = (0..<150_000).map { _ in UInt8.random(in: 0...255) }
        let sealing = try alice.sealing(tree: tree, rights: document)
        #expect(sealing.epoch == 1)
        let written = try alice.writeContent(secret, key: sealing.key)
        var metadata = Self.metadata
        metadata.content = written.root
        metadata.size = UInt64(secret.count)
        let id = try alice.transaction { tx in
            _ = try tx.insertDocument(id: document, kind: .file, metadata: metadata, dirty: false, rights: document)
            try tx.recordChunks(written.locations)
            return try tx.appendRevision(document: document, kind: .file, metadata: metadata, parents: [])
        }
        #expect(try deliver(aliceLog(after: seen), to: bob).isEmpty)
        #expect(bob.epochKey(tree: tree, rights: document, epoch: 1) == nil)

        let record = try #require(
            try aliceLog().first { BLAKE2b.hash($0.record) == id }, "alice's log lists the new revision")
        let revision = try SignedRevision(record: record.record).revision
        let chunks = try alice.loadManifest(written.root).chunks
        var offset = 0
        for reference in chunks {
            let stored = try #require(
                try bob.sealedChunk(reference.id), "bob's node stores every chunk of the new revision")
            let plaintext = Array(secret[offset..<offset + Int(reference.length)])
            offset += Int(reference.length)
            func opens(_ key: Digest) -> Bool {
                (try? key.withUnsafeBytes { k in
                    try stored.withUnsafeBytes { c in
                        try [UInt8](repeating: 0, count: 24).withUnsafeBytes { n in try AEAD.open(c, key: k, nonce: n) }
                    }
                }) != nil
            }
            #expect(opens(reference.key), "the chunk opens with the key its reference carries")
            for key in [old, bob.keyring.treeKey] {
                // The convergent key the spec derives (v2), and the one older versions derived (v1).
                let derived = Array("hypernet chunk v2".utf8).withUnsafeBytes { c in
                    plaintext.withUnsafeBytes { p in HMACSHA256.mac(key: key, [c, p]) }
                }
                var hasher = BLAKE2b.Hasher(key: key)
                hasher.update(Array("hypernet chunk v1".utf8))
                hasher.update(plaintext)
                #expect(
                    !opens(derived) && !opens(hasher.finalize()),
                    "a key bob holds opens a chunk written after his removal")
            }
        }
        for key in [old, bob.keyring.treeKey] {
            #expect(throws: DecodingError.self, "a key bob holds opens the metadata of a revision after his removal") {
                try RevisionMetadata(unsealing: revision.sealedMetadata, epochKey: key, document: document)
            }
        }
        #expect(throws: StoreError.self, "bob's node opens the revision") { try bob.revision(id) }
    }
}
