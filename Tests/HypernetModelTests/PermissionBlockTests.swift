import HypernetCrypto
import HypernetModel
import Testing

@Suite struct PermissionBlockTests {
    struct Person {
        let signing = SigningKeyPair.generate()
        let box = BoxKeyPair.generate()
        var token: IdentityToken { IdentityToken(signing: signing.publicKey, box: box.publicKey) }
        func member(_ roles: Roles) -> PermissionBlock.Member { .init(identity: token, roles: roles) }
    }

    static let alice = Person()
    static let bob = Person()
    static let carol = Person()
    static let document = DocumentID.random()

    static func genesis(key: SecureBytes = .random(count: 32)) -> SignedPermissionBlock {
        .make(
            document: document, after: nil, members: [alice.member(.all), bob.member(.read)], isPublic: false,
            signer: alice.signing, epochKey: key)
    }

    @Test func aBlockRoundTripsAndEachReaderOpensTheEpochKey() throws {
        let key = SecureBytes.random(count: 32)
        let block = Self.genesis(key: key)
        let decoded = try SignedPermissionBlock(record: block.record)
        #expect(decoded == block)
        #expect(decoded.epochKey(for: Self.bob.signing.publicKey, box: Self.bob.box)?.isEqual(to: key) == true)
        #expect(decoded.epochKey(for: Self.alice.signing.publicKey, box: Self.alice.box)?.isEqual(to: key) == true)
        // Carol is no member: nothing is sealed to her, and bob's box does not open for her key.
        #expect(decoded.epochKey(for: Self.carol.signing.publicKey, box: Self.carol.box) == nil)
        #expect(decoded.epochKey(for: Self.bob.signing.publicKey, box: Self.carol.box) == nil)
        #expect(decoded.block.roles(of: Self.bob.signing.publicKey) == .read)
        #expect(!decoded.block.allows(Self.bob.signing.publicKey, .file))
        #expect(decoded.block.allows(Self.alice.signing.publicKey, .tombstone))
    }

    @Test func aLaterEpochPassesTheKeysBeforeItToItsReaders() throws {
        let (key0, key1) = (SecureBytes.random(count: 32), SecureBytes.random(count: 32))
        let first = Self.genesis(key: key0)
        let second = try SignedPermissionBlock(
            record: SignedPermissionBlock.make(
                document: Self.document, after: first, members: [Self.alice.member(.all), Self.carol.member(.read)],
                isPublic: false, signer: Self.alice.signing, previousKey: key0, epochKey: key1
            ).record)
        // Carol, added in epoch 1, opens epoch 0's key through it; nobody opens it without epoch 1's key.
        let opened = try #require(second.epochKey(for: Self.carol.signing.publicKey, box: Self.carol.box))
        #expect(second.previousEpochKey(epochKey: opened)?.isEqual(to: key0) == true)
        #expect(second.previousEpochKey(epochKey: key0) == nil)
        #expect(first.previousEpochKey(epochKey: key0) == nil)
        // A public block passes nothing on: it would publish the private epochs.
        let published = SignedPermissionBlock.make(
            document: Self.document, after: first, members: [Self.alice.member(.all)], isPublic: true,
            signer: Self.alice.signing, previousKey: key0)
        #expect(published.previousEpochKey(epochKey: PermissionBlock.publicEpochKey) == nil)
        // A block of version 0x10 (before the previous key and the time existed) still decodes, without them.
        var body = Array(first.record.dropLast(SigningKeyPair.signatureByteCount))
        body[0] = PermissionBlock.formatVersion
        body.removeSubrange((body.count - 44)..<(body.count - 32))
        let legacy = try SignedPermissionBlock(record: body + Self.alice.signing.signature(for: body))
        #expect(legacy.block.sealedPreviousKey == nil && legacy.block.members == first.block.members)
        #expect(legacy.block.body == body)
    }

