import HypernetCrypto

/// What a member may do with a document (docs/security.md, "Rights").
public struct Roles: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let read = Roles(rawValue: 1)
    public static let write = Roles(rawValue: 2)
    public static let delete = Roles(rawValue: 4)
    public static let admin = Roles(rawValue: 8)
    public static let all: Roles = [.read, .write, .delete, .admin]

    static let names: [(Roles, String)] = [(.read, "read"), (.write, "write"), (.delete, "delete"), (.admin, "admin")]

    /// `read,write`; the empty set is `none`.
    public var description: String {
        let parts = Self.names.filter { contains($0.0) }.map(\.1)
        return parts.isEmpty ? "none" : parts.joined(separator: ",")
    }

    /// Parses `read,write` (also space-separated); nil for an unknown role or an empty list.
    public init?(parsing text: String) {
        var roles: Roles = []
        for word in text.split(whereSeparator: { $0 == "," || $0 == " " }) {
            guard let role = Self.names.first(where: { $0.1 == word })?.0 else { return nil }
            roles.insert(role)
        }
        guard !roles.isEmpty else { return nil }
        self = roles
    }
}

/// One epoch of a document's rights: its members and their roles, the epoch's read key sealed to every
/// reader's box key, chained to the block before by hash, and signed by an admin of that block (the first
/// block by the document's creator). The signature covers the sealed keys too: a sealed box does not
/// authenticate its sender, so without it anyone could hand a reader a key of their choosing.
///
///     version u8 = 0x11 (0x10: neither previous key nor time) | document 16 | epoch u32
///     | previous 32 (zero bytes in epoch 0) | public u8 (0/1)
///     | member count u32 | members (signing 32 | box 32 | roles u8), strictly increasing by signing key
///     | sealed key count u32 | (reader signing key 32 | crypto_box_seal(epoch key) 80), same order
///     | label length u32 (0...4096) | sealed label
///     | previous key length u32 (0 or 72) | sealed previous key | time u64 (HLC) (these three: version 0x11)
///     | signer 32 | Ed25519 signature 64 over everything before it
///
/// The previous key is the epoch key of the block before, sealed under this block's epoch key (`EpochSeal`,
/// context "hypernet previous epoch key v1", associated data document || epoch u32): a reader of this epoch
/// opens every earlier epoch's key through it, so a member added later reads what was written before
/// (docs/security.md, "Rights"). Empty in epoch 0, in a public block (it would publish the private history),
/// and when the signer holds no key of the epoch before. The time is the signer's clock when it made the block:
/// a node that learns the block refuses the revisions it already stored that the block makes invalid, those
/// written after it (`refuses`). Version 0x10 blocks, written before these fields existed, lack them.
/// The label is the document's name as its admin shared it, for readers to show it by (`/@NAME/`), sealed under
/// the epoch key (`EpochSeal`, context "hypernet label key v1", associated data document || epoch u32); empty
/// for none. A public block (`*` has read) carries no sealed keys: its epoch key is `publicEpochKey`, so anyone
/// opens its content.
public struct PermissionBlock: Sendable, Equatable {
    /// Also the tag that tells a block from a revision (versions 1, 2) in a tree's log.
    public static let formatVersion: UInt8 = 0x10
    /// Also a block's tag in a log: a block with the sealed previous epoch key and its time.
    public static let chainedFormatVersion: UInt8 = 0x11
    public static let epochKeyByteCount = 32
    static let sealedKeyByteCount = 32 + 48
    static let maximumMembers = 1 << 16
    static let maximumLabel = 4096
    static let labelContext = Array("hypernet label key v1".utf8)
    static let previousKeyContext = Array("hypernet previous epoch key v1".utf8)
    static let sealedPreviousKeyByteCount = 24 + epochKeyByteCount + 16
    /// The epoch key of a public block: known to everyone (docs/security.md, "Rights").
    public static let publicEpochKey = SecureBytes([UInt8](repeating: 0, count: epochKeyByteCount))

    public struct Member: Sendable, Equatable {
        public var identity: IdentityToken
        public var roles: Roles
        public init(identity: IdentityToken, roles: Roles) {
            self.identity = identity
            self.roles = roles
        }
    }

