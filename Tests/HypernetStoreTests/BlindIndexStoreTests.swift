import HypernetCrypto
import HypernetModel
import HypernetStore
import Testing

/// A writer's blind index (docs/store-format.md, "Blind index"): what `Store.writeBlindIndex` stores is what
/// `BlindIndex.Builder` makes of the content's chunks, also when a file grew and blocks of earlier indexes are reused.
@Suite struct BlindIndexStoreTests {
    func log(lines: Range<Int>) -> [UInt8] {
        Array(
            lines.map { "12:\($0 % 60) INFO svc=api request \($0 * 7919 % 10_007) served user=u\($0 % 97)\n" }.joined()
                .utf8)
    }

    func stored(_ store: Store, _ bytes: [UInt8]) throws -> BlindIndex {
        let written = try store.writeContent(bytes, key: store.keyring.treeKey)
        let sealing = try store.sealing(for: DocumentID.random())
        let index = try #require(try store.writeBlindIndex(written.root, sealing: sealing, head: nil))
        try store.transaction { tx in try tx.recordChunks(written.locations + index.locations) }
        var builder = BlindIndex.Builder(key: BlindTokenKey(epochKey: store.keyring.treeKey))
        for chunk in try store.loadManifest(written.root).chunks { builder.add(try store.readChunk(chunk)) }
        let read = try BlindIndex(decoding: store.readChunk(index.reference))
        #expect(read == builder.finish())
        return read
    }

    @Test func theStoredIndexIsTheBuildersAsTheFileGrows() throws {
        let store = try temporaryStore("blind")
        defer { removeTemporaryStore(store) }
        let first = try stored(store, log(lines: 0..<20_000))
        #expect(first.blocks.count > 10)
        // Appended to, and with a line cut in the middle of the file: blocks before the change are reused.
        var grown = log(lines: 0..<30_000)
        grown.removeSubrange(500_000..<500_030)
        let second = try stored(store, grown)
        #expect(second.blocks.count > first.blocks.count)
        // Binary content (a NUL byte) gets none.
        var binary = log(lines: 0..<1000)
        binary[30_000] = 0
        let written = try store.writeContent(binary, key: store.keyring.treeKey)
        try store.transaction { tx in try tx.recordChunks(written.locations) }
        let sealing = try store.sealing(for: DocumentID.random())
        #expect(try store.writeBlindIndex(written.root, sealing: sealing, head: nil) == nil)
    }
}
