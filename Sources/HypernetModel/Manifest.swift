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

    private static let zero = try! Digest(bytes: [UInt8](repeating: 0, count: Digest.byteCount))
    /// The key of a chunk stored in the clear (a public epoch's, a blind index).
    public static var clearKey: Digest { zero }

    /// `length` zero bytes that are stored nowhere (a hole: a truncate or a write past the end). Its id and key
    /// are 32 zero bytes each: no chunk has that id (BLAKE2b-256 preimage), and no reference to a stored chunk
    /// carries both.
    public static func hole(length: UInt64) -> ChunkReference { ChunkReference(id: zero, key: zero, length: length) }

    public var isHole: Bool { id == Self.zero && key == Self.zero }
}

/// A sum of lengths of content that stays within `ManifestNode.maximumLength`, or nil.
public func contentLength(adding a: UInt64, _ b: UInt64) -> UInt64? {
    let (sum, overflow) = a.addingReportingOverflow(b)
    return overflow || sum > ManifestNode.maximumLength ? nil : sum
}

/// The root of a document's content: a manifest node and its height (0: its children are data chunks), and how
/// many of its bytes are holes (so `st_blocks` needs no walk of the tree).
public struct ManifestReference: Sendable, Equatable {
    public var node: ChunkReference
    public var level: UInt8
    /// The total length of the hole references below `node`; at most `node.length`.
    public var holeBytes: UInt64

    public init(node: ChunkReference, level: UInt8, holeBytes: UInt64 = 0) {
        self.node = node
        self.level = level
        self.holeBytes = holeBytes
    }

    /// Without `holeBytes`: the revision metadata writes it after the reference when it is not 0.
    func encode(into w: inout ByteWriter) {
        w.u8(level)
        node.encode(into: &w)
    }

    init(from r: inout ByteReader) throws(DecodingError) {
        level = try r.u8()
        guard level <= ManifestNode.maximumLevel else { throw .invalid("manifest level") }
        node = try ChunkReference(from: &r)
        guard node.length <= ManifestNode.maximumLength else { throw .invalid("content length") }
        holeBytes = 0
    }
}

/// One node of a content's manifest tree: an ordered list of children, data chunks at level 0. Nodes hold
/// at most `fanout` children, grouped by position, so an append rewrites only the last node of each level:
/// a new revision costs O(log n) node writes, never the whole list.
public struct ManifestNode: Sendable, Equatable {
    public static let fanout = 256
    public static let maximumLevel: UInt8 = 8
    /// The longest content (a file's size): 2^60 bytes. Every length in a manifest, every node's total and the
    /// metadata's size stay within it, so sums never overflow and every offset fits an `off_t`; a write or a
    /// truncate past it fails with EFBIG (docs/store-format.md, "Holes and the size limit").
    public static let maximumLength: UInt64 = 1 << 60
    static let formatVersion: UInt8 = 1

    public var level: UInt8
    public var children: [ChunkReference]

    public init(level: UInt8, children: [ChunkReference]) {
        self.level = level
        self.children = children
    }

    /// The children's total (the decoder has checked it is within `maximumLength`).
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
        var total: UInt64 = 0
        for _ in 0..<count {
            let child = try ChunkReference(from: &r)
            // A hole is a run of zeros in a file's chunk list: never a subtree, never empty.
            if child.isHole, level > 0 || child.length == 0 { throw .invalid("manifest hole") }
            guard let sum = contentLength(adding: total, child.length) else { throw .invalid("manifest length") }
            total = sum
            children.append(child)
        }
        try r.expectEnd()
    }
}

/// A directory's content: its entries, sorted by name. Names are what storage nodes must never see, so the
/// listing is stored as encrypted content like a file's.
public struct DirectoryListing: Sendable, Equatable {
    static let formatVersion: UInt8 = 1
    /// A reader refuses a listing of more entries; the VFS gives `ENOSPC` for the next one (`errno.md`).
    public static let maximumEntries = 1 << 22

    public struct Entry: Sendable, Equatable {
        public var name: String
        public var document: DocumentID
        public var kind: RevisionKind
        public init(name: String, document: DocumentID, kind: RevisionKind) {
            self.name = name
            self.document = document
            self.kind = kind
        }

        public func encode(into w: inout ByteWriter) {
            w.string(name)
            w.raw(document.bytes)
            w.u8(kind.rawValue)
        }
    }

    public var entries: [Entry]

    public init(entries: [Entry]) {
        self.entries = entries.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
    }

    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 16 + entries.count * 48)
        Self.encodeHeader(count: entries.count, into: &w)
        for e in entries { e.encode(into: &w) }
        return w.bytes
    }

    /// The first bytes of a listing of `count` entries; the entries follow, each `Entry.encode`d, in name order.
    /// A directory's revision stores the listing in pieces made of these (docs/store-format.md).
    public static func encodeHeader(count: Int, into w: inout ByteWriter) {
        w.u8(formatVersion)
        w.u32(UInt32(count))
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
