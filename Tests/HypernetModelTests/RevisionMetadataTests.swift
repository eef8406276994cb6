import HypernetCrypto
import HypernetModel
import Testing

/// The writer's xattr limits (`setXattr`) against the decoder's: nothing a writer accepts may be unreadable.
@Suite struct RevisionMetadataTests {
    static func metadata(_ xattrs: [RevisionMetadata.Xattr] = []) -> RevisionMetadata {
        RevisionMetadata(
            mode: 0o100644, uid: 0, gid: 0, mtimeSeconds: 0, mtimeNanoseconds: 0, ctimeSeconds: 0, ctimeNanoseconds: 0,
            size: 0, quorum: 0, xattrs: XattrList(xattrs), content: nil, symlinkTarget: [])
    }

    static func decodes(_ m: RevisionMetadata) -> Bool { (try? RevisionMetadata(decoding: m.encoded())) == m }

    @Test func nameLengthIsOneLimitForWriterAndDecoder() throws {
        let longest = "user." + String(repeating: "n", count: RevisionMetadata.maximumXattrName - 5)
        var m = Self.metadata()
        try m.setXattr(name: longest, value: [1])
        #expect(Self.decodes(m))
        #expect(throws: RevisionMetadata.XattrRefusal.nameTooLong) { try m.setXattr(name: longest + "n", value: []) }
        #expect(!Self.decodes(Self.metadata([.init(name: longest + "n", value: [])])))
    }

