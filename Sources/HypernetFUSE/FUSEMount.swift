import CFuse3
import Glibc
import HypernetVFS
import Logging
import Synchronization

/// A mount failure, in one line a user can act on.
public struct FUSEError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One low-level libfuse session serving a `VirtualFileSystem` at a mountpoint.
///
/// Lifecycle: `mount()` once, then `run()` on a thread of the caller's choosing until the mount goes
/// away (`fusermount3 -u`, `umount`) or `requestExit()` is called from any thread.
public final class FUSEMount: Sendable {
    /// Worker threads serving requests; each holds a 1 MiB request buffer.
    static let maxThreads: UInt32 = 8
    static let maxIdleThreads: UInt32 = 4

    private let fileSystem: VirtualFileSystem
    private let mountpoint: String
    private let options: [String]
    fileprivate let logger: Logger
    fileprivate let state = Mutex(State.idle)
    /// Held while a cache notification uses the session, so teardown never destroys it underneath.
    private let notifying = Mutex(())

    fileprivate enum State {
        case idle
        case mounted(Session)
        case running(Session)
        /// `requestExit()` ran: the session is told to exit; the loop, if `serving`, is ending.
        case stopped(Session, serving: Bool)
        /// `requestExit()` came before `mount()`: nothing is mounted, and nothing will be.
        case cancelled
        case finished
    }

    /// A live libfuse session. Unchecked because `OpaquePointer` is not Sendable; it is safe because
    /// `fuse_session_exit` is the only call made from other threads (it sets a flag), and the loop,
    /// unmount and destroy each happen once, ordered by `state`.
    fileprivate struct Session: @unchecked Sendable {
        let pointer: OpaquePointer
        let adapter: Unmanaged<Adapter>
        let canonicalMountpoint: String
    }

    /// `options`: the `-o` values given by the user (e.g. "allow_other"); `default_permissions`,
    /// `fsname=hypernet`, `subtype=hypernet` are always added.
    public init(fileSystem: VirtualFileSystem, mountpoint: String, options: [String], logger: Logger) {
        self.fileSystem = fileSystem
        self.mountpoint = mountpoint
        self.options = options
        self.logger = logger
    }

    deinit {
        // mount() without run(): unmount what was mounted.
        switch state.withLock({ $0 }) {
        case .mounted(let session), .stopped(let session, serving: false): teardown(session)
        case .idle, .running, .stopped(_, serving: true), .cancelled, .finished: break
        }
    }

    /// Creates the session and mounts. Throws a `FUSEError` saying what to do when the mountpoint is
    /// missing, not a directory or already a FUSE mount, when `/dev/fuse` is missing or closed to us,
    /// or when libfuse refuses the options or the mount (its own message is included).
    public func mount() throws(FUSEError) {
        try state.withLock { state throws(FUSEError) in
            switch state {
            case .idle: state = .mounted(try makeSession())
            case .cancelled: throw FUSEError("not mounting \(mountpoint): shutdown was requested")
            case .mounted, .running, .stopped, .finished: preconditionFailure("FUSEMount.mount() called twice")
            }
        }
        logger.debug("mounted", metadata: ["mountpoint": "\(mountpoint)"])
    }

