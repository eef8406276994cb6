import HypernetCrypto

public enum RevisionKind: UInt8, Sendable, Codable {
    case file = 1
    case directory = 2
    case symlink = 3
    /// The document was deleted; its history stays.
    case tombstone = 4
    /// A FIFO, UNIX socket or device node: the type is the mode's `S_IFMT` bits, a device's number `rdev`.
    case special = 5
}

/// An immutable, signed revision of one document. The exact signed bytes are what is stored and sent;
/// the id is BLAKE2b-256 over them, so equal ids mean equal records (docs/store-format.md, "Revision").
/// Format 1 is a revision under its tree owner's key; format 2 adds the document whose permission chain
/// governs it (`rights`), and is written only then, so a tree nobody shares stays readable by older nodes.
/// Formats 3 and 4 are 1 and 2 with a file's blind token index (`BlindIndex`) named at the end, written only then.
public struct Revision: Sendable, Equatable {
    public static let formatVersion: UInt8 = 1
    public static let governedFormatVersion: UInt8 = 2
    public static let indexedFormatVersion: UInt8 = 3
    public static let indexedGovernedFormatVersion: UInt8 = 4
    static let signatureContext = Array("hypernet revision v1\n".utf8)
    static let maximumParents = 1024
    static let maximumSealedMetadata = 16 << 20

    public var document: DocumentID
    public var kind: RevisionKind
    /// The epoch of the governing chain (0 under the tree owner's key).
    public var epoch: UInt32
    /// The document whose permission chain governs this revision (its own, or the one its creator wrote
    /// under); nil: the tree owner's key, and only the owner writes.
    public var rights: DocumentID?
    public var time: HLCTime
    public var author: SigningPublicKey
    public var parents: [RevisionID]
    /// `RevisionMetadata`, sealed with the epoch's metadata key (see `RevisionMetadata.seal`).
    public var sealedMetadata: [UInt8]
    /// A file's blind token index, a chunk stored in the clear (its key is 32 zero bytes): what lets a node without
    /// the epoch key find the blocks holding a word (docs/security.md, "Search on ciphertext").
    public var blindIndex: ChunkReference?

    public init(
        document: DocumentID, kind: RevisionKind, epoch: UInt32, rights: DocumentID? = nil, time: HLCTime,
        author: SigningPublicKey, parents: [RevisionID], sealedMetadata: [UInt8], blindIndex: ChunkReference? = nil
    ) {
        self.document = document
        self.kind = kind
        self.epoch = epoch
        self.rights = rights
        self.time = time
        self.author = author
        self.parents = parents
        self.sealedMetadata = sealedMetadata
        self.blindIndex = blindIndex
    }

    /// The canonical encoding that is signed.
    public var body: [UInt8] {
        var w = ByteWriter(capacity: 128 + sealedMetadata.count + 32 * parents.count)
        switch (rights == nil, blindIndex == nil) {
        case (true, true): w.u8(Self.formatVersion)
        case (false, true): w.u8(Self.governedFormatVersion)
        case (true, false): w.u8(Self.indexedFormatVersion)
        case (false, false): w.u8(Self.indexedGovernedFormatVersion)
        }
        w.raw(document.bytes)
        w.u8(kind.rawValue)
        w.u32(epoch)
        if let rights { w.raw(rights.bytes) }
        w.u64(time.rawValue)
        w.raw(author.bytes)
        w.u16(UInt16(parents.count))
        for p in parents { w.digest(p) }
        w.blob(sealedMetadata)
        if let blindIndex {
            w.digest(blindIndex.id)
            w.u64(blindIndex.length)
        }
        return w.bytes
    }

    /// Signs with `key` (whose public key must be `author`) and returns the stored record.
    public func signed(by key: SigningKeyPair) -> SignedRevision {
        precondition(key.publicKey == author, "a revision is signed by its author")
        let body = self.body
        let signature = key.signature(for: Self.signatureContext + body)
        return SignedRevision(revision: self, record: body + signature)
    }
}

/// A revision with its exact stored bytes: body || Ed25519 signature (64 bytes).
public struct SignedRevision: Sendable, Equatable {
    public let revision: Revision
    public let record: [UInt8]

    public var id: RevisionID { BLAKE2b.hash(record) }

    fileprivate init(revision: Revision, record: [UInt8]) {
        self.revision = revision
        self.record = record
    }

    /// Decodes and verifies a record received or read from disk: structure, version and signature.
    public init(record: [UInt8]) throws(DecodingError) {
        let signatureCount = SigningKeyPair.signatureByteCount
        guard record.count > signatureCount else { throw .truncated("revision") }
        let body = Array(record[..<(record.count - signatureCount)])
        let signature = Array(record[(record.count - signatureCount)...])
        var r = ByteReader(body, context: "revision")
        let version = try r.u8()
        guard (Revision.formatVersion...Revision.indexedGovernedFormatVersion).contains(version) else {
            throw .unsupportedVersion(Int(version))
        }
        let governed = version == Revision.governedFormatVersion || version == Revision.indexedGovernedFormatVersion
        let document = try DocumentID(bytes: r.raw(DocumentID.byteCount))
        guard let kind = RevisionKind(rawValue: try r.u8()) else { throw .invalid("revision kind") }
        let epoch = try r.u32()
        let rights =
            governed ? try DocumentID(bytes: r.raw(DocumentID.byteCount)) : nil
        guard rights != nil || epoch == 0 else { throw .invalid("epoch \(epoch) under the tree owner's key") }
        let time = HLCTime(rawValue: try r.u64())
        let author: SigningPublicKey
        do { author = try SigningPublicKey(bytes: r.raw(SigningPublicKey.byteCount)) } catch {
            throw .invalid("revision author")
        }
        let parentCount = Int(try r.u16())
        guard parentCount <= Revision.maximumParents else { throw .invalid("revision parent count") }
        var parents: [RevisionID] = []
        for _ in 0..<parentCount { parents.append(try r.digest()) }
        let sealed = try r.blob(limit: Revision.maximumSealedMetadata)
        var blindIndex: ChunkReference?
        if version >= Revision.indexedFormatVersion {
            guard kind == .file else { throw .invalid("a blind index of a revision that is not a file's") }
            blindIndex = ChunkReference(id: try r.digest(), key: ChunkReference.clearKey, length: try r.u64())
        }
        try r.expectEnd()
        guard author.isValidSignature(signature, for: Revision.signatureContext + body) else {
            throw .invalid("revision signature")
        }
        self.revision = Revision(
            document: document, kind: kind, epoch: epoch, rights: rights, time: time, author: author,
            parents: parents, sealedMetadata: sealed, blindIndex: blindIndex)
        self.record = record
    }
}

/// One record of a tree's log: a revision, a permission block of one of the tree's documents, or a release
/// statement of its owner. The first byte of a record says which (docs/store-format.md, "Log records").
public enum LogRecord: Sendable, Equatable {
    case revision(SignedRevision)
    case block(SignedPermissionBlock)
    case release(SignedReleaseStatement)

    public init(record: [UInt8]) throws(DecodingError) {
        switch record.first {
        case PermissionBlock.formatVersion, PermissionBlock.chainedFormatVersion:
            self = .block(try SignedPermissionBlock(record: record))
        case ReleaseStatement.formatVersion: self = .release(try SignedReleaseStatement(record: record))
        default: self = .revision(try SignedRevision(record: record))
        }
    }

    public var record: [UInt8] {
        switch self {
        case .revision(let r): r.record
        case .block(let b): b.record
        case .release(let s): s.record
        }
    }
}
