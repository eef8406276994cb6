import Foundation
import HypernetModel
import HypernetStore
import Testing

@testable import HypernetVFS

/// What one xattr set stores (issue 14, item 3), counted in bytes rather than timed.
@Suite struct XattrCostTests {
    /// A file holding `count` xattrs `user.nNNNN` of one byte, put in one revision as a restart finds it.
    static func file(_ f: Fixture, _ name: String, count: Int) throws -> UInt64 {
        let inode = try f.write(name, [1])
        var record = try #require(try f.store.loadDocuments().first { $0.inode == inode })
        record.metadata.xattrs = XattrList((0..<count).map { .init(name: Self.name($0), value: [1]) })
        try f.store.transaction { tx in
            record.head = try tx.appendRevision(
                document: record.id, kind: .file, metadata: record.metadata, parents: [record.head!])
            try tx.updateDocument(record)
        }
        return inode
    }

    static func name(_ i: Int) -> String { "user.n" + String(String(i + 10_000).dropFirst()) }

    /// The bytes the store and catalog gain from `body`: the packs, the signed revision records, and the
    /// documents' rows (their metadata, rewritten in place).
    static func bytesStored(_ f: Fixture, _ body: () throws -> Void) throws -> Int {
        func total() throws -> Int {
            let log = try f.store.log(tree: f.store.keyring.identity.publicKey, after: 0, limit: 1 << 20)
            let rows = try f.store.loadDocuments().reduce(0) { $0 + $1.metadata.encoded().count }
            return Int(f.store.statistics().packBytes) + log.reduce(0) { $0 + $1.record.count } + rows
        }
        let before = try total()
        try body()
        return try total() - before
    }

    /// Each set of a new value (and each new attribute) on a file with 5,000 xattrs (about 60 KB) stores about
    /// what it stores on a file with 50: the list is stored in chunks and only the changed one is new.
    @Test func oneSetStoresAboutAsMuchAt5000XattrsAsAt50() throws {
        let f = try Fixture()
        let small = try Self.file(f, "small", count: 50)
        let large = try Self.file(f, "large", count: 5_000)
        try f.reopen()
        func sets(_ inode: UInt64, count: Int) throws -> Int {
            // The first set stores the list as it will be kept; the ones measured follow.
            try f.vfs.setxattr(inode: inode, name: "user.first", value: [2], flags: [], caller: f.caller)
            return try Self.bytesStored(f) {
                for i in 0..<20 {
                    let name = i % 2 == 0 ? Self.name(i * count / 20) : "user.x\(i)"
                    try f.vfs.setxattr(
                        inode: inode, name: name, value: Array("v\(i)".utf8), flags: [], caller: f.caller)
                }
            }
        }
        let atSmall = try sets(small, count: 50)
        let atLarge = try sets(large, count: 5_000)
        #expect(atLarge <= 2 * atSmall, "20 sets stored \(atLarge) bytes at 5,000 xattrs, \(atSmall) at 50")
        // The chunks taken over from the list written before are those a cut of the whole list gives.
        try f.vfs.removexattr(inode: large, name: Self.name(100))
        let record = try #require(try f.store.loadDocuments().first { $0.inode == large })
        let whole = try f.store.writeContent(
            record.metadata.xattrs.encoded, key: f.store.sealing(for: record.id).key, chunker: Store.xattrChunker)
        #expect(try f.store.loadManifest(record.metadata.xattrList).chunks == f.store.loadManifest(whole.root).chunks)
        try f.reopen()
        let names = try f.vfs.listxattr(inode: large).filter { !$0.hasPrefix("user.hypernet.") }
        #expect(names.count == 5_000 + 1 + 10 - 1)
        #expect(try f.vfs.getxattr(inode: large, name: Self.name(4_999)) == [1])
        #expect(try f.vfs.getxattr(inode: large, name: Self.name(500)) == Array("v2".utf8))
        #expect(try f.vfs.getxattr(inode: large, name: "user.x19") == Array("v19".utf8))
        #expect(f.store.check().isEmpty)
    }

    /// Where the document's xattrs are held (the list's first word, the address of its storage): it moves when the
    /// list is copied.
    static func listStorage(_ f: Fixture, _ inode: UInt64) -> UInt {
        f.vfs.state.withLock { s in
            withUnsafeBytes(of: s.nodes[inode]!.record.metadata.xattrs) { $0.load(as: UInt.self) }
        }
    }

    /// A set changes the document's one copy of its list in place, at 5,000 xattrs as at 50: its storage moves
    /// only when it grows (a few times), never per set. Each set copied the whole list (and then encoded and
    /// compared all of it), which made the time of one set grow with the count.
    @Test func aSetChangesTheListInPlace() throws {
        let f = try Fixture()
        let files = try [50, 5_000].map { count in (count, try Self.file(f, "f\(count)", count: count)) }
        try f.reopen()
        for (count, inode) in files {
            var moves = 0
            var last = Self.listStorage(f, inode)
            for i in 0..<200 {
                let name = i % 2 == 0 ? Self.name(i * count / 200) : "user.x\(i)"
                try f.vfs.setxattr(inode: inode, name: name, value: [2], flags: [], caller: f.caller)
                if i % 3 == 0 { try f.vfs.removexattr(inode: inode, name: name) }
                let now = Self.listStorage(f, inode)
                if now != last { moves += 1 }
                last = now
            }
            #expect(moves <= 10, "the list of \(count) xattrs moved \(moves) times in 200 sets")
        }
        try f.reopen()
        let inode = files[1].1
        #expect(try f.vfs.getxattr(inode: inode, name: Self.name(2 * 5_000 / 200)) == [2])
        #expect(throws: VFSError(ENODATA)) { try f.vfs.getxattr(inode: inode, name: Self.name(0)) }
        #expect(try f.vfs.getxattr(inode: inode, name: "user.x1") == [2])
        #expect(try f.vfs.getxattr(inode: inode, name: Self.name(4_999)) == [1])
        #expect(f.store.check().isEmpty)
    }

    /// Another node of the identity receives the list's chunks with the revision and shows the same xattrs.
    @Test func aStoredListReplicatesWithItsRevision() throws {
        let a = try Fixture()
        let inode = try Self.file(a, "f", count: 2_000)
        try a.reopen()
        try a.vfs.setxattr(inode: inode, name: Self.name(7), value: [9], flags: [], caller: a.caller)
        try a.vfs.removexattr(inode: inode, name: Self.name(8))
        let copy = try Fixture(copying: a)
        try a.vfs.setxattr(inode: inode, name: Self.name(1_999), value: [5], flags: [], caller: a.caller)
        try copy.receive(try copy.missing(from: a), from: a)
        try copy.reopen()
        let there = try copy.vfs.lookup(parent: VirtualFileSystem.rootInode, name: "f", caller: .root).inode
        let names = { (f: Fixture, i: UInt64) in try f.vfs.listxattr(inode: i) }
        #expect(try names(copy, there) == names(a, inode))
        #expect(try copy.vfs.getxattr(inode: there, name: Self.name(1_999)) == [5])
        #expect(try copy.vfs.getxattr(inode: there, name: Self.name(7)) == [9])
        #expect(copy.store.check().isEmpty)
    }
}
