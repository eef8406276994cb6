import Glibc
import HypernetModel
import HypernetStore
import Testing

@testable import HypernetVFS

/// The cost of the n-th entry of a big directory (issue 14, item 7), counted rather than timed.
@Suite struct DirectoryCostTests {
    /// The address of the storage holding a directory's entries by name (the first stored property, a dictionary
    /// reference) and that of its pages: they change when the entries are copied.
    static func entriesStorage(_ f: Fixture, _ inode: UInt64) -> [UInt] {
        f.vfs.state.withLock { s in
            let entries = s.nodes[inode]!.children
            let map = withUnsafeBytes(of: entries) { $0.load(as: UInt.self) }
            return [map, entries.pages.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) }]
        }
    }

    /// Creating or removing an entry changes the directory's one copy of its entries: the storage moves only when
    /// the table grows (O(log n) times), never per entry, which made the n-th create O(n).
    @Test func addingAndRemovingEntriesNeverCopiesTheDirectory() throws {
        let f = try Fixture()
        let dir = try f.vfs.mkdir(parent: 1, name: "big", mode: 0o755, caller: f.caller).inode
        let count = 5_000
        var moves = 0
        var last = Self.entriesStorage(f, dir)
        for i in 0..<count {
            _ = try f.vfs.mknod(parent: dir, name: "f\(i)", mode: S_IFREG | 0o644, caller: f.caller)
            let now = Self.entriesStorage(f, dir)
            if now != last { moves += 1 }
            last = now
        }
        #expect(moves <= 20, "the entries moved \(moves) times in \(count) creates")
        moves = 0
        for i in 0..<count / 2 {
            try f.vfs.unlink(parent: dir, name: "f\(i)")
            let now = Self.entriesStorage(f, dir)
            if now != last { moves += 1 }
            last = now
        }
        #expect(moves <= 20, "the entries moved \(moves) times in \(count / 2) unlinks")
        // A directory read answers a buffer at a time, not every entry left at each call.
        let handle = try f.vfs.opendir(inode: dir)
        defer { f.vfs.releasedir(handle: handle) }
        var offset: UInt64 = 0
        var names = 0
        while case let batch = try f.vfs.readdir(handle: handle, offset: offset, limit: 100), !batch.isEmpty {
            #expect(batch.count <= 100)
            names += batch.count
            offset = batch.last!.nextOffset
        }
        #expect(names == 2 + count / 2)
    }

    /// The chunks of `inode`'s current listing.
    static func listingChunks(_ f: Fixture, _ inode: UInt64) throws -> [ChunkReference] {
        let content = f.vfs.state.withLock { s in s.nodes[inode]!.record.metadata.content }
        return try f.store.loadManifest(content).chunks
    }

    /// A revision of a big directory stores (and so encodes and seals) what changed, not the whole listing: after
    /// one create, unlink or rename, the chunks that differ from the last revision's hold a few pages' bytes,
    /// whether the directory has 2,000 entries or 20,000. The listing still reads back whole and in order.
    @Test func aDirectoryRevisionStoresTheChangeNotTheListing() throws {
        let f = try Fixture()
        let dir = try f.vfs.mkdir(parent: 1, name: "big", mode: 0o755, caller: f.caller).inode
        var names = Set<String>()
        var worst: [Int: UInt64] = [:]
        for size in [2_000, 20_000] {
            while names.count < size {
                let name = "file-\(names.count)"
                _ = try f.vfs.mknod(parent: dir, name: name, mode: S_IFREG | 0o644, caller: f.caller)
                names.insert(name)
            }
            try f.commitDirectories()
            var changed: UInt64 = 0
            let (first, middle, last) = ("a\(size)", "file-5x\(size)", "z\(size)")
            let (gone, moved) = ("file-\(size / 2)", "file-\(size / 3)")
            let changes: [(String, () throws -> Void)] = [
                ("create first", { _ = try f.vfs.mknod(parent: dir, name: first, mode: S_IFREG, caller: f.caller) }),
                ("create middle", { _ = try f.vfs.mknod(parent: dir, name: middle, mode: S_IFREG, caller: f.caller) }),
                ("create last", { _ = try f.vfs.mknod(parent: dir, name: last, mode: S_IFREG, caller: f.caller) }),
                ("unlink", { try f.vfs.unlink(parent: dir, name: gone) }),
                (
                    "rename",
                    { try f.vfs.rename(parent: dir, name: moved, newParent: dir, newName: "b\(size)", flags: []) }
                ),
            ]
            for (what, change) in changes {
                let before = Set(try Self.listingChunks(f, dir).map(\.id))
                try change()
                try f.commitDirectories()
                let new = try Self.listingChunks(f, dir).filter { !before.contains($0.id) }
                let bytes = new.reduce(0) { $0 + $1.length }
                print("\(what) in \(size) entries: \(new.count) new chunks, \(bytes) bytes")
                // The content chunker's chunks are 16 KiB at least: a create before every name rewrote that much.
                #expect(bytes <= (what == "create first" ? 12 << 10 : 32 << 10), "\(what) in \(size) entries")
                changed = max(changed, bytes)
            }
            names.formUnion([first, middle, last, "b\(size)"])
            names.subtract([gone, moved])
            worst[size] = changed
            let content = f.vfs.state.withLock { s in s.nodes[dir]!.record.metadata.content }
            let listing = try DirectoryListing(decoding: f.store.readContent(content))
            let same = listing.entries.map(\.name) == names.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            #expect(same, "the listing of \(listing.entries.count) entries is not the \(names.count) expected")
        }
        // Bounded: ten times the entries, not ten times the bytes.
        #expect(worst[20_000]! <= 4 * max(worst[2_000]!, 4 << 10), "\(worst)")
    }

    /// Pages cut incrementally are the pages cut from scratch (so a node, or two nodes, holding the same entries
    /// store the same chunks), including runs of names none of which ends a page.
    /// The writer stops where every reader would: a listing of more than `DirectoryListing.maximumEntries` is
    /// refused by the decoder, so the directory holding that many is full (the VFS's `ENOSPC`).
    @Test func aDirectoryIsFullAtTheMostEntriesAListingMayHold() {
        var entries = DirectoryEntries()
        for i in 0..<(DirectoryListing.maximumEntries - 1) { entries["f\(1_000_000_000 + i)"] = 1 }
        #expect(!entries.isFull)
        entries["last"] = 1
        #expect(entries.isFull)
        entries.removeValue(forKey: "last")
        #expect(!entries.isFull)
    }

    @Test func pagesAreCutAsFromScratch() {
        var generator = SystemRandomNumberGenerator()
        var plain: [String] = []
        var i = 0
        while plain.count < 3 * DirectoryEntries.maximumPage {
            if !DirectoryEntries.isBoundary("n\(i)") { plain.append("n\(i)") }
            i += 1
        }
        for names in [(0..<5_000).map { "f\($0)" }, plain] {
            var entries = DirectoryEntries()
            var kept = Set<String>()
            for name in names.shuffled(using: &generator) {
                entries[name] = 1
                kept.insert(name)
            }
            for name in names.shuffled(using: &generator).prefix(names.count / 3) {
                entries.removeValue(forKey: name)
                kept.remove(name)
            }
            var fresh = DirectoryEntries()
            for name in kept.sorted() { fresh[name] = 1 }
            #expect(entries.pages.map { $0.entries.map(\.name) } == fresh.pages.map { $0.entries.map(\.name) })
            #expect(entries.sorted.map(\.name) == kept.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) })
            #expect(
                entries.pages.dropLast().allSatisfy { page in
                    page.entries.count == DirectoryEntries.maximumPage
                        || DirectoryEntries.isBoundary(page.entries.last!.name)
                })
            for name in kept { entries.removeValue(forKey: name) }
            #expect(entries.isEmpty && entries.pages.count == 1 && entries.pages[0].entries.isEmpty)
        }
    }
}
