import HypernetCrypto

/// What a revision says about its document beyond the header, sealed so storage nodes learn nothing
/// from it: POSIX attributes, user xattrs and where the content is.
public struct RevisionMetadata: Sendable, Equatable {
    static let formatVersion: UInt8 = 1
    /// Adds `rdev`; written only for device nodes, so other revisions stay readable by older nodes.
    static let deviceFormatVersion: UInt8 = 2
    /// Adds `links`; written only for a document with several names, so other revisions stay as before.
    static let linksFormatVersion: UInt8 = 3
    /// Names the user xattrs by the root of a list stored as content (`XattrList`) instead of holding them, and
    /// always ends with `rdev` and `links`; written only for such lists, so other revisions stay readable by older
    /// nodes.
    static let xattrListFormatVersion: UInt8 = 4
    static let keyContext = Array("hypernet metadata key v1".utf8)
    /// What the decoder accepts of user xattrs: names of at most 255 bytes, values of at most 64 KiB (the
    /// kernel's `XATTR_NAME_MAX`, `XATTR_SIZE_MAX`), and a count far above what `xattrSpace` lets a writer
    /// reach (a revision written before that limit, with more than 4,096, still opens).
    public static let maximumXattrName = 255
    public static let maximumXattrValue = 64 << 10
    public static let maximumXattrs = 1 << 16
    /// The writer's limit: a document's user xattrs, each name with its NUL (as `listxattr` lists it) plus its
    /// value, take at most this many bytes, as ext4 gives them one block. It keeps the whole list within the
    /// kernel's 64 KiB `listxattr` buffer (`XATTR_LIST_MAX`, 256 bytes left for the `user.hypernet.*` names).
    public static let xattrSpace = (64 << 10) - 256
    /// Xattrs taking more than this many bytes (`XattrList.space`) are stored as a list of their own,
    /// cut by content, so that one set writes a chunk and a manifest node of it, not the whole list.
    public static let inlineXattrBytes = 4 << 10
    /// What the decoder accepts as an xattr list's length: far above what a writer makes (`xattrSpace` plus
    /// 8 bytes of lengths per attribute) and a limit of the sealed metadata, which a list replaces.
    public static let maximumXattrList: UInt64 = 16 << 20

    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var mtimeSeconds: Int64
    public var mtimeNanoseconds: UInt32
    public var ctimeSeconds: Int64
    public var ctimeNanoseconds: UInt32
    public var size: UInt64
    /// Quorum set on this document (`user.hypernet.quorum`); 0 = inherited.
    public var quorum: UInt8
    /// User xattrs (`user.*` other than `user.hypernet.*`) and `retentionEntry`, sorted by name (`XattrList`). Empty
    /// after decoding metadata that names a list (`xattrList`) until the store reads it. A change drops `xattrList`:
    /// it no longer matches.
    public var xattrs: XattrList { didSet { xattrList = nil } }
    /// The stored list that holds `xattrs` (encoded as version 4), or nil: they are encoded inline.
    public var xattrList: ManifestReference?
    /// Files and directories: the root of the content's manifest tree (with its hole bytes); nil for empty content.
    public var content: ManifestReference?
    /// Symlinks: the target.
    public var symlinkTarget: [UInt8]
    /// Device nodes: the device number (`st_rdev`); 0 otherwise.
    public var rdev: UInt64
    /// Files, symlinks and special files: how many names the writer's tree gave the document (hard links);
    /// 1 otherwise. Several tells every node that its listings name it on purpose, not after concurrent moves.
    public var links: UInt32

    public struct Xattr: Sendable, Equatable {
        public var name: String
        public var value: [UInt8]
        public init(name: String, value: [UInt8]) {
            self.name = name
            self.value = value
        }
    }