    public var document: DocumentID
    public var epoch: UInt32
    /// The id of the block this one follows; nil for epoch 0.
    public var previous: BlockID?
    public var isPublic: Bool
    /// Sorted by signing key bytes, one entry per identity.
    public var members: [Member]
    /// The epoch key sealed to each member holding `read`, keyed by signing key; empty when public.
    public var sealedKeys: [SigningPublicKey: [UInt8]]
    /// The label sealed under the epoch key; empty for none.
    public var sealedLabel: [UInt8]
    /// The previous epoch's key sealed under this one's; empty for none, nil in a block of version 0x10.
    public var sealedPreviousKey: [UInt8]?
    /// When it was made (HLC); zero in a block of version 0x10.
    public var time: HLCTime
    public var signer: SigningPublicKey

    public func roles(of identity: SigningPublicKey) -> Roles {
        members.first { $0.identity.signing == identity }?.roles ?? []
    }

    /// Whether `author` may make a revision of `kind` in this epoch: `delete` for a tombstone, else `write`.
    public func allows(_ author: SigningPublicKey, _ kind: RevisionKind) -> Bool {
        roles(of: author).contains(kind == .tombstone ? .delete : .write)
    }

    /// Whether this block makes `revision`, of an earlier epoch of its chain, invalid: its author lacks the
    /// right here and wrote it after the block was made (an edit made offline after a revoke). One made before
    /// stays (docs/security.md, "Rights"); so does everything under a block without a time (version 0x10).
    public func refuses(_ revision: Revision) -> Bool {
        revision.epoch < epoch && time.rawValue != 0 && revision.time > time && !allows(revision.author, revision.kind)
    }
}

public typealias BlockID = Digest

/// A block with its exact signed bytes; `id` is their BLAKE2b-256.
public struct SignedPermissionBlock: Sendable, Equatable {
    public let block: PermissionBlock
    public let record: [UInt8]
    public var id: BlockID { BLAKE2b.hash(record) }

    /// Makes and signs a block: a fresh epoch key sealed to every reader (none when public), and `previousKey`
    /// (the key of `previous`, when the signer holds it) sealed under it. `signer` must be an admin of `previous`
    /// (or, for epoch 0, the creator, who must be an admin member).
    public static func make(
        document: DocumentID, after previous: SignedPermissionBlock?, members: [PermissionBlock.Member], isPublic: Bool,
        label: String? = nil, signer: SigningKeyPair, previousKey: SecureBytes? = nil,
        time: HLCTime = .init(rawValue: 0),
        epochKey: SecureBytes = .random(count: PermissionBlock.epochKeyByteCount)
    ) -> SignedPermissionBlock {
        var sealed: [SigningPublicKey: [UInt8]] = [:]
        if !isPublic {
            for m in members where m.roles.contains(.read) {
                sealed[m.identity.signing] = m.identity.box.seal(epochKey.bytes)
            }
        }
        let epoch = previous.map { $0.block.epoch + 1 } ?? 0
        let labelBytes = label.map { Array($0.utf8.prefix(PermissionBlock.maximumLabel - 64)) } ?? []
        let sealedLabel =
            labelBytes.isEmpty
            ? []
            : EpochSeal.seal(
                labelBytes, epochKey: isPublic ? PermissionBlock.publicEpochKey : epochKey,
                context: PermissionBlock.labelContext,
                associatedData: PermissionBlock.labelData(document, epoch))
        var sealedPrevious: [UInt8] = []
        if let previousKey, previous != nil, !isPublic {
            sealedPrevious = EpochSeal.seal(
                previousKey.bytes, epochKey: epochKey, context: PermissionBlock.previousKeyContext,
                associatedData: PermissionBlock.labelData(document, epoch))
        }
        let block = PermissionBlock(
            document: document, epoch: epoch, previous: previous?.id, isPublic: isPublic,
            members: members.sorted { $0.identity.signing.bytes.lexicographicallyPrecedes($1.identity.signing.bytes) },
            sealedKeys: sealed, sealedLabel: sealedLabel, sealedPreviousKey: sealedPrevious, time: time,
            signer: signer.publicKey)
        let body = block.body
        return SignedPermissionBlock(block: block, record: body + signer.signature(for: body))
    }

    private init(block: PermissionBlock, record: [UInt8]) {
        self.block = block
        self.record = record
    }

