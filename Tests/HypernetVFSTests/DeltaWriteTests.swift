import Glibc
import HypernetStore
import HypernetVFS
import Testing

/// The write path stores changed chunks and manifest nodes as deltas (issue 6, part 4): the three edits of
/// the benchmark add bytes in proportion to the edit, and every revision still reads back.
@Suite struct DeltaWriteTests {
    func packBytes(_ f: Fixture) -> Int {
        var st = stat()
        return stat(f.home.packsDirectory + "/00000001.pack", &st) == 0 ? Int(st.st_size) : 0
    }

    /// Writes `bytes` at `offset` of the existing file `inode` (no truncation) and fsyncs: one revision.
    func write(_ f: Fixture, inode: UInt64, _ bytes: [UInt8], at offset: UInt64) throws {
        let handle = try f.vfs.open(inode: inode, flags: O_WRONLY, caller: f.caller)
        _ = try bytes.withUnsafeBytes { b in try f.vfs.write(handle: handle, offset: offset, data: b) }
        try f.vfs.fsync(handle: handle, dataOnly: false)
        f.vfs.release(handle: handle)
    }

    @Test func smallEditsOfABigFileAddAboutTheEdit() throws {
        let f = try Fixture()
        var content = randomBytes(24 << 20, seed: 40)
        let inode = try f.write("big", content)
        var revisions = [content]

        let middle = content.count / 2
        content[middle] ^= 0x5a
        var before = packBytes(f)
        try write(f, inode: inode, [content[middle]], at: UInt64(middle))
        let edit = packBytes(f) - before
        revisions.append(content)

        let tail = randomBytes(100, seed: 41)
        before = packBytes(f)
        try write(f, inode: inode, tail, at: UInt64(content.count))
        let append = packBytes(f) - before
        content += tail
        revisions.append(content)

        content = randomBytes(1024, seed: 42) + content
        before = packBytes(f)
        try write(f, inode: inode, content, at: 0)
        let insert = packBytes(f) - before
        revisions.append(content)

        // Whole objects would be a 64 KiB chunk and an 18 KiB leaf at least.
        #expect(edit < 2 << 10, "1-byte edit added \(edit) bytes")
        #expect(append < 2 << 10, "100-byte append added \(append) bytes")
        #expect(insert < 8 << 10, "1 KiB insertion added \(insert) bytes")
        #expect(try f.read("big") == content)
        try f.reopen()
        #expect(try f.read("big") == content)
        // Every revision, oldest first, from a store with nothing cached.
        let history = try f.vfs.history(path: "big").reversed()
        #expect(history.count == revisions.count)
        for (revision, expected) in zip(history, revisions) {
            #expect(try f.vfs.content(path: "big", revision: revision.revision) == expected)
        }
    }

    /// The cut points of `bytes` (the end of each chunk) as the store's chunker places them.
    func cuts(_ bytes: [UInt8]) -> [Int] {
        var cuts: [Int] = []
        bytes.withUnsafeBytes { b in
            while (cuts.last ?? 0) < b.count {
                let rest = UnsafeRawBufferPointer(rebasing: b[(cuts.last ?? 0)...])
                cuts.append((cuts.last ?? 0) + (Chunker.standard.firstChunkLength(in: rest, atEnd: true) ?? rest.count))
            }
        }
        return cuts
    }

    /// Changing the bytes that made a cut point joins the two chunks around it into one new chunk: stored
    /// against both old chunks it costs about the edit (against the first alone, a whole chunk).
    @Test func anEditThatJoinsTwoChunksAddsAboutTheEdit() throws {
        let f = try Fixture()
        var content = randomBytes(4 << 20, seed: 43)
        let inode = try f.write("joined", content)
        let old = cuts(content)
        let cut = try #require(old.dropLast().min { abs($0 - content.count / 2) < abs($1 - content.count / 2) })
        let patch = randomBytes(16, seed: 44)
        content.replaceSubrange(cut - patch.count..<cut, with: patch)
        try #require(!cuts(content).contains(cut), "the patch must remove the cut point")
        let before = packBytes(f)
        try write(f, inode: inode, patch, at: UInt64(cut - patch.count))
        let added = packBytes(f) - before
        #expect(added < 2 << 10, "an edit joining two chunks added \(added) bytes")
        try f.reopen()
        #expect(try f.read("joined") == content)
    }
}
