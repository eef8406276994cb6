import Glibc
import HypernetVFS
import Testing

/// What `/.hypernet/` shows another local user: only what the live tree lets it see (docs/security.md, "Local
/// users").
@Suite struct LocalUsersTests {
    let other = Caller(uid: 1002, gid: 1002, pid: 1)

    func virtual(_ f: Fixture, _ name: String, as caller: Caller) throws -> UInt64 {
        let hypernet = try f.vfs.lookup(parent: VirtualFileSystem.rootInode, name: ".hypernet", caller: caller).inode
        return try f.vfs.lookup(parent: hypernet, name: name, caller: caller).inode
    }

    /// The content of `revisions/REV`, looked up and opened as `caller`.
    func revision(_ f: Fixture, _ rev: String, as caller: Caller) throws -> String {
        let inode = try f.vfs.lookup(parent: virtual(f, "revisions", as: caller), name: rev, caller: caller).inode
        let handle = try f.vfs.open(inode: inode, flags: O_RDONLY, caller: caller)
        defer { f.vfs.release(handle: handle) }
        return String(decoding: try f.vfs.read(handle: handle, offset: 0, size: 1 << 20), as: UTF8.self)
    }

    func head(_ f: Fixture, _ inode: UInt64) throws -> String {
        String(decoding: try f.vfs.getxattr(inode: inode, name: "user.hypernet.revision"), as: UTF8.self)
    }

    @Test func revisionsFollowTheLiveDocument() throws {
        let f = try Fixture()
        let root = VirtualFileSystem.rootInode
        let directory = try f.vfs.mkdir(parent: root, name: "private", mode: 0o700, caller: f.caller)
        let inner = try head(f, f.write("inner", Array("inner".utf8), parent: directory.inode))
        let file = try f.write("open", Array("open".utf8))
        let open = try head(f, file)

        #expect(try revision(f, inner, as: .root) == "inner")
        #expect(throws: VFSError(ENOENT)) { try revision(f, inner, as: other) }
        #expect(throws: VFSError(ENOENT)) { try revision(f, String(inner.prefix(8)), as: other) }
        #expect(try revision(f, open, as: other) == "open")

        let changes = AttributeChanges(mode: 0o640, gid: 1003)
        _ = try f.vfs.setattr(inode: file, changes: changes, handle: nil, caller: f.caller)
        #expect(throws: VFSError(EACCES)) { try revision(f, open, as: other) }
        var member = other
        member.groups = [1003]
        #expect(try revision(f, open, as: member) == "open")
    }

    @Test func eventsLeaveOutWhatTheReaderCannotRead() throws {
        let f = try Fixture()
        let root = VirtualFileSystem.rootInode
        let directory = try f.vfs.mkdir(parent: root, name: "private", mode: 0o700, caller: f.caller)
        let handle = try f.vfs.open(inode: virtual(f, "events", as: other), flags: O_RDONLY, caller: other)
        defer { f.vfs.release(handle: handle) }
        let reader = try #require(f.vfs.eventReader(handle: handle))
        try f.write("hidden-name", Array("x".utf8), parent: directory.inode)
        try f.write("last", Array("x".utf8))
        f.vfs.publishEvents()  // the daemon does this when revisions are committed
        var lines = ""
        while !lines.contains("\"/last\"") {
            let bytes = try #require(reader.read(maximum: 1 << 16, timeout: .seconds(10)), "no event for /last")
            lines += String(decoding: bytes, as: UTF8.self)
        }
        #expect(!lines.contains("hidden-name"))
    }
}