    private func makeSession() throws(FUSEError) -> Session {
        let canonical = try Self.checkMountpoint(mountpoint)
        try Self.checkDevice()
        LibfuseLog.install(logger)
        _ = LibfuseLog.takeLastError()

        let allOptions = options + ["default_permissions", "fsname=hypernet", "subtype=hypernet"]
        let arguments = ["hypernet", "-o", allOptions.joined(separator: ",")]
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        defer { for argument in argv { free(argument) } }
        var ops = operations()
        let adapter = Unmanaged.passRetained(Adapter(fileSystem: fileSystem, logger: logger))
        let session = argv.withUnsafeMutableBufferPointer { argv in
            // libfuse parses a copy (`allocated` 0 means it never frees ours) and leaves its own in `args`.
            var args = fuse_args(argc: Int32(argv.count), argv: argv.baseAddress, allocated: 0)
            defer { fuse_opt_free_args(&args) }
            return fuse_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size, adapter.toOpaque())
        }
        guard let session else {
            adapter.release()
            throw FUSEError(
                "invalid mount options \(allOptions.joined(separator: ","))"
                    + (LibfuseLog.takeLastError().map { ": \($0)" } ?? ""))
        }
        if fuse_session_mount(session, canonical) != 0 {
            fuse_session_destroy(session)
            adapter.release()
            throw FUSEError(
                "cannot mount \(canonical)" + (LibfuseLog.takeLastError().map { ": \($0)" } ?? ""))
        }
        // O_TMPFILE reaches `opCreate` (CFuse3/shim.h).
        let rc = hypernet_fuse_serve_tmpfile(session)
        if rc != 0 {
            fuse_session_unmount(session)
            fuse_session_destroy(session)
            adapter.release()
            throw FUSEError("cannot serve \(canonical): \(String(cString: strerror(-rc)))")
        }
        return Session(pointer: session, adapter: adapter, canonicalMountpoint: canonical)
    }

    /// The canonical path of an existing directory that is not already a FUSE mount.
    private static func checkMountpoint(_ path: String) throws(FUSEError) -> String {
        guard let resolved = realpath(path, nil) else {
            let error = errno
            switch error {
            case ENOENT: throw FUSEError("mountpoint \(path) does not exist")
            case ENOTCONN:
                throw FUSEError("mountpoint \(path) is busy: a dead FUSE mount is left there (fusermount3 -u \(path))")
            default: throw FUSEError("mountpoint \(path): \(String(cString: strerror(error)))")
            }
        }
        defer { free(resolved) }
        let canonical = String(cString: resolved)
        var info = stat()
        guard stat(canonical, &info) == 0 else {
            throw FUSEError("mountpoint \(path): \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & S_IFMT == S_IFDIR else { throw FUSEError("mountpoint \(path) is not a directory") }
        if let type = MountTable.fileSystemType(at: canonical), type.hasPrefix("fuse") {
            throw FUSEError("mountpoint \(canonical) is busy: \(type) is mounted there")
        }
        return canonical
    }

    private static func checkDevice() throws(FUSEError) {
        guard access("/dev/fuse", F_OK) == 0 else {
            throw FUSEError("no /dev/fuse: load the fuse kernel module, or give the container the FUSE device")
        }
        // libfuse opens it itself before mounting (fusermount3 only does the mount(2) for non-root).
        let fd = open("/dev/fuse", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw FUSEError("cannot open /dev/fuse: \(String(cString: strerror(errno)))") }
        close(fd)
    }

    /// Serves requests on a multi-threaded loop until unmounted or `requestExit()`; returns normally then.
    public func run() throws(FUSEError) {
        let (session, stoppedBeforeRun): (Session?, Bool) = state.withLock { state in
            switch state {
            case .mounted(let session):
                state = .running(session)
                return (session, false)
            case .stopped(let session, serving: false):
                state = .finished
                return (session, true)
            case .cancelled: return (nil, false)
            case .idle: preconditionFailure("FUSEMount.run() before mount()")
            case .running, .stopped(_, serving: true), .finished: preconditionFailure("FUSEMount.run() called twice")
            }
        }
        guard let session else { return }
        if stoppedBeforeRun { return teardown(session) }

        let config = fuse_loop_cfg_create()
        fuse_loop_cfg_set_max_threads(config, Self.maxThreads)
        fuse_loop_cfg_set_idle_threads(config, Self.maxIdleThreads)
        fuse_loop_cfg_set_clone_fd(config, 0)
        let result = fuse_session_loop_mt(session.pointer, config)
        fuse_loop_cfg_destroy(config)

        // From here requestExit() does nothing, so nothing else touches the session.
        state.withLock { $0 = .finished }
        teardown(session)
        logger.debug("unmounted", metadata: ["mountpoint": "\(session.canonicalMountpoint)"])
        if result < 0 {
            throw FUSEError("serving \(session.canonicalMountpoint) failed: \(String(cString: strerror(-result)))")
        }
    }

    /// Thread-safe, idempotent: makes `run()` return; `run()` then unmounts.
    ///
    /// `fuse_session_exit` only sets a flag that workers check between requests, and they sit blocked
    /// reading `/dev/fuse`. One request wakes one: it is answered, that worker sees the flag and leaves
    /// the loop, and libfuse cancels the others. `statfs` is that request: never cached by the kernel,
    /// no permission check. Unmounting here instead would not wake them while a file or a working
    /// directory in the mount holds it (lazy unmount), and aborting needs fusectl, often not mounted.
    /// Returns once that request is answered.
    public func requestExit() {
        let wake: String? = state.withLock { state in
            switch state {
            case .idle:
                state = .cancelled
                return nil
            case .mounted(let session):
                // No loop yet: a request would wait for one. run() tears down without serving.
                fuse_session_exit(session.pointer)
                state = .stopped(session, serving: false)
                return nil
            case .running(let session):
                fuse_session_exit(session.pointer)
                state = .stopped(session, serving: true)
                return session.canonicalMountpoint
            case .stopped, .cancelled, .finished:
                return nil
            }
        }
        // Outside the lock: the reply may come only once run() has torn down (if the kernel had not
        // finished FUSE_INIT yet), and run() takes the lock before that.
        guard let wake else { return }
        var ignored = statvfs()
        _ = statvfs(wake, &ignored)
    }

    /// libfuse's unmount closes `/dev/fuse` first, which ends the connection (open files in the mount
    /// then fail with ENOTCONN), then unmounts lazily; it skips the unmount when it is already gone.
    private func teardown(_ session: Session) {
        notifying.withLock { _ in }
        fuse_session_unmount(session.pointer)
        fuse_session_destroy(session.pointer)
        session.adapter.release()
    }
}

extension FUSEMount: KernelCache {
    /// Drops the kernel's cached attributes and pages of `inode` (a revision from a peer changed it).
    public func invalidate(inode: UInt64) {
        withLiveSession { session in
            let rc = fuse_lowlevel_notify_inval_inode(session, inode, 0, 0)
            if rc != 0 && rc != -ENOENT { logger.debug("notify_inval_inode: \(String(cString: strerror(-rc)))") }
        }
    }

    /// Drops the kernel's cached lookup of `name` in `parent` (added, removed or replaced by a peer).
    public func invalidate(parent: UInt64, name: String) {
        let bytes = FileName.encode(name)
        withLiveSession { session in
            let rc = bytes.withUnsafeBufferPointer { b in
                b.withMemoryRebound(to: CChar.self) {
                    fuse_lowlevel_notify_inval_entry(session, parent, $0.baseAddress, b.count)
                }
            }
            if rc != 0 && rc != -ENOENT { logger.debug("notify_inval_entry: \(String(cString: strerror(-rc)))") }
        }
    }

    /// Runs `body` with the session while the loop serves; teardown waits for it (`notifying`).
    private func withLiveSession(_ body: (OpaquePointer) -> Void) {
        notifying.withLock { _ in
            guard case .running(let session) = state.withLock({ $0 }) else { return }
            body(session.pointer)
        }
    }
}
