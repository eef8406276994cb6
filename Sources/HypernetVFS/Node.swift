import Glibc
import HypernetCrypto
import HypernetModel
import HypernetStore

/// One inode: a document as the kernel sees it. Lives in `VirtualFileSystem.State`, under its lock.
struct Node {
    var record: DocumentRecord
    /// Directories: entries by name. Files and symlinks: empty.
    var children = DirectoryEntries()
    var subdirectories = 0
    /// The directory holding this node, and its name there: its first name.
    var parent: UInt64
    var name: String
    /// Files, symlinks and special files: the names it has besides the first (hard links), in no order.
    var otherNames: [Link] = []
    /// Kernel references (lookup counts); the node is dropped when this is 0 and it is unlinked and closed.
    var lookups: UInt64 = 0
    /// Set while any handle (or a truncate) uses a regular file's content.
    var content: FileContent?
    var openCount = 0
    /// While the content is written: its holes as they stand (the metadata's are those of the last commit).
    var stagedHoleBytes: UInt64?
    /// False once unlinked/removed; the node stays while the kernel or a handle still refers to it.
    var linked = true
    /// A file opened with O_TMPFILE that `link` has not named yet (`Unnamed.swift`); not `linked`.
    var unnamed = false
    /// A metadata change (mode, times, xattrs) not yet in a revision.
    var metadataChanged = false
    /// Directories: the heads whose merge the entries show (set when received revisions are shown). The next
    /// revision names these as parents — not every stored head, which may include one not shown yet.
    var mergedHeads: [RevisionID] = []
    /// Directories: the same-named directories merged into this one in the view (`Placement.merged`), each with
    /// the heads whose merge showed; they end with the next directory revision this node writes.
    var mergedDirectories: [DocumentID: [RevisionID]] = [:]

    var inode: UInt64 { record.inode }
    var kind: RevisionKind { record.kind }
    /// Removed by a peer and not open: the kernel reaches it only by a name it cached before the removal's
    /// invalidation landed (`applyRemote` tells it after the tree changed). `ESTALE` makes it look the name up
    /// again, so an open finds the name gone (and creates it, with `O_CREAT`), as on a local file system.
    var isStale: Bool { !linked && kind == .tombstone && content == nil }
    var isDirectory: Bool { record.kind == .directory }

    func attributes() -> Attributes {
        let m = record.metadata
        let nlink: UInt32 = isDirectory ? UInt32(2 + subdirectories) : (linked ? UInt32(1 + otherNames.count) : 0)
        let size: UInt64 = record.kind == .symlink ? UInt64(m.symlinkTarget.count) : m.size
        // What is stored: holes count for nothing.
        let stored = size - min(size, stagedHoleBytes ?? m.content?.holeBytes ?? 0)
        return Attributes(
            inode: inode, mode: m.mode, nlink: nlink, uid: m.uid, gid: m.gid, size: size,
            blocks: (stored + 511) / 512,
            atime: Timestamp(seconds: record.atimeSeconds, nanoseconds: Int32(record.atimeNanoseconds)),
            mtime: Timestamp(seconds: m.mtimeSeconds, nanoseconds: Int32(m.mtimeNanoseconds)),
            ctime: Timestamp(seconds: m.ctimeSeconds, nanoseconds: Int32(m.ctimeNanoseconds)), rdev: m.rdev)
    }

    mutating func touch(modified: Bool = true, changed: Bool = true, at now: Timestamp = .now()) {
        record.metadata.touch(modified: modified, changed: changed, at: now)
    }

    /// Every name of a linked node, the first first.
    var names: [Link] { linked ? [Link(parent: parent, name: name)] + otherNames : [] }
}

/// One name of a node: a directory and an entry in it. Names compare as bytes, as directory entries do.
struct Link: Hashable {
    var parent: UInt64
    var name: String

    static func == (a: Link, b: Link) -> Bool { a.parent == b.parent && a.name.utf8.elementsEqual(b.name.utf8) }

    func hash(into hasher: inout Hasher) {
        hasher.combine(parent)
        for byte in name.utf8 { hasher.combine(byte) }
    }
}

extension RevisionMetadata {
    mutating func touch(modified: Bool = true, changed: Bool = true, at now: Timestamp = .now()) {
        if modified {
            mtimeSeconds = now.seconds
            mtimeNanoseconds = UInt32(now.nanoseconds)
        }
        if changed {
            ctimeSeconds = now.seconds
            ctimeNanoseconds = UInt32(now.nanoseconds)
        }
    }

    static func new(mode: UInt32, uid: UInt32, gid: UInt32, at now: Timestamp = .now()) -> RevisionMetadata {
        RevisionMetadata(
            mode: mode, uid: uid, gid: gid, mtimeSeconds: now.seconds, mtimeNanoseconds: UInt32(now.nanoseconds),
            ctimeSeconds: now.seconds, ctimeNanoseconds: UInt32(now.nanoseconds), size: 0, quorum: 0, xattrs: [],
            content: nil, symlinkTarget: [])
    }
}
