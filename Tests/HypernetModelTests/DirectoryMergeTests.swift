import HypernetCrypto
import HypernetModel
import Testing

@Suite struct DirectoryMergeTests {
    let a = DocumentID.random()
    let b = DocumentID.random()
    let c = DocumentID.random()

    func listing(_ entries: (String, DocumentID)...) -> DirectoryListing {
        DirectoryListing(entries: entries.map { .init(name: $0.0, document: $0.1, kind: .file) })
    }

    func names(_ l: DirectoryListing) -> [String: DocumentID] {
        Dictionary(uniqueKeysWithValues: l.entries.map { ($0.name, $0.document) })
    }

    @Test func concurrentCreatesAreBothKept() {
        let base = listing(("a", a))
        let merged = DirectoryMerge.merge(
            base: base, heads: [listing(("a", a), ("b", b)), listing(("a", a), ("c", c))])
        #expect(names(merged) == ["a": a, "b": b, "c": c])
    }

    @Test func aDeleteOnOneSideWins() {
        let base = listing(("a", a), ("b", b))
        let merged = DirectoryMerge.merge(
            base: base, heads: [listing(("a", a)), listing(("a", a), ("b", b), ("c", c))])
        #expect(names(merged) == ["a": a, "c": c])
    }

    @Test func theNewerHeadDecidesARenameAgainstADelete() {
        let base = listing(("a", a))
        let merged = DirectoryMerge.merge(base: base, heads: [listing(), listing(("renamed", a))])
        #expect(names(merged) == ["renamed": a])
    }

    @Test func twoDocumentsUnderOneNameAreBothKeptOneRenamed() {
        let merged = DirectoryMerge.merge(base: listing(), heads: [listing(("x", a)), listing(("x", b))])
        let first = [a, b].min { $0.bytes.lexicographicallyPrecedes($1.bytes) }!
        let second = first == a ? b : a
        #expect(names(merged) == ["x": first, DirectoryMerge.conflictName("x", second): second])
    }

    /// Hard links: a document's names in one listing are one entry of the merge. A link added on one side and
    /// another document removed on the other both take effect; so do an unlink of one name and a create.
    @Test func aDocumentUnderSeveralNamesKeepsThemAll() {
        let base = listing(("a", a), ("a2", a), ("b", b))
        let merged = DirectoryMerge.merge(
            base: base, heads: [listing(("a", a), ("a2", a), ("a3", a), ("b", b)), listing(("a", a), ("a2", a))])
        #expect(names(merged) == ["a": a, "a2": a, "a3": a])
        let unlinked = DirectoryMerge.merge(
            base: base, heads: [listing(("a", a), ("b", b)), listing(("a", a), ("a2", a), ("b", b), ("c", c))])
        #expect(names(unlinked) == ["a": a, "b": b, "c": c])
    }

    func entry(_ name: String, _ document: DocumentID, _ kind: RevisionKind) -> DirectoryListing.Entry {
        .init(name: name, document: document, kind: kind)
    }

    var sorted: [DocumentID] { [a, b, c].sorted { $0.bytes.lexicographicallyPrecedes($1.bytes) } }

    @Test func namesDoNotDependOnTheOrderOfEntries() {
        let entries = [
            entry("d", a, .directory), entry("d", b, .directory), entry("d", c, .file), entry("e", c, .file),
        ]
        let named = DirectoryMerge.names(entries)
        #expect(named == DirectoryMerge.names(entries.reversed()))
        // Every document kept, the smallest id under the name; sorted by name bytes.
        let renamed = [sorted[1], sorted[2]].map { DirectoryMerge.conflictName("d", $0) }
        let expected = ["d", "e"] + renamed
        #expect(named.map(\.name) == expected.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) })
        #expect(named.first { $0.name == "d" }?.document == sorted[0])
    }

    @Test func withoutHistoryTheListingsUnite() {
        let merged = DirectoryMerge.merge(base: nil, heads: [listing(), listing(("a", a))])
        #expect(names(merged) == ["a": a])
    }

    @Test func theResultDoesNotDependOnWhichNodeComputesIt() {
        let base = listing(("a", a), ("b", b))
        let heads = [listing(("a2", a)), listing(("b", b), ("c", c)), listing(("a3", a), ("b", b))]
        #expect(DirectoryMerge.merge(base: base, heads: heads) == DirectoryMerge.merge(base: base, heads: heads))
        #expect(names(DirectoryMerge.merge(base: base, heads: heads)) == ["a3": a, "c": c])
    }

    @Test func mergeBaseIsTheLatestCommonAncestor() {
        let ids = (0..<5).map { BLAKE2b.hash([UInt8($0)]) }
        func n(_ i: Int, _ parents: [Int], _ t: UInt64) -> RevisionGraph.Node {
            .init(id: ids[i], parents: parents.map { ids[$0] }, time: HLCTime(rawValue: t))
        }
        // 0 <- 1 <- 2, 1 <- 3, and 4 unrelated.
        let graph = RevisionGraph([n(0, [], 1), n(1, [0], 2), n(2, [1], 3), n(3, [1], 4), n(4, [], 5)])
        #expect(graph.mergeBase(of: [ids[2], ids[3]]) == ids[1])
        #expect(graph.mergeBase(of: [ids[2], ids[4]]) == nil)
        #expect(graph.ordered([ids[3], ids[2]]) == [ids[2], ids[3]])
    }
}

