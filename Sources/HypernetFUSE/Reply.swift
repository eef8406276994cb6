import CFuse3
import Glibc
import HypernetStore
import HypernetVFS
import Logging

/// What every callback needs. Travels as the session's userdata (`Unmanaged`, retained by `FUSEMount`
/// for the life of the session), so no callback reaches for a global.
final class Adapter: Sendable {
    let fileSystem: VirtualFileSystem
    let logger: Logger

    init(fileSystem: VirtualFileSystem, logger: Logger) {
        self.fileSystem = fileSystem
        self.logger = logger
    }
}

/// How long the kernel may cache names and attributes. Short, because other nodes change the tree
/// behind the kernel's back and `tail -f` polls `fstat` once a second.
let cacheTimeout: Double = 1.0

/// `st_blksize` reported for every inode: the I/O size tools like `cp` pick (the average chunk size).
let preferredBlockSize = 64 * 1024

/// One kernel request. Every op replies exactly once, through exactly one of the `reply` methods
/// (or `replyNone` for forget). Pointer arguments are copied into Swift values before the VFS call.
struct Request {
    let raw: fuse_req_t
    let operation: StaticString

    init(_ raw: fuse_req_t?, _ operation: StaticString) {
        // libfuse never passes a NULL request.
        self.raw = raw!
        self.operation = operation
    }

    var adapter: Adapter { Unmanaged<Adapter>.fromOpaque(fuse_req_userdata(raw)!).takeUnretainedValue() }
    var fileSystem: VirtualFileSystem { adapter.fileSystem }

    /// Who makes the request. Supplementary groups cost a read of `/proc/PID/task/TID/status`, so
    /// they are fetched only where the VFS uses them (the set-gid rules of chmod/chown, `/.hypernet/`).
    func caller(withGroups: Bool = false) -> Caller {
        let context = fuse_req_ctx(raw)!.pointee
        var caller = Caller(uid: context.uid, gid: context.gid, pid: context.pid)
        if withGroups { caller.groups = supplementaryGroups() }
        return caller
    }

    private func supplementaryGroups() -> [UInt32] {
        var capacity = 32
        while true {
            var groups = [gid_t](repeating: 0, count: capacity)
            let count = fuse_req_getgroups(raw, Int32(capacity), &groups)
            if count < 0 { return [] }  // -ENOSYS: the kernel does not say; the VFS then knows none.
            if Int(count) <= capacity { return Array(groups.prefix(Int(count))) }
            capacity = Int(count)
        }
    }

    /// Decodes an xattr name from the kernel. Xattr names are UTF-8 strings; other byte sequences are
    /// refused with EILSEQ rather than silently repaired into another name.
    /// On failure the request has been replied to and nil is returned.
    func string(_ pointer: UnsafePointer<CChar>?) -> String? {
        if let pointer, let value = String(validatingCString: pointer) { return value }
        reply(errno: EILSEQ)
        return nil
    }

    /// Decodes a file name or symlink target: any bytes, kept losslessly (`FileName`).
    func name(_ pointer: UnsafePointer<CChar>?) -> String? {
        guard let pointer else {
            reply(errno: EINVAL)
            return nil
        }
        return FileName.decode(UnsafeRawBufferPointer(start: pointer, count: strlen(pointer)))
    }

    /// Runs `body` with an `Interruption` that a FUSE_INTERRUPT for this request fires, for a wait that must
    /// end when the caller gets a signal (otherwise a fatal signal leaves it in uninterruptible sleep).
    /// Unregistering takes the request's lock, which libfuse holds while it calls the function: after it,
    /// no call is running or to come, so `interruption` need not outlive `body`.
    func interruptible<T>(_ body: (Interruption) throws -> T) rethrows -> T {
        let interruption = Interruption()
        fuse_req_interrupt_func(
            raw, { _, data in Unmanaged<Interruption>.fromOpaque(data!).takeUnretainedValue().interrupt() },
            Unmanaged.passUnretained(interruption).toOpaque())
        defer { fuse_req_interrupt_func(raw, nil, nil) }
        return try withExtendedLifetime(interruption) { try body(interruption) }
    }

    // MARK: Replies

    /// The single error path: a `VFSError` is sent as its errno; anything else is a bug, logged, EIO.
    func reply(error: any Error) {
        reply(errno: errno(for: error))
    }

    func reply(errno value: Int32) {
        adapter.logger.trace("reply", metadata: ["op": "\(operation)", "errno": "\(value)"])
        fuse_reply_err(raw, value)
    }

    func replyOK() { fuse_reply_err(raw, 0) }

    func replyNone() { fuse_reply_none(raw) }

    /// Replies with a new entry; the VFS counted one lookup for it, so if the kernel never receives the
    /// reply (the request was interrupted) the count is given back. An entry that depends on the caller is not
    /// cached: the kernel looks it up again for the next one.
    func reply(entry attributes: Attributes) {
        var entry = fuse_entry_param(attributes)
        if fileSystem.dependsOnCaller(inode: attributes.inode) {
            (entry.attr_timeout, entry.entry_timeout) = (0, 0)
        }
        if fuse_reply_entry(raw, &entry) != 0 { fileSystem.forget(inode: attributes.inode, count: 1) }
    }

    func reply(attributes: Attributes) {
        var st = stat(attributes)
        fuse_reply_attr(raw, &st, cacheTimeout)
    }

    func reply(bytes: [UInt8]) {
        bytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { _ = fuse_reply_buf(raw, $0.baseAddress, $0.count) }
        }
    }

    /// Replies to a getxattr/listxattr: a size probe (`size == 0`) gets the length, a short buffer ERANGE.
    func reply(xattr value: [UInt8], size: Int) {
        if size == 0 {
            fuse_reply_xattr(raw, value.count)
        } else if value.count > size {
            reply(errno: ERANGE)
        } else {
            reply(bytes: value)
        }
    }

    private func errno(for error: any Error) -> Int32 {
        if let error = error as? VFSError, error.errno > 0 { return error.errno }
        adapter.logger.warning(
            "unexpected error, replying EIO", metadata: ["op": "\(operation)", "error": "\(error)"])
        return EIO
    }
}

extension fuse_entry_param {
    init(_ attributes: Attributes) {
        self.init()
        ino = attributes.inode
        generation = 0  // inode numbers are never reused
        attr = stat(attributes)
        attr_timeout = cacheTimeout
        entry_timeout = cacheTimeout
    }
}

extension stat {
    init(_ attributes: Attributes) {
        self.init()
        st_ino = ino_t(attributes.inode)
        st_mode = attributes.mode
        st_rdev = dev_t(attributes.rdev)
        st_nlink = UInt(attributes.nlink)
        st_uid = attributes.uid
        st_gid = attributes.gid
        st_size = off_t(clamping: attributes.size)
        st_blocks = blkcnt_t(clamping: attributes.blocks)
        st_blksize = blksize_t(preferredBlockSize)
        st_atim = timespec(attributes.atime)
        st_mtim = timespec(attributes.mtime)
        st_ctim = timespec(attributes.ctime)
    }
}

extension timespec {
    init(_ time: Timestamp) {
        self.init(tv_sec: Int(time.seconds), tv_nsec: Int(time.nanoseconds))
    }
}

extension Timestamp {
    init(_ time: timespec) {
        self.init(seconds: Int64(time.tv_sec), nanoseconds: Int32(time.tv_nsec))
    }
}
