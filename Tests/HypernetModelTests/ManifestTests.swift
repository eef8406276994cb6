import HypernetCrypto
import HypernetModel
import Testing

/// Holes and the size limit (docs/store-format.md, "Holes and the size limit"): what the encoder writes, the
/// decoders accept, and nothing past the limit decodes.
@Suite struct ManifestTests {
    let data = ChunkReference(id: BLAKE2b.hash([1]), key: BLAKE2b.hash([2]), length: 4096)

    @Test func aLeafWithAHoleRoundTrips() throws {
        let leaf = ManifestNode(level: 0, children: [data, .hole(length: ManifestNode.maximumLength - 4096)])
        let decoded = try ManifestNode(decoding: leaf.encoded())
        #expect(decoded == leaf)
        #expect(decoded.children[1].isHole && !decoded.children[0].isHole)
        #expect(decoded.length == ManifestNode.maximumLength)
    }

    @Test func holesOutsideLeavesEmptyHolesAndLengthsPastTheLimitAreRefused() {
        for node in [
            ManifestNode(level: 1, children: [.hole(length: 10)]),
            ManifestNode(level: 0, children: [.hole(length: 0)]),
            ManifestNode(level: 0, children: [data, .hole(length: ManifestNode.maximumLength)]),
            ManifestNode(level: 0, children: [.hole(length: .max), .hole(length: .max)]),
        ] {
            #expect(throws: DecodingError.self) { try ManifestNode(decoding: node.encoded()) }
        }
    }

    func metadata(size: UInt64, content: ManifestReference?) -> RevisionMetadata {
        RevisionMetadata(
            mode: 0o100644, uid: 0, gid: 0, mtimeSeconds: 1, mtimeNanoseconds: 0, ctimeSeconds: 1, ctimeNanoseconds: 0,
            size: size, quorum: 0, xattrs: [], content: content, symlinkTarget: [])
    }

    @Test func holeBytesTravelInTheMetadataOnlyWhenThereAreHoles() throws {
        let root = ManifestReference(node: ChunkReference(id: data.id, key: data.key, length: 1 << 40), level: 0)
        let plain = metadata(size: 1 << 40, content: root)
        var sparse = plain
        sparse.content!.holeBytes = (1 << 40) - 4096
        // Without holes the encoding is the format-5 one (flag 1); with them, flag 2 and the count.
        #expect(sparse.encoded().count == plain.encoded().count + 8)
        #expect(try RevisionMetadata(decoding: sparse.encoded()) == sparse)
        #expect(try RevisionMetadata(decoding: plain.encoded()) == plain)
        var tooMany = sparse
        tooMany.content!.holeBytes = (1 << 40) + 1
        #expect(throws: DecodingError.self) { try RevisionMetadata(decoding: tooMany.encoded()) }
        #expect(throws: DecodingError.self) {
            try RevisionMetadata(decoding: metadata(size: ManifestNode.maximumLength + 1, content: nil).encoded())
        }
    }
}
