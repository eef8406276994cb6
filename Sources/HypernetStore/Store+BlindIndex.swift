import HypernetCrypto
import HypernetModel

/// A blind token index written for a file revision (docs/store-format.md, "Blind index"), to be named by it.
public struct BlindIndexWrite: Sendable {
    public var reference: ChunkReference
    /// The new chunk to record with the revision (empty when the same index was stored already).
    public var locations: [ChunkLocation]
    /// The sealing it was made under: a revision sealed under another epoch does not name it.
    var rights: DocumentID?
    var epoch: UInt32
}

extension Store {
    /// Content larger than this gets no index: it is read whole for each revision (docs/store-format.md).
    public static let maximumBlindIndexedContent: UInt64 = 64 << 20

    /// Builds and stores the blind index of `content` written under `sealing`, as a chunk in the clear (a delta
    /// against `previous`, the index of the revision it follows, where that is smaller); nil when it gets none: a
    /// public epoch (anyone reads it), holes, no content, or too large (above).
    public func writeBlindIndex(_ content: ManifestReference?, sealing: Sealing, previous: ChunkReference?)
        throws(StoreError) -> BlindIndexWrite?
    {
        guard let content, content.holeBytes == 0, content.node.length > 0,
            content.node.length <= Self.maximumBlindIndexedContent,
            !sealing.key.isEqual(to: PermissionBlock.publicEpochKey)
        else { return nil }
        var builder = BlindIndex.Builder(key: BlindTokenKey(epochKey: sealing.key))
        for chunk in try loadManifest(content).chunks { builder.add(try readChunk(chunk)) }
        let encoded = builder.finish().encoded()
        guard encoded.count <= Self.maximumBlindIndex else { return nil }
        let (references, locations) = try encoded.withBytes { (bytes) throws(StoreError) in
            try writeChunks(
                bytes, ranges: [0..<encoded.count], bases: [previous.map { [$0] } ?? []],
                key: PermissionBlock.publicEpochKey)
        }
        return BlindIndexWrite(
            reference: references[0], locations: locations, rights: sealing.rights, epoch: sealing.epoch)
    }

    /// A chunk frame's limit (docs/protocol.md, "Limits"), less room for its codec byte.
    static let maximumBlindIndex = (16 << 20) - 64
}