    public init(
        mode: UInt32, uid: UInt32, gid: UInt32, mtimeSeconds: Int64, mtimeNanoseconds: UInt32,
        ctimeSeconds: Int64, ctimeNanoseconds: UInt32, size: UInt64, quorum: UInt8, xattrs: XattrList,
        content: ManifestReference?, symlinkTarget: [UInt8], rdev: UInt64 = 0, links: UInt32 = 1,
        xattrList: ManifestReference? = nil
    ) {
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtimeSeconds = mtimeSeconds
        self.mtimeNanoseconds = mtimeNanoseconds
        self.ctimeSeconds = ctimeSeconds
        self.ctimeNanoseconds = ctimeNanoseconds
        self.size = size
        self.quorum = quorum
        self.xattrs = xattrs
        self.content = content
        self.symlinkTarget = symlinkTarget
        self.rdev = rdev
        self.links = links
        self.xattrList = xattrList
    }

    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 128)
        let version =
            xattrList != nil
            ? Self.xattrListFormatVersion
            : links > 1 ? Self.linksFormatVersion : rdev == 0 ? Self.formatVersion : Self.deviceFormatVersion
        w.u8(version)
        w.u32(mode)
        w.u32(uid)
        w.u32(gid)
        w.i64(mtimeSeconds)
        w.u32(mtimeNanoseconds)
        w.i64(ctimeSeconds)
        w.u32(ctimeNanoseconds)
        w.u64(size)
        w.u8(quorum)
        if let xattrList {
            xattrList.encode(into: &w)
        } else {
            w.u32(UInt32(xattrs.count))
            w.raw(xattrs.entriesEncoded)
        }
        if let content {
            // 2: the content has holes, their total follows (flag 1 keeps revisions without holes as before).
            w.u8(content.holeBytes == 0 ? 1 : 2)
            content.encode(into: &w)
            if content.holeBytes != 0 { w.u64(content.holeBytes) }
        } else {
            w.u8(0)
        }
        w.blob(symlinkTarget)
        if version != Self.formatVersion { w.u64(rdev) }
        if version >= Self.linksFormatVersion { w.u32(links) }
        return w.bytes
    }

    public init(decoding bytes: [UInt8]) throws(DecodingError) {
        var r = ByteReader(bytes, context: "revision metadata")
        let version = try r.u8()
        guard (Self.formatVersion...Self.xattrListFormatVersion).contains(version) else {
            throw .unsupportedVersion(Int(version))
        }
        mode = try r.u32()
        uid = try r.u32()
        gid = try r.u32()
        mtimeSeconds = try r.i64()
        mtimeNanoseconds = try r.u32()
        ctimeSeconds = try r.i64()
        ctimeNanoseconds = try r.u32()
        size = try r.u64()
        guard size <= ManifestNode.maximumLength else { throw .invalid("size") }
        quorum = try r.u8()
        xattrs = []
        if version == Self.xattrListFormatVersion {
            let list = try ManifestReference(from: &r)
            guard list.node.length <= Self.maximumXattrList else { throw .invalid("xattr list length") }
            xattrList = list
        } else {
            let count = Int(try r.u32())
            guard count <= Self.maximumXattrs else { throw .invalid("xattr count") }
            let start = r.offset
            for _ in 0..<count { _ = try Self.decodeXattr(from: &r) }
            xattrs = try XattrList(decoding: [1] + bytes[start..<r.offset])
        }
        switch try r.u8() {
        case 0: content = nil
        case 1: content = try ManifestReference(from: &r)
        case 2:
            var root = try ManifestReference(from: &r)
            root.holeBytes = try r.u64()
            guard root.holeBytes >= 1, root.holeBytes <= root.node.length else { throw .invalid("hole bytes") }
            content = root
        default: throw .invalid("content flag")
        }
        symlinkTarget = try r.blob(limit: 4096)
        rdev = version == Self.formatVersion ? 0 : try r.u64()
        if version == Self.deviceFormatVersion, rdev == 0 { throw .invalid("rdev") }
        links = version >= Self.linksFormatVersion ? try r.u32() : 1
        if version == Self.linksFormatVersion, links < 2 { throw .invalid("links") }
        if version == Self.xattrListFormatVersion, links < 1 { throw .invalid("links") }
        try r.expectEnd()
    }

    static func decodeXattr(from r: inout ByteReader) throws(DecodingError) -> Xattr {
        let name = try r.string(limit: Self.maximumXattrName)
        return Xattr(name: name, value: try r.blob(limit: Self.maximumXattrValue))
    }

    /// Why a user xattr cannot be set (the writer's limits, `docs/xattrs.md`).
    public enum XattrRefusal: Error, Sendable, Equatable {
        /// The name is longer than `maximumXattrName` bytes (ERANGE).
        case nameTooLong
        /// The value is longer than `maximumXattrValue` bytes (E2BIG).
        case valueTooBig
        /// The document's xattrs would take more than `xattrSpace` bytes (ENOSPC).
        case noSpace
    }

    /// Sets user xattr `name` to `value`, keeping the list sorted, unless that passes a limit. A change that
    /// does not grow the list is always allowed, so a document over the limit (written before it) can shrink.
    public mutating func setXattr(name: String, value: [UInt8]) throws(XattrRefusal) {
        guard name.utf8.count <= Self.maximumXattrName else { throw .nameTooLong }
        guard value.count <= Self.maximumXattrValue else { throw .valueTooBig }
        let before = xattrs.space
        let after = before + value.count - (xattrs.value(of: name).map(\.count) ?? -(name.utf8.count + 1))
        guard after <= Self.xattrSpace || after <= before else { throw .noSpace }
        xattrs.set(value, for: name)
    }

    /// Removes user xattr `name`; false when there is none. Here, not on `xattrs`: another module changes a property
    /// with an observer through its getter and setter, a copy of the whole list.
    public mutating func removeXattr(name: String) -> Bool { xattrs.remove(name: name) }

    /// The xattr entry that holds the retention policy set on this document (`user.hypernet.retention`), as its
    /// canonical text. No user xattr has this name (theirs start with `user.`), and an entry is no format change:
    /// nodes that predate retention read it and carry it into the revisions they make (their `listxattr` lists it,
    /// and reading it there fails with ENOTSUP, as for any name outside `user.`).
    public static let retentionEntry = "hypernet.retention"

    /// The retention policy set on this document; nil: inherited. An entry that does not parse (written by a
    /// later node with rules this one lacks) counts as `all`, which keeps more, never less.
    public var retention: RetentionPolicy? {
        get {
            guard let text = xattrs.value(of: Self.retentionEntry) else { return nil }
            return (try? RetentionPolicy(parsing: String(decoding: text, as: UTF8.self))) ?? .all
        }
        set {
            if let newValue {
                xattrs.set(Array(newValue.description.utf8), for: Self.retentionEntry)
            } else {
                xattrs.remove(name: Self.retentionEntry)
            }
        }
    }

    /// Seals the encoding with XChaCha20-Poly1305 under a key derived from the epoch key, a random nonce
    /// in front, and the document id as associated data (so metadata cannot be moved to another document).
    public func sealed(epochKey: SecureBytes, document: DocumentID) -> [UInt8] {
        EpochSeal.seal(encoded(), epochKey: epochKey, context: Self.keyContext, associatedData: document.bytes)
    }

    public init(unsealing sealed: [UInt8], epochKey: SecureBytes, document: DocumentID) throws(DecodingError) {
        guard sealed.count >= AEAD.nonceByteCount + AEAD.tagByteCount else { throw .truncated("sealed metadata") }
        guard
            let plain = EpochSeal.open(
                sealed, epochKey: epochKey, context: Self.keyContext, associatedData: document.bytes)
        else { throw .invalid("sealed metadata (authentication failed)") }
        try self.init(decoding: plain)
    }
}
