import Glibc

/// A POSIX errno raised by a filesystem operation; the FUSE adapter replies with it unchanged.
public struct VFSError: Error, Sendable, Equatable, CustomStringConvertible {
    public let errno: Int32
    public init(_ errno: Int32) { self.errno = errno }
    public var description: String { String(cString: strerror(errno)) }
}

/// Seconds and nanoseconds since the Unix epoch.
public struct Timestamp: Sendable, Hashable, Comparable {
    public var seconds: Int64
    public var nanoseconds: Int32
    public init(seconds: Int64, nanoseconds: Int32) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }
    public static func now() -> Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Timestamp(seconds: Int64(ts.tv_sec), nanoseconds: Int32(ts.tv_nsec))
    }
    public static func < (a: Timestamp, b: Timestamp) -> Bool {
        (a.seconds, a.nanoseconds) < (b.seconds, b.nanoseconds)
    }
}

/// What `stat` reports for one inode.
public struct Attributes: Sendable, Equatable {
    public var inode: UInt64
    /// Full `st_mode`: file type bits (`S_IFREG`, `S_IFDIR`, `S_IFLNK`, `S_IFIFO`...) and permission bits.
    public var mode: UInt32
    public var nlink: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var size: UInt64
    /// In 512-byte units, as `st_blocks`.
    public var blocks: UInt64
    public var atime: Timestamp
    public var mtime: Timestamp
    public var ctime: Timestamp
    /// Device nodes: the device number (`st_rdev`).
    public var rdev: UInt64

    public init(
        inode: UInt64, mode: UInt32, nlink: UInt32, uid: UInt32, gid: UInt32, size: UInt64,
        blocks: UInt64, atime: Timestamp, mtime: Timestamp, ctime: Timestamp, rdev: UInt64 = 0
    ) {
        self.inode = inode
        self.mode = mode
        self.nlink = nlink
        self.uid = uid
        self.gid = gid
        self.size = size
        self.blocks = blocks
        self.atime = atime
        self.mtime = mtime
        self.ctime = ctime
        self.rdev = rdev
    }
}

/// Who makes a request (from `fuse_req_ctx`).
public struct Caller: Sendable {
    public var uid: UInt32
    public var gid: UInt32
    public var pid: Int32
    /// Supplementary groups, when known; used for the set-gid rules of chmod/chown and for what `/.hypernet/` shows.
    public var groups: [UInt32]
    public init(uid: UInt32, gid: UInt32, pid: Int32, groups: [UInt32] = []) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
        self.groups = groups
    }
    public static let root = Caller(uid: 0, gid: 0, pid: 0)
}

public enum TimeChange: Sendable, Equatable {
    case now
    case set(Timestamp)
}

/// The fields a `setattr` changes; nil leaves a field as it is.
public struct AttributeChanges: Sendable {
    public var mode: UInt32?
    public var uid: UInt32?
    public var gid: UInt32?
    public var size: UInt64?
    public var atime: TimeChange?
    public var mtime: TimeChange?
    /// Set when the kernel asks to clear set-uid/set-gid bits (FUSE_SET_ATTR_KILL_SUID/SGID).
    public var killSetID: Bool
    public init(
        mode: UInt32? = nil, uid: UInt32? = nil, gid: UInt32? = nil, size: UInt64? = nil,
        atime: TimeChange? = nil, mtime: TimeChange? = nil, killSetID: Bool = false
    ) {
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.atime = atime
        self.mtime = mtime
        self.killSetID = killSetID
    }
}

/// One directory entry as `readdir`/`readdirplus` return it.
public struct DirectoryEntry: Sendable {
    public var name: String
    public var attributes: Attributes
    /// The offset to pass to the next `readdir` call to continue after this entry.
    public var nextOffset: UInt64
    public init(name: String, attributes: Attributes, nextOffset: UInt64) {
        self.name = name
        self.attributes = attributes
        self.nextOffset = nextOffset
    }
}

public struct FileSystemStatistics: Sendable {
    public var blockSize: UInt64
    public var blocks: UInt64
    public var blocksFree: UInt64
    public var blocksAvailable: UInt64
    public var files: UInt64
    public var filesFree: UInt64
    public var nameMax: UInt64
}

public struct RenameFlags: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// RENAME_NOREPLACE
    public static let noReplace = RenameFlags(rawValue: 1)
    /// RENAME_EXCHANGE
    public static let exchange = RenameFlags(rawValue: 2)
}

public struct XattrFlags: OptionSet, Sendable {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }
    /// XATTR_CREATE: fail with EEXIST if the attribute exists.
    public static let create = XattrFlags(rawValue: 1)
    /// XATTR_REPLACE: fail with ENODATA if it does not.
    public static let replace = XattrFlags(rawValue: 2)
}

/// One line of `hypernet log`.
public struct HistoryEntry: Sendable, Codable, Equatable {
    public var revision: String
    /// HLC wall time, ISO-8601 UTC.
    public var time: String
    public var author: String
    public var size: UInt64
    public var parents: [String]
    public var kind: String
    public var isHead: Bool
    /// Made invalid by a permission block learnt after it was stored (docs/security.md, "Rights").
    public var isRefused: Bool
    /// Its content was released by the retention policy: `cat --rev` and `restore` of it fail.
    public var isReleased = false
    /// How this node's user calls the author: "me", a contact's name; nil for anyone else. Filled in by the daemon.
    public var authorName: String? = nil
}

/// One unresolved conflict: a head of the document at `path` other than the one shown.
public struct ConflictEntry: Sendable, Codable, Equatable {
    /// Relative to the mount root ("a/b.txt"); the CLI shows it under the mountpoint.
    public var path: String
    public var revision: String
    /// HLC wall time, ISO-8601 UTC.
    public var time: String
    public var author: String
    /// As `HistoryEntry.authorName`.
    public var authorName: String?

    init(path: String, _ head: HistoryEntry) {
        self.path = path
        revision = head.revision
        time = head.time
        author = head.author
        authorName = head.authorName
    }
}
