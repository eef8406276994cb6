import Glibc
import HypernetStore

/// The exclusive `flock` on `HOME/daemon.pid` that makes one process at a time the owner of a home's
/// store: the daemon holds it while it runs; `init` and an offline `fsck` hold it while they open the
/// store, so they never recover (discard staging of) a store a daemon is using.
///
/// The kernel drops the lock when the holder dies, so a stale pid file never blocks a start.
/// The holder unlinks the file before it lets go; whoever locked a file that was unlinked or replaced
/// in the meantime retries on the current one.
public final class HomeLock {
    public let path: String
    private var fd: Int32

    private init(path: String, fd: Int32) {
        self.path = path
        self.fd = fd
    }

    /// Takes the lock without waiting. Throws `.alreadyRunning` naming the holder's pid.
    public static func acquire(home: Home) throws(Failure) -> HomeLock {
        let path = home.pidPath
        while true {
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            if fd < 0 { throw Failure.system(path, status: .store) }
            if flock(fd, LOCK_EX | LOCK_NB) != 0 {
                let code = errno
                let holder = readPid(fd)
                close(fd)
                if code == EWOULDBLOCK {
                    throw Failure(
                        .alreadyRunning,
                        "a daemon is already running for \(home.path) (pid \(holder.map(String.init) ?? "unknown"))")
                }
                throw Failure.system(path, code, status: .store)
            }
            var locked = stat()
            var current = stat()
            if fstat(fd, &locked) == 0 && stat(path, &current) == 0
                && locked.st_ino == current.st_ino && locked.st_dev == current.st_dev
            {
                return HomeLock(path: path, fd: fd)
            }
            close(fd)
        }
    }

    /// The pid of the daemon holding the lock of `home`, or nil when no process holds it.
    public static func holder(home: Home) -> Int32? {
        let fd = open(home.pidPath, O_RDONLY | O_CLOEXEC)
        if fd < 0 { return nil }
        defer { close(fd) }
        guard flock(fd, LOCK_SH | LOCK_NB) != 0 else { return nil }
        return readPid(fd) ?? 0
    }

    /// Records this process as the holder (the daemon does; `init` and `fsck` leave the file empty).
    public func writePid() throws(Failure) {
        let text = Array("\(getpid())\n".utf8)
        if ftruncate(fd, 0) != 0 || pwrite(fd, text, text.count, 0) != text.count {
            throw Failure.system(path, status: .store)
        }
    }

    /// Unlinks the pid file and leaves the lock to be dropped when this process exits (the kernel closes the
    /// descriptor then): a `stop` waiting on the lock returns once the daemon is gone, not while it is still
    /// exiting.
    public func releaseAtExit() {
        guard fd >= 0 else { return }
        unlink(path)
        fd = -1
    }

    /// Unlinks the pid file, then drops the lock. Idempotent.
    public func release() {
        guard fd >= 0 else { return }
        unlink(path)
        close(fd)
        fd = -1
    }

    deinit { release() }

    private static func readPid(_ fd: Int32) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = pread(fd, &buffer, buffer.count, 0)
        guard n > 0 else { return nil }
        let text = String(decoding: buffer[0..<n], as: UTF8.self).trimmed()
        return Int32(text)
    }

    /// Blocks until the process holding `home`'s lock has released it (the daemon exited), or
    /// `timeoutSeconds` pass. Returns false on timeout. Waits in `flock`, never polls: a SIGALRM
    /// without SA_RESTART interrupts the call.
    public static func waitForRelease(openedFD fd: Int32, timeoutSeconds: UInt32) -> Bool {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        var previous = sigaction()
        sigaction(SIGALRM, &action, &previous)
        alarm(timeoutSeconds)
        let result = flock(fd, LOCK_SH)
        alarm(0)
        sigaction(SIGALRM, &previous, nil)
        return result == 0
    }
}

extension String {
    /// Without leading and trailing whitespace and newlines.
    func trimmed() -> String {
        var slice = Substring(self)
        while let first = slice.first, first.isWhitespace { slice.removeFirst() }
        while let last = slice.last, last.isWhitespace { slice.removeLast() }
        return String(slice)
    }
}