    /// Decodes a record and checks its structure and signature (not yet its place in a chain: `PermissionChain`).
    public init(record: [UInt8]) throws(DecodingError) {
        let signatureCount = SigningKeyPair.signatureByteCount
        guard record.count > signatureCount else { throw .truncated("permission block") }
        let body = Array(record[..<(record.count - signatureCount)])
        var r = ByteReader(body, context: "permission block")
        let version = try r.u8()
        guard version == PermissionBlock.formatVersion || version == PermissionBlock.chainedFormatVersion else {
            throw .unsupportedVersion(Int(version))
        }
        let document = try DocumentID(bytes: r.raw(DocumentID.byteCount))
        let epoch = try r.u32()
        let previousBytes = try r.raw(32)
        let previous = previousBytes.allSatisfy { $0 == 0 } ? nil : try Self.digest(previousBytes)
        guard (epoch == 0) == (previous == nil) else {
            throw .invalid("permission block: previous block of epoch \(epoch)")
        }
        let publicFlag = try r.u8()
        guard publicFlag <= 1 else { throw .invalid("permission block public flag") }
        let memberCount = Int(try r.u32())
        guard (1...PermissionBlock.maximumMembers).contains(memberCount) else {
            throw .invalid("permission block member count")
        }
        var members: [PermissionBlock.Member] = []
        for _ in 0..<memberCount {
            let signing = try Self.signingKey(r.raw(SigningPublicKey.byteCount))
            let box: BoxPublicKey
            do { box = try BoxPublicKey(bytes: r.raw(BoxPublicKey.byteCount)) } catch {
                throw .invalid("member box key")
            }
            let roles = Roles(rawValue: try r.u8())
            guard !roles.isEmpty, Roles.all.isSuperset(of: roles) else { throw .invalid("member roles") }
            if let last = members.last, !last.identity.signing.bytes.lexicographicallyPrecedes(signing.bytes) {
                throw .invalid("permission block members out of order or repeated")
            }
            members.append(.init(identity: IdentityToken(signing: signing, box: box), roles: roles))
        }
        let readers = members.filter { $0.roles.contains(.read) }.map(\.identity.signing)
        let sealedCount = Int(try r.u32())
        guard sealedCount == (publicFlag == 1 ? 0 : readers.count) else {
            throw .invalid("permission block sealed key count")
        }
        var sealed: [SigningPublicKey: [UInt8]] = [:]
        for reader in readers.prefix(sealedCount) {
            guard try Self.signingKey(r.raw(SigningPublicKey.byteCount)) == reader else {
                throw .invalid("permission block sealed keys do not follow the readers")
            }
            sealed[reader] = try r.raw(PermissionBlock.sealedKeyByteCount)
        }
        let sealedLabel = try r.blob(limit: PermissionBlock.maximumLabel)
        var sealedPrevious: [UInt8]?
        var time = HLCTime(rawValue: 0)
        if version == PermissionBlock.chainedFormatVersion {
            let bytes = try r.blob(limit: PermissionBlock.sealedPreviousKeyByteCount)
            let expected = epoch > 0 && publicFlag == 0 ? PermissionBlock.sealedPreviousKeyByteCount : 0
            guard bytes.isEmpty || bytes.count == expected else { throw .invalid("permission block previous key") }
            sealedPrevious = bytes
            time = HLCTime(rawValue: try r.u64())
        }
        let signer = try Self.signingKey(r.raw(SigningPublicKey.byteCount))
        try r.expectEnd()
        guard signer.isValidSignature(Array(record[(record.count - signatureCount)...]), for: body) else {
            throw .invalid("permission block signature")
        }
        self.block = PermissionBlock(
            document: document, epoch: epoch, previous: previous, isPublic: publicFlag == 1, members: members,
            sealedKeys: sealed, sealedLabel: sealedLabel, sealedPreviousKey: sealedPrevious, time: time, signer: signer)
        self.record = record
    }

    /// The label, for a holder of the epoch key; nil when there is none or it does not open.
    public func label(epochKey: SecureBytes) -> String? {
        guard !block.sealedLabel.isEmpty,
            let bytes = EpochSeal.open(
                block.sealedLabel, epochKey: epochKey, context: PermissionBlock.labelContext,
                associatedData: PermissionBlock.labelData(block.document, block.epoch))
        else { return nil }
        return String(validating: bytes, as: UTF8.self)
    }

    /// The key of the epoch before, for a holder of this epoch's key; nil when the block carries none.
    public func previousEpochKey(epochKey: SecureBytes) -> SecureBytes? {
        guard let sealed = block.sealedPreviousKey, !sealed.isEmpty,
            let bytes = EpochSeal.open(
                sealed, epochKey: epochKey, context: PermissionBlock.previousKeyContext,
                associatedData: PermissionBlock.labelData(block.document, block.epoch)),
            bytes.count == PermissionBlock.epochKeyByteCount
        else { return nil }
        return SecureBytes(bytes)
    }

