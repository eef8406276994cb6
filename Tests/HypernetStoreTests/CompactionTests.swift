import HypernetStore
import Testing

@Suite struct CompactionTests {
    /// Two writes of the same content before either is recorded both append it (as two writers at once do): the
    /// second copy is dead (its rows are ignored), and the store remembered its locations. After compaction removed the pack, a read must
    /// find the chunks where the catalog now says, not fail on the removed pack.
    @Test func aRememberedLocationOfADroppedDuplicateIsLookedUpAgain() throws {
        let store = try temporaryStore("compaction")
        defer { removeTemporaryStore(store) }
        let bytes = (0..<700_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        let first = try store.writeContent(bytes, key: store.keyring.treeKey)
        let second = try store.writeContent(bytes, key: store.keyring.treeKey)
        try store.transaction { tx in try tx.recordChunks(first.locations) }
        try store.transaction { tx in try tx.recordChunks(second.locations) }  // rows exist: nothing recorded

        let report = try store.collectGarbage()
        #expect(report.packsRewritten == 1)
        #expect(report.bytesReclaimed >= report.deadBytes)
        #expect(try store.readContent(first.root) == bytes)
        #expect(store.check().isEmpty)
    }
}