    @Test func aBlockRefusesOnlyWhatAnAuthorItRemovesWroteAfterIt() throws {
        let first = Self.genesis()
        let made = HLCTime(milliseconds: 1_000, counter: 0)
        let revoke = try SignedPermissionBlock(
            record: SignedPermissionBlock.make(
                document: Self.document, after: first, members: [Self.alice.member(.all), Self.bob.member(.read)],
                isPublic: false, signer: Self.alice.signing, time: made
            ).record)
        #expect(revoke.block.time == made)
        func revision(by author: Person, at milliseconds: UInt64, epoch: UInt32 = 0) -> Revision {
            Revision(
                document: .random(), kind: .file, epoch: epoch, rights: Self.document,
                time: HLCTime(milliseconds: milliseconds, counter: 0), author: author.signing.publicKey, parents: [],
                sealedMetadata: [])
        }
        #expect(revoke.block.refuses(revision(by: Self.bob, at: 1_001)))
        #expect(!revoke.block.refuses(revision(by: Self.bob, at: 999)))  // made before the revoke
        #expect(!revoke.block.refuses(revision(by: Self.alice, at: 1_001)))  // still a writer
        #expect(!revoke.block.refuses(revision(by: Self.bob, at: 1_001, epoch: 1)))  // judged on receipt instead
        let untimed = SignedPermissionBlock.make(
            document: Self.document, after: first, members: [Self.alice.member(.all)], isPublic: false,
            signer: Self.alice.signing)
        #expect(!untimed.block.refuses(revision(by: Self.bob, at: 1_001)))  // a block without a time
    }

    @Test func anyChangedByteBreaksTheSignature() throws {
        let record = Self.genesis().record
        // Every byte: roles, members, sealed keys and the signer are all covered.
        for i in stride(from: 0, to: record.count, by: 7) {
            var forged = record
            forged[i] ^= 0x01
            #expect(throws: DecodingError.self) { try SignedPermissionBlock(record: forged) }
        }
    }

    @Test func theChainAcceptsOnlyTheNextBlockSignedByAnAdminOfThePrevious() throws {
        var chain = PermissionChain(document: Self.document, creator: Self.alice.signing.publicKey)
        let first = Self.genesis()
        try chain.append(first)
        // Bob (read only) cannot sign the next epoch.
        let byBob = SignedPermissionBlock.make(
            document: Self.document, after: first, members: [Self.bob.member(.all)], isPublic: false,
            signer: Self.bob.signing)
        #expect(throws: PermissionChainError.signerNotAdmin) { try chain.append(byBob) }
        // Alice revokes bob: epoch 1.
        let revoke = SignedPermissionBlock.make(
            document: Self.document, after: first, members: [Self.alice.member(.all)], isPublic: false,
            signer: Self.alice.signing)
        try chain.append(revoke)
        #expect(chain.current?.block.epoch == 1)
        #expect(chain.current?.epochKey(for: Self.bob.signing.publicKey, box: Self.bob.box) == nil)
        // Replaying the old block, or a second block after the first, is refused: epochs only move forward.
        #expect(throws: PermissionChainError.notNext(expected: 2, got: 0)) { try chain.append(first) }
        let fork = SignedPermissionBlock.make(
            document: Self.document, after: first, members: [Self.alice.member(.all), Self.bob.member(.all)],
            isPublic: false,
            signer: Self.alice.signing)
        #expect(throws: PermissionChainError.notNext(expected: 2, got: 1)) { try chain.append(fork) }
        let unlinked = SignedPermissionBlock.make(
            document: Self.document, after: fork, members: [Self.alice.member(.all)], isPublic: false,
            signer: Self.alice.signing)
        #expect(throws: PermissionChainError.wrongPrevious) { try chain.append(unlinked) }
    }

    @Test func theFirstBlockIsTheCreatorsAndNamesTheCreatorAdmin() {
        var chain = PermissionChain(document: Self.document, creator: Self.alice.signing.publicKey)
        let byBob = SignedPermissionBlock.make(
            document: Self.document, after: nil, members: [Self.bob.member(.all)], isPublic: false,
            signer: Self.bob.signing)
        #expect(throws: PermissionChainError.signerNotAdmin) { try chain.append(byBob) }
        let other = SignedPermissionBlock.make(
            document: .random(), after: nil, members: [Self.alice.member(.all)], isPublic: false,
            signer: Self.alice.signing)
        #expect(throws: PermissionChainError.otherDocument) { try chain.append(other) }
    }

    @Test func aPublicBlockSealsNoKey() throws {
        let block = SignedPermissionBlock.make(
            document: Self.document, after: nil, members: [Self.alice.member(.all)], isPublic: true,
            signer: Self.alice.signing)
        let decoded = try SignedPermissionBlock(record: block.record)
        #expect(decoded.block.isPublic)
        #expect(decoded.block.sealedKeys.isEmpty)
    }

    @Test func rolesParseAndPrint() {
        #expect(Roles(parsing: "read,write") == [.read, .write])
        #expect(Roles(parsing: "admin delete") == [.admin, .delete])
        #expect(Roles(parsing: "read,owner") == nil)
        #expect(Roles(parsing: "") == nil)
        #expect(Roles.all.description == "read,write,delete,admin")
    }
}
