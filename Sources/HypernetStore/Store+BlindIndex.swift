import HypernetCrypto
import HypernetModel
import Synchronization

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
    /// Content larger than this gets no index: each revision's is encoded and stored whole (docs/store-format.md).
    public static let maximumBlindIndexedContent: UInt64 = 64 << 20

    /// Builds and stores the blind index of `content` written under `sealing`, as a chunk in the clear (a delta
    /// against the index of `head`, the revision it follows, where that is smaller); the head's own when it has the
    /// same content under the same epoch (a change of metadata). Nil when it gets none: a public epoch (anyone reads
    /// it), holes, no content, too large (above), or content not all held here (a partial replica's file, whose
    /// content is not fetched for it).
    public func writeBlindIndex(_ content: ManifestReference?, sealing: Sealing, head: RevisionID?)
        throws(StoreError) -> BlindIndexWrite?
    {
        guard let content, content.holeBytes == 0, content.node.length > 0,
            content.node.length <= Self.maximumBlindIndexedContent,
            !sealing.key.isEqual(to: PermissionBlock.publicEpochKey)
        else { return nil }
        let previous = head.flatMap { try? revision($0, readingXattrs: false) }
        if let previous, let index = previous.revision.blindIndex, previous.metadata.content == content,
            previous.revision.rights == sealing.rights, previous.revision.epoch == sealing.epoch
        {
            return BlindIndexWrite(reference: index, locations: [], rights: sealing.rights, epoch: sealing.epoch)
        }
        let chunks = try loadManifest(content).chunks
        guard chunks.allSatisfy({ holds($0.id) }) else { return nil }
        guard let encoded = try blindIndex(of: chunks, epochKey: sealing.key)?.encoded() else { return nil }
        guard encoded.count <= Self.maximumBlindIndex else { return nil }
        let (references, locations) = try encoded.withBytes { (bytes) throws(StoreError) in
            try writeChunks(
                bytes, ranges: [0..<encoded.count], bases: [previous?.revision.blindIndex.map { [$0] } ?? []],
                key: PermissionBlock.publicEpochKey)
        }
        return BlindIndexWrite(
            reference: references[0], locations: locations, rights: sealing.rights, epoch: sealing.epoch)
    }

    /// A chunk frame's limit (docs/protocol.md, "Limits"), less room for its codec byte.
    static let maximumBlindIndex = (16 << 20) - 64

    /// The index of content made of `chunks`, as `BlindIndex.Builder` makes it from them all, but reading only the
    /// chunks and tokenizing only the blocks `BlindBlockCache` does not know already; nil for binary content (a NUL
    /// byte: grep prints no lines of it, and its random "words" would make a large index for nothing).
    func blindIndex(of chunks: [ChunkReference], epochKey: SecureBytes) throws(StoreError) -> BlindIndex? {
        let cache = BlindBlockCache.shared
        var starts: [UInt32?] = []
        for (i, chunk) in chunks.enumerated() {
            let facts: BlindBlockCache.Facts
            if let known = cache.facts(chunk.id) {
                facts = known
            } else {
                let plaintext = try readChunk(chunk)
                facts = BlindBlockCache.Facts(
                    firstNewline: plaintext.firstIndex(of: 0x0a), binary: plaintext.contains(0))
                cache.note(chunk.id, facts)
            }
            guard !facts.binary else { return nil }
            starts.append(i == 0 ? 0 : facts.firstNewline.map { UInt32($0 + 1) })
        }
        let key = BlindTokenKey(epochKey: epochKey)
        let epoch = BLAKE2b.hash(BlindBlockCache.context, key: epochKey)
        var blocks: [BlindIndex.Block] = []
        for i in chunks.indices {
            guard let start = starts[i] else {
                blocks.append(BlindIndex.Block(start: nil, newlines: 0, span: 0, tokens: []))
                continue
            }
            // It runs to the next block's start, in the first later chunk with a newline, or to the end.
            let next = ((i + 1)..<chunks.count).first { starts[$0] != nil }
            let span = chunks[i...(next ?? chunks.count - 1)]
            let ids: [ChunkID] = span.map { $0.id }
            let cached = BlindBlockCache.Key(epoch: epoch, start: start, chunks: ids)
            if let block = cache.block(cached) {
                blocks.append(block)
                continue
            }
            var builder = BlindIndex.Builder(key: key)
            for (k, chunk) in span.enumerated() {
                let plaintext = try readChunk(chunk)
                builder.add(k == 0 ? Array(plaintext[Int(start)...]) : plaintext)
            }
            var block = builder.finish().blocks[0]
            block.start = start
            block.span = UInt32(span.count)
            cache.note(cached, block)
            blocks.append(block)
        }
        return BlindIndex(blocks: blocks)
    }
}

/// What blind indexes made in this process found, so that the index of a file that grew (a log) reads and tokenizes
/// only its new chunks and the block before them: each chunk's first newline and whether it holds a NUL (a chunk id
/// names one plaintext), and each block's tokens by its epoch key, its start and the chunks it spans. Starts over
/// when it holds too much.
final class BlindBlockCache: Sendable {
    static let shared = BlindBlockCache()
    static let context = Array("hypernet blind block cache".utf8)
    /// Tokens and chunks it holds at most.
    static let capacity = 4 << 20

    /// What one chunk's plaintext holds.
    struct Facts {
        var firstNewline: Int?
        /// A NUL byte.
        var binary: Bool
    }

    struct Key: Hashable {
        /// A digest of the epoch key (not the key itself).
        var epoch: Digest
        var start: UInt32
        var chunks: [ChunkID]
    }

    private struct State {
        var chunks: [ChunkID: Facts] = [:]
        var blocks: [Key: BlindIndex.Block] = [:]
        var tokens = 0
    }

    private let state = Mutex(State())

    func facts(_ id: ChunkID) -> Facts? { state.withLock { $0.chunks[id] } }

    func note(_ id: ChunkID, _ facts: Facts) {
        state.withLock { s in
            if s.chunks.count >= Self.capacity { s.chunks = [:] }
            s.chunks[id] = facts
        }
    }

    func block(_ key: Key) -> BlindIndex.Block? { state.withLock { $0.blocks[key] } }

    func note(_ key: Key, _ block: BlindIndex.Block) {
        state.withLock { s in
            if s.tokens + block.tokens.count > Self.capacity { (s.blocks, s.tokens) = ([:], 0) }
            s.blocks[key] = block
            s.tokens += block.tokens.count
        }
    }
}
