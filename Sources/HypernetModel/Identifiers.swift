import HypernetCrypto

/// A document's stable identity: 16 random bytes chosen at creation, kept across renames and saves.
public struct DocumentID: Hashable, Sendable, CustomStringConvertible {
    public static let byteCount = 16
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) throws(DecodingError) {
        guard bytes.count == Self.byteCount else { throw .invalid("document id length \(bytes.count)") }
        self.bytes = bytes
    }

    public static func random() -> DocumentID {
        // Force-try is safe: the length is right by construction.
        try! DocumentID(bytes: SecureRandom.bytes(count: byteCount))
    }

    /// The root directory of `owner`'s tree: derived, so every node holding the identity shows one tree.
    public static func root(of owner: SigningPublicKey) -> DocumentID {
        try! DocumentID(
            bytes: Array(BLAKE2b.hash(Array("hypernet tree root v1\n".utf8) + owner.bytes).bytes.prefix(byteCount)))
    }

    public var description: String { Hex.encode(bytes) }
}

/// A revision's id: BLAKE2b-256 of its signed record.
public typealias RevisionID = Digest
/// A chunk's id: BLAKE2b-256 of its stored (encrypted) bytes, so any node can verify it without keys.
public typealias ChunkID = Digest
