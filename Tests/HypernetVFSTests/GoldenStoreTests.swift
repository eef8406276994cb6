import Glibc
import HypernetStore
import HypernetVFS
import Logging
import Testing

/// A store written by format version 1 (`Fixtures/store-v1.tar.gz`, made with `hypernet mount`: two saves
/// of hello.txt, a user xattr on it, docs/lines.txt, a symlink). Every later version must still read it.
@Suite struct GoldenStoreTests {
    @Test func version1StoreStillReads() throws {
        let fixture = String(#filePath.dropLast("GoldenStoreTests.swift".count)) + "Fixtures/store-v1.tar.gz"
        var template = Array("/tmp/hypernet-golden-XXXXXX".utf8CString)
        let path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        defer { _ = system("rm -rf '\(path)'") }
        #expect(system("tar -xzf '\(fixture)' -C '\(path)'") == 0)
        let home = Home(path: path)
        let keyring = try Keyring.load(directory: home.keysDirectory)
        let store = try Store(home: home, keyring: keyring, logger: Logger(label: "golden"))
        #expect(store.check() == [])
        let vfs = try VirtualFileSystem(
            store: store, configuration: VFSConfiguration(), logger: Logger(label: "golden"))
        defer { vfs.shutdown() }

        func read(_ inode: UInt64) throws -> String {
            let h = try vfs.open(inode: inode, flags: O_RDONLY, caller: .root)
            defer { vfs.release(handle: h) }
            return String(decoding: try vfs.read(handle: h, offset: 0, size: 1 << 20), as: UTF8.self)
        }
        let hello = try vfs.lookup(parent: 1, name: "hello.txt", caller: .root).inode
        #expect(try read(hello) == "hello, v2\n")
        #expect(String(decoding: try vfs.getxattr(inode: hello, name: "user.color"), as: UTF8.self) == "blue")
        let history = try vfs.history(path: "hello.txt")
        #expect(history.count == 3)
        #expect(try vfs.content(path: "hello.txt", revision: history.last!.revision) == Array("hello, v1\n".utf8))

        let docs = try vfs.lookup(parent: 1, name: "docs", caller: .root).inode
        let lines = try vfs.lookup(parent: docs, name: "lines.txt", caller: .root).inode
        #expect(try read(lines) == (1...20000).map { "line \($0)\n" }.joined())
        #expect(try vfs.readlink(inode: vfs.lookup(parent: 1, name: "link", caller: .root).inode) == "hello.txt")
    }
}