    @Test func everyValueTheWriterAcceptsDecodes() throws {
        let limit = RevisionMetadata.maximumXattrValue
        var m = Self.metadata()
        let over = [UInt8](repeating: 0, count: limit + 1)
        #expect(throws: RevisionMetadata.XattrRefusal.valueTooBig) { try m.setXattr(name: "user.v", value: over) }
        #expect(!Self.decodes(Self.metadata([.init(name: "user.v", value: over)])))
        // The largest value the writer takes (the space less the name and its NUL) is within the decoder's limit.
        let largest = RevisionMetadata.xattrSpace - "user.v".utf8.count - 1
        #expect(largest <= limit)
        #expect(throws: RevisionMetadata.XattrRefusal.noSpace) {
            try m.setXattr(name: "user.v", value: .init(repeating: 0, count: largest + 1))
        }
        try m.setXattr(name: "user.v", value: .init(repeating: 7, count: largest))
        #expect(Self.decodes(m))
    }

    @Test func theWriterStopsWithinTheDecodersCountAndSize() throws {
        // The most xattrs a writer can set: the shortest names, empty values, until the space is used up.
        var names: [String] = []
        var used = 0
        while used + "user.\(names.count)".utf8.count + 1 <= RevisionMetadata.xattrSpace {
            used += "user.\(names.count)".utf8.count + 1
            names.append("user.\(names.count)")
        }
        let last = names.removeLast()
        var m = Self.metadata(names.map { .init(name: $0, value: []) }.sorted { $0.name < $1.name })
        try m.setXattr(name: last, value: [])
        let next = "user.\(names.count + 1)"
        #expect(throws: RevisionMetadata.XattrRefusal.noSpace) { try m.setXattr(name: next, value: []) }
        #expect(m.xattrs.count > 4096, "the limit is space, not the old count")
        #expect(m.xattrs.count < RevisionMetadata.maximumXattrs)
        #expect(m.xattrs.space <= RevisionMetadata.xattrSpace)
        #expect(m.xattrs.map(\.name) == m.xattrs.map(\.name).sorted())
        let decodes = Self.decodes(m)  // a bare Bool: a failure would print thousands of xattrs
        #expect(decodes)
        let tooMany = (0...RevisionMetadata.maximumXattrs).map { RevisionMetadata.Xattr(name: "user.\($0)", value: []) }
        #expect(!Self.decodes(Self.metadata(tooMany)))
    }

    @Test func aListOverTheSpaceWrittenBeforeTheLimitOpensAndShrinks() throws {
        // A revision of the old writer (no limit): 4,097 xattrs, more than the old decoder took and the space holds.
        let big = [UInt8](repeating: 1, count: 64)
        var m = Self.metadata((0...4096).map { .init(name: "user.n\($0)", value: big) }.sorted { $0.name < $1.name })
        #expect(m.xattrs.space > RevisionMetadata.xattrSpace)
        let decodes = Self.decodes(m)
        #expect(decodes)
        #expect(throws: RevisionMetadata.XattrRefusal.noSpace) { try m.setXattr(name: "user.new", value: []) }
        #expect(throws: RevisionMetadata.XattrRefusal.noSpace) { try m.setXattr(name: "user.n1", value: big + [1]) }
        try m.setXattr(name: "user.n1", value: [])
        #expect(m.xattrs.first { $0.name == "user.n1" }?.value == [])
    }

    /// A device number needs version 2; everything else stays version 1, which older nodes read.
    @Test func onlyDeviceNodesUseTheSecondFormat() throws {
        #expect(Self.metadata().encoded().first == 1)
        var device = Self.metadata()
        device.mode = 0o020620
        device.rdev = 0x103
        #expect(device.encoded().first == 2)
        #expect(Self.decodes(device))
        var zero = device.encoded()
        zero.replaceSubrange((zero.count - 8)..., with: [UInt8](repeating: 0, count: 8))
        #expect((try? RevisionMetadata(decoding: zero)) == nil, "version 2 without a device number")
    }

    /// Several names need version 3 (with or without a device number); one name keeps the older versions.
    @Test func onlyDocumentsWithSeveralNamesUseTheThirdFormat() throws {
        var linked = Self.metadata()
        linked.links = 2
        #expect(linked.encoded().first == 3)
        #expect(Self.decodes(linked))
        linked.mode = 0o020620
        linked.rdev = 0x103
        #expect(Self.decodes(linked))
        var one = linked.encoded()
        one.replaceSubrange((one.count - 4)..., with: [1, 0, 0, 0])
        #expect((try? RevisionMetadata(decoding: one)) == nil, "version 3 with one name")
    }

    /// Metadata naming a stored xattr list is version 4 (whatever `rdev` and `links`) and holds the list's root, not the
    /// xattrs; changing the xattrs drops the root, so a stale list is never named.
    @Test func aStoredListIsNamedByVersion3UntilTheXattrsChange() throws {
        let root = ManifestReference(
            node: ChunkReference(
                id: try Digest(bytes: [UInt8](repeating: 3, count: 32)),
                key: try Digest(bytes: [UInt8](repeating: 4, count: 32)), length: 5000),
            level: 0)
        var m = Self.metadata([.init(name: "user.a", value: [1])])
        m.xattrList = root
        #expect(m.encoded().first == 4)
        let decoded = try RevisionMetadata(decoding: m.encoded())
        #expect(decoded.xattrList == root)
        #expect(decoded.xattrs.isEmpty)
        #expect(decoded.encoded() == m.encoded())
        m.rdev = 0x103
        #expect(try RevisionMetadata(decoding: m.encoded()).rdev == 0x103)
        m.links = 2
        #expect(try RevisionMetadata(decoding: m.encoded()).links == 2)
        m.links = 1
        try m.setXattr(name: "user.b", value: [2])
        #expect(m.xattrList == nil)
        #expect(m.encoded().first == 2)
        var long = Self.metadata()
        long.xattrList = ManifestReference(
            node: ChunkReference(
                id: root.node.id, key: root.node.key, length: RevisionMetadata.maximumXattrList + 1),
            level: 0)
        #expect((try? RevisionMetadata(decoding: long.encoded())) == nil, "a list longer than the decoder takes")
    }

    /// The list's own encoding: what the writer can make decodes, and it has the inline limits.
    @Test func theXattrListDecodesWhatTheWriterMakes() throws {
        var m = Self.metadata()
        var i = 0
        while (try? m.setXattr(name: "user.\(i)", value: [UInt8(i & 0xff)])) != nil { i += 1 }
        let list = m.xattrs.encoded
        #expect(UInt64(list.count) <= RevisionMetadata.maximumXattrList)
        let decoded = try XattrList(decoding: list)
        #expect(decoded == m.xattrs)
        let over = [UInt8](repeating: 0, count: RevisionMetadata.maximumXattrValue + 1)
        #expect(
            (try? XattrList(decoding: Self.metadata([.init(name: "v", value: over)]).xattrs.encoded))
                == nil)
        #expect((try? XattrList(decoding: list + [0])) == nil, "a truncated entry")
    }
}