    /// The epoch key, for a reader holding `identity`'s box key; nil if it is not sealed to it (or public).
    public func epochKey(for signing: SigningPublicKey, box: BoxKeyPair) -> SecureBytes? {
        guard let sealed = block.sealedKeys[signing], let key = try? box.openSealed(sealed),
            key.count == PermissionBlock.epochKeyByteCount
        else { return nil }
        return SecureBytes(key)
    }

    private static func signingKey(_ bytes: [UInt8]) throws(DecodingError) -> SigningPublicKey {
        do { return try SigningPublicKey(bytes: bytes) } catch { throw .invalid("signing key") }
    }

    private static func digest(_ bytes: [UInt8]) throws(DecodingError) -> Digest {
        do { return try Digest(bytes: bytes) } catch { throw .invalid("block id") }
    }
}

extension PermissionBlock {
    /// The associated data of the label and the previous key: they belong to this document's epoch.
    static func labelData(_ document: DocumentID, _ epoch: UInt32) -> [UInt8] {
        var w = ByteWriter(capacity: 20)
        w.raw(document.bytes)
        w.u32(epoch)
        return w.bytes
    }

    /// The canonical encoding that is signed.
    public var body: [UInt8] {
        var w = ByteWriter(capacity: 128 + members.count * 65 + sealedKeys.count * 112)
        w.u8(sealedPreviousKey == nil ? Self.formatVersion : Self.chainedFormatVersion)
        w.raw(document.bytes)
        w.u32(epoch)
        if let previous { w.digest(previous) } else { w.raw([UInt8](repeating: 0, count: 32)) }
        w.u8(isPublic ? 1 : 0)
        w.u32(UInt32(members.count))
        for m in members {
            w.raw(m.identity.signing.bytes)
            w.raw(m.identity.box.bytes)
            w.u8(m.roles.rawValue)
        }
        let readers = isPublic ? [] : members.filter { $0.roles.contains(.read) }
        w.u32(UInt32(readers.count))
        for m in readers {
            w.raw(m.identity.signing.bytes)
            w.raw(sealedKeys[m.identity.signing]!)
        }
        w.blob(sealedLabel)
        if let sealedPreviousKey {
            w.blob(sealedPreviousKey)
            w.u64(time.rawValue)
        }
        w.raw(signer.bytes)
        return w.bytes
    }
}

/// Why a permission block is not accepted as the next of its document's chain.
public enum PermissionChainError: Error, Sendable, Equatable, CustomStringConvertible {
    case otherDocument
    /// Its epoch is not one past the chain's (a replayed or rolled-back block, or a gap).
    case notNext(expected: UInt32, got: UInt32)
    case wrongPrevious
    /// The signer is not an admin of the previous block (of epoch 0: not the creator, or not an admin in it).
    case signerNotAdmin

    public var description: String {
        switch self {
        case .otherDocument: "the block is for another document"
        case .notNext(let expected, let got):
            "epoch \(got) where \(expected) is next (replayed, rolled back or out of order)"
        case .wrongPrevious: "the block does not name the current block as its predecessor"
        case .signerNotAdmin: "the signer is not an admin of the previous block"
        }
    }
}

/// A document's permission blocks from its creator's first: each signed by an admin of the one before.
/// A node accepts a block only as the next link; so a replayed, rolled-back or forged block is rejected,
/// and the current epoch only moves forward (the persisted high-water mark of docs/security.md).
public struct PermissionChain: Sendable {
    public let document: DocumentID
    public let creator: SigningPublicKey
    public private(set) var blocks: [SignedPermissionBlock] = []

    public init(document: DocumentID, creator: SigningPublicKey) {
        self.document = document
        self.creator = creator
    }

    public var current: SignedPermissionBlock? { blocks.last }

    /// Checks `block` as the next link and appends it.
    public mutating func append(_ block: SignedPermissionBlock) throws(PermissionChainError) {
        let b = block.block
        guard b.document == document else { throw .otherDocument }
        let expected = UInt32(blocks.count)
        guard b.epoch == expected else { throw .notNext(expected: expected, got: b.epoch) }
        guard b.previous == current?.id else { throw .wrongPrevious }
        if let current {
            guard current.block.roles(of: b.signer).contains(.admin) else { throw .signerNotAdmin }
        } else {
            guard b.signer == creator, b.roles(of: creator).contains(.admin) else { throw .signerNotAdmin }
        }
        blocks.append(block)
    }
}