@Suite struct DirectoryListingDecodingTests {
    @Test func unsortedOrRepeatedNamesAreRejected() throws {
        let d = DocumentID.random()
        let good = DirectoryListing(entries: [
            .init(name: "a", document: d, kind: .file), .init(name: "b", document: d, kind: .file),
        ])
        #expect(try DirectoryListing(decoding: good.encoded()) == good)
        // Swap the two entries in the encoding (each: u32 name length, name, 16-byte id, kind).
        var bytes = good.encoded()
        let entry = 4 + 1 + DocumentID.byteCount + 1
        let first = Array(bytes[5..<(5 + entry)])
        bytes.replaceSubrange(5..<(5 + entry), with: bytes[(5 + entry)..<(5 + 2 * entry)])
        bytes.replaceSubrange((5 + entry)..<(5 + 2 * entry), with: first)
        #expect(throws: DecodingError.self) { try DirectoryListing(decoding: bytes) }
        var repeated = good.encoded()
        repeated.replaceSubrange((5 + entry)..<(5 + 2 * entry), with: repeated[5..<(5 + entry)])
        #expect(throws: DecodingError.self) { try DirectoryListing(decoding: repeated) }
    }
}

@Suite struct ConflictRuleTests {
    let a = DocumentID.random()
    let b = DocumentID.random()

    func listing(_ entries: (String, DocumentID)...) -> DirectoryListing {
        DirectoryListing(entries: entries.map { .init(name: $0.0, document: $0.1, kind: .file) })
    }

    @Test func aDeleteThatLostToAnEditDoesNotRemoveTheEntry() {
        let base = listing(("f", a), ("g", b))
        let heads = [listing(("f", a), ("g", b)), listing()]
        let merged = DirectoryMerge.merge(base: base, heads: heads, undeleted: [a])
        #expect(merged.entries.map(\.name) == ["f"], "f's delete lost to an edit, g's delete stands")
    }

    @Test func placementsNameTheHeadThatDecidedEachEntry() {
        let base = listing(("f", a))
        let placed = DirectoryMerge.placements(base: base, heads: [listing(("f", a)), listing(("f", a), ("new", b))])
        #expect(placed.first { $0.entry.document == a }?.head == nil, "an unchanged entry is the base's")
        #expect(placed.first { $0.entry.document == b }?.head == 1, "an added entry is its head's")
    }

    @Test func anEditBeatsAConcurrentDeleteWhateverTheClocks() {
        let ids = (0..<3).map { BLAKE2b.hash([UInt8($0)]) }
        let graph = RevisionGraph([
            .init(id: ids[0], parents: [], time: HLCTime(rawValue: 1)),
            .init(id: ids[1], parents: [ids[0]], time: HLCTime(rawValue: 2)),
            .init(id: ids[2], parents: [ids[0]], time: HLCTime(rawValue: 9), isTombstone: true),
        ])
        #expect(graph.winner == ids[1], "a later tombstone must not hide a concurrent edit")
    }
}

@Suite struct SameNamedDirectoryTests {
    let root = DocumentID.random()

    func dir(_ name: String, _ id: DocumentID) -> DirectoryListing.Entry {
        .init(name: name, document: id, kind: .directory)
    }
    func file(_ name: String, _ id: DocumentID) -> DirectoryListing.Entry {
        .init(name: name, document: id, kind: .file)
    }

    /// Two ids, smallest first.
    func pair() -> (DocumentID, DocumentID) {
        let x = DocumentID.random()
        let y = DocumentID.random()
        return x.bytes.lexicographicallyPrecedes(y.bytes) ? (x, y) : (y, x)
    }

    @Test func sameNamedDirectoriesAreOneAtEveryDepthAndTheSmallestIdStays() {
        let (a1, a2) = pair()
        let (b1, b2) = pair()
        let (f1, f2) = (DocumentID.random(), DocumentID.random())
        let entries: [DocumentID: [DirectoryListing.Entry]] = [
            root: [dir("a", a2), dir("a", a1)],
            a1: [dir("b", b1), file("one.txt", f1)],
            a2: [dir("b", b2)],
            b2: [file("two.txt", f2)],
        ]
        let result = DirectoryMerge.sameNamed(root: root, entries: entries)
        #expect(result.entries[root]?.map(\.document) == [a1])
        #expect(Set(result.entries[a1]?.map(\.document) ?? []) == [b1, f1])
        #expect(result.entries[b1]?.map(\.document) == [f2], "b2's file shows in b1")
        #expect(result.entries[a2] == nil && result.entries[b2] == nil)
        #expect(result.merged == [a1: [a2], b1: [b2]])
    }

    @Test func aFileAgainstADirectoryAndTwoFilesAreNotMerged() {
        let (d, f, g) = (DocumentID.random(), DocumentID.random(), DocumentID.random())
        let entries: [DocumentID: [DirectoryListing.Entry]] = [root: [dir("x", d), file("x", f), file("y", g)]]
        let result = DirectoryMerge.sameNamed(root: root, entries: entries)
        #expect(result.merged.isEmpty)
        #expect(DirectoryMerge.names(result.entries[root]!).count == 3, "the file keeps the renamed form")
    }

    @Test func theResultDoesNotDependOnTheOrderOfEntries() {
        let ids = (0..<3).map { _ in DocumentID.random() }
        let smallest = ids.min { $0.bytes.lexicographicallyPrecedes($1.bytes) }!
        let forward = DirectoryMerge.sameNamed(root: root, entries: [root: ids.map { dir("p", $0) }])
        let backward = DirectoryMerge.sameNamed(root: root, entries: [root: ids.reversed().map { dir("p", $0) }])
        #expect(forward.merged == backward.merged)
        #expect(forward.entries[root]?.map(\.document) == [smallest])
        #expect(forward.merged[smallest]?.count == 2)
    }

    @Test func directoriesNotReachedKeepTheirEntries() {
        let (lost, f) = (DocumentID.random(), DocumentID.random())
        let result = DirectoryMerge.sameNamed(root: root, entries: [root: [], lost: [file("f", f)]])
        #expect(result.entries[lost]?.map(\.document) == [f])
    }
}
