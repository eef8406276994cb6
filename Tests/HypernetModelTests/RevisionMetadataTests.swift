import HypernetModel
import Testing

/// The writer's xattr limits (`setXattr`) against the decoder's: nothing a writer accepts may be unreadable.
@Suite struct RevisionMetadataTests {
    static func metadata(_ xattrs: [RevisionMetadata.Xattr] = []) -> RevisionMetadata {
        RevisionMetadata(
            mode: 0o100644, uid: 0, gid: 0, mtimeSeconds: 0, mtimeNanoseconds: 0, ctimeSeconds: 0, ctimeNanoseconds: 0,
            size: 0, quorum: 0, xattrs: xattrs, content: nil, symlinkTarget: [])
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
        #expect(RevisionMetadata.xattrBytes(m.xattrs) <= RevisionMetadata.xattrSpace)
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
        #expect(RevisionMetadata.xattrBytes(m.xattrs) > RevisionMetadata.xattrSpace)
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
}
