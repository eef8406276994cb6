import HypernetCrypto

/// A tree owner's signed word that the content of some revisions was released by its retention policies, and which
/// objects that freed (docs/design.md, "Release statements"). Plaintext, so that a node without the tree's keys can
/// apply it; it names only ids such a node already holds.
public struct ReleaseStatement: Sendable, Equatable {
    /// The first byte of the record: apart from revisions' (1, 2) and blocks' (0x10, 0x11).
    public static let formatVersion: UInt8 = 0x20
    /// Ids of all three lists together: the record stays under the 17 MiB a log entry carries.
    public static let maximumIds = 500_000
    static let signatureContext = Array("hypernet release statement v1\n".utf8)

    /// The tree, whose owner signs.
    public var tree: SigningPublicKey
    /// When it was made (Unix milliseconds): a node refuses one older than the newest it holds of the tree.
    public var time: UInt64
    /// The revisions whose content was released.
    public var released: [RevisionID]
    /// Every other revision of the tree the issuer held: what the dead objects were checked against.
    public var covered: [RevisionID]
    /// The objects only released revisions needed.
    public var dead: [ChunkID]

    /// Lists are kept sorted: the encoding is canonical.
    public init(
        tree: SigningPublicKey, time: UInt64, released: some Sequence<RevisionID>, covered: some Sequence<RevisionID>,
        dead: some Sequence<ChunkID>
    ) {
        self.tree = tree
        self.time = time
        self.released = released.sorted()
        self.covered = covered.sorted()
        self.dead = dead.sorted()
    }

    var body: [UInt8] {
        var w = ByteWriter(capacity: 48 + 32 * (released.count + covered.count + dead.count))
        w.u8(Self.formatVersion)
        w.raw(tree.bytes)
        w.u64(time)
        for list in [released, covered, dead] {
            w.u32(UInt32(list.count))
            for id in list { w.digest(id) }
        }
        return w.bytes
    }
}

public struct SignedReleaseStatement: Sendable, Equatable {
    public let statement: ReleaseStatement
    public let record: [UInt8]
    public var id: Digest { BLAKE2b.hash(record) }

    /// Signs `statement` with the tree's own key; nil if its lists pass `maximumIds`.
    public init?(_ statement: ReleaseStatement, signer: SigningKeyPair) {
        guard signer.publicKey == statement.tree,
            statement.released.count + statement.covered.count + statement.dead.count <= ReleaseStatement.maximumIds
        else { return nil }
        let body = statement.body
        self.statement = statement
        self.record = body + signer.signature(for: ReleaseStatement.signatureContext + body)
    }

    /// Decodes a record and checks its structure and the tree owner's signature.
    public init(record: [UInt8]) throws(DecodingError) {
        let signatureCount = SigningKeyPair.signatureByteCount
        guard record.count > signatureCount else { throw .truncated("release statement") }
        let body = Array(record[..<(record.count - signatureCount)])
        var r = ByteReader(body, context: "release statement")
        let version = try r.u8()
        guard version == ReleaseStatement.formatVersion else { throw .unsupportedVersion(Int(version)) }
        let tree: SigningPublicKey
        do { tree = try SigningPublicKey(bytes: r.raw(SigningPublicKey.byteCount)) } catch {
            throw .invalid("release statement tree")
        }
        let time = try r.u64()
        var lists: [[Digest]] = []
        var total = 0
        for _ in 0..<3 {
            let count = Int(try r.u32())
            total += count
            guard total <= ReleaseStatement.maximumIds else { throw .invalid("release statement size") }
            var list: [Digest] = []
            list.reserveCapacity(count)
            for _ in 0..<count {
                let id = try r.digest()
                // Strictly ascending: one encoding per statement.
                guard list.last.map({ $0 < id }) ?? true else { throw .invalid("release statement order") }
                list.append(id)
            }
            lists.append(list)
        }
        try r.expectEnd()
        guard
            tree.isValidSignature(
                Array(record[(record.count - signatureCount)...]), for: ReleaseStatement.signatureContext + body)
        else { throw .invalid("release statement signature") }
        self.statement = ReleaseStatement(
            tree: tree, time: time, released: lists[0], covered: lists[1], dead: lists[2])
        self.record = record
    }
}
