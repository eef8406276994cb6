import Glibc
import Testing

@testable import HypernetVFS

/// The cost of the n-th entry of a big directory (issue 14, item 7), counted rather than timed.
@Suite struct DirectoryCostTests {
    /// The address of the storage holding a directory's entries: it changes when the entries are copied.
    static func entriesStorage(_ f: Fixture, _ inode: UInt64) -> UInt {
        f.vfs.state.withLock { s in
            let entries = s.nodes[inode]!.children
            precondition(MemoryLayout<DirectoryEntries>.size == MemoryLayout<UInt>.size, "one dictionary reference")
            return withUnsafeBytes(of: entries) { $0.load(as: UInt.self) }
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
}
