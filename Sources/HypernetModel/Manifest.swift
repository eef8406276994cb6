import HypernetCrypto

/// Points at one stored chunk: its id, the key that opens it, and how many plaintext bytes of the
/// document lie under it (the chunk's own length for data, the subtree's total for a manifest node).
public struct ChunkReference: Sendable, Equatable, Hashable {
    public static let encodedByteCount = 32 + 32 + 8
    public var id: ChunkID
    /// 32-byte XChaCha20-Poly1305 key (keyed-convergent, see docs/store-format.md).
    public var key: Digest
    public var length: UInt64

    public init(id: ChunkID, key: Digest, length: UInt64) {
        self.id = id
        self.key = key
        self.length = length
    }

    public func encode(into w: inout ByteWriter) {
        w.digest(id)
        w.digest(key)
        w.u64(length)
    }

    public init(from r: inout ByteReader) throws(DecodingError) {
        id = try r.digest()
        key = try r.digest()
        length = try r.u64()
    }
}

/// The root of a document's content: a manifest node and its height (0: its children are data chunks).
public struct ManifestReference: Sendable, Equatable {
    public var node: ChunkReference
    public var level: UInt8

    public init(node: ChunkReference, level: UInt8) {
        self.node = node
        self.level = level
    }

    func encode(into w: inout ByteWriter) {
        w.u8(level)
        node.encode(into: &w)
    }

    init(from r: inout ByteReader) throws(DecodingError) {
        level = try r.u8()
        guard level <= ManifestNode.maximumLevel else { throw .invalid("manifest level") }
        node = try ChunkReference(from: &r)
    }
}

/// One node of a content's manifest tree: an ordered list of children, data chunks at level 0. Nodes hold
/// at most `fanout` children, grouped by position, so an append rewrites only the last node of each level:
/// a new revision costs O(log n) node writes, never the whole list.
public struct ManifestNode: Sendable, Equatable {
    public static let fanout = 256
    public static let maximumLevel: UInt8 = 8
    static let formatVersion: UInt8 = 1

    public var level: UInt8
    public var children: [ChunkReference]

    public init(level: UInt8, children: [ChunkReference]) {
        self.level = level
        self.children = children
    }

    public var length: UInt64 { children.reduce(0) { $0 + $1.length } }

    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 8 + children.count * ChunkReference.encodedByteCount)
        w.u8(Self.formatVersion)
        w.u8(level)
        w.u32(UInt32(children.count))
        for c in children { c.encode(into: &w) }
        return w.bytes
    }

    public init(decoding bytes: [UInt8]) throws(DecodingError) {
        var r = ByteReader(bytes, context: "manifest node")
        let version = try r.u8()
        guard version == Self.formatVersion else { throw .unsupportedVersion(Int(version)) }
        level = try r.u8()
        guard level <= Self.maximumLevel else { throw .invalid("manifest level") }
        let count = Int(try r.u32())
        guard count >= 1, count <= Self.fanout else { throw .invalid("manifest child count \(count)") }
        children = []
        children.reserveCapacity(count)
        for _ in 0..<count { children.append(try ChunkReference(from: &r)) }
        try r.expectEnd()
    }
}

/// A directory's content: its entries, sorted by name. Names are what storage nodes must never see, so the
/// listing is stored as encrypted content like a file's.
public struct DirectoryListing: Sendable, Equatable {
    static let formatVersion: UInt8 = 1
    static let maximumEntries = 1 << 22

    public struct Entry: Sendable, Equatable {
        public var name: String
        public var document: DocumentID
        public var kind: RevisionKind
        public init(name: String, document: DocumentID, kind: RevisionKind) {
            self.name = name
            self.document = document
            self.kind = kind
        }
    }

    public var entries: [Entry]

    public init(entries: [Entry]) { self.entries = entries.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) } }

    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 16 + entries.count * 48)
        w.u8(Self.formatVersion)
        w.u32(UInt32(entries.count))
        for e in entries {
            w.string(e.name)
            w.raw(e.document.bytes)
            w.u8(e.kind.rawValue)
        }
        return w.bytes
    }

    public init(decoding bytes: [UInt8]) throws(DecodingError) {
        var r = ByteReader(bytes, context: "directory listing")
        let version = try r.u8()
        guard version == Self.formatVersion else { throw .unsupportedVersion(Int(version)) }
        let count = Int(try r.u32())
        guard count <= Self.maximumEntries else { throw .invalid("directory entry count") }
        entries = []
        for _ in 0..<count {
            // 255 bytes of name, each stored as up to 4 bytes of UTF-8 (non-UTF-8 bytes are escaped).
            let name = try r.string(limit: 4 * 255)
            let document = try DocumentID(bytes: r.raw(DocumentID.byteCount))
            guard let kind = RevisionKind(rawValue: try r.u8()) else { throw .invalid("entry kind") }
            // Canonical: names strictly increasing by bytes (so neither out of order nor repeated).
            if let last = entries.last, !last.name.utf8.lexicographicallyPrecedes(name.utf8) {
                throw .invalid("directory entries out of order or repeated")
            }
            entries.append(Entry(name: name, document: document, kind: kind))
        }
        try r.expectEnd()
    }
}
