import Glibc
import HypernetStore
import Synchronization

/// The readiness pipe between `hypernet mount` and the daemon it starts. The child writes exactly
/// one line: `ready`, or `error CODE MESSAGE` (CODE an `ExitStatus`). Under a systemd `Type=notify` unit
/// the same moments, and the start of a stop, go to the service manager as well.
public final class Readiness: Sendable {
    /// Names the descriptor number of the pipe's write end in the daemon's environment.
    public static let environmentVariable = "HYPERNET_READY_FD"

    /// The write end, until the one line is written.
    private let fd: Mutex<Int32?>
    private let serviceManager: ServiceNotifier

    private init(fd: Int32?, serviceManager: ServiceNotifier) {
        self.fd = Mutex(fd)
        self.launched = fd != nil
        self.serviceManager = serviceManager
    }

    /// The pipe named in the environment, if this process was started by `hypernet mount`, and the
    /// service manager's socket (`$NOTIFY_SOCKET`), if any. Removes both variables and marks the
    /// descriptor close-on-exec so nothing we start inherits them.
    public static func fromEnvironment() -> Readiness {
        let serviceManager = ServiceNotifier.fromEnvironment()
        defer { unsetenv(environmentVariable) }
        guard let raw = getenv(environmentVariable), let fd = Int32(String(cString: raw)), fd > 2,
            fcntl(fd, F_SETFD, FD_CLOEXEC) == 0
        else {
            return Readiness(fd: nil, serviceManager: serviceManager)
        }
        return Readiness(fd: fd, serviceManager: serviceManager)
    }

    /// Whether this process was started by `hypernet mount` (its stderr is then the log).
    public let launched: Bool

    public func ready() {
        send("ready\n")
        serviceManager.ready()
    }

    /// The daemon has begun to stop (a signal, `stop`, an unmount): tells the service manager, once.
    public func stopping() { serviceManager.stopping() }

    /// Reports `failure`; ignored once `ready` was sent.
    public func fail(_ failure: Failure) {
        let oneLine = failure.message.split(separator: "\n").joined(separator: " ")
        send("error \(failure.status.rawValue) \(oneLine)\n")
    }

    private func send(_ line: String) {
        fd.withLock { fd in
            guard let descriptor = fd else { return }
            _ = UnixSocket.writeAll(descriptor, Array(line.utf8), isSocket: false)
            close(descriptor)
            fd = nil
        }
    }
}

/// Starts the daemon in the background for `hypernet mount` and waits for its readiness line.
public enum Launcher {
    /// Re-executes this program (`/proc/self/exe`) with `arguments` in a new session, stdin from
    /// /dev/null and stdout/stderr appended to `HOME/hypernet.log`. Returns once the child reports
    /// the mount ready; throws the child's error (or its early exit) otherwise.
    public static func startDaemon(home: Home, arguments: [String]) throws(Failure) {
        // The child gets the write end as descriptor 3 (dup2 clears close-on-exec on the copy).
        let childFD: Int32 = 3
        let pipe = try UnixSocket.closeOnExecPipe()
        var pipeFDs = [pipe.read, pipe.write]
        // With stdin/stdout closed (some CI runners) the pipe could land on 0-3, which the file
        // actions below overwrite: move both ends above them.
        for index in 0..<2 where pipeFDs[index] <= childFD {
            let moved = fcntl(pipeFDs[index], F_DUPFD_CLOEXEC, childFD + 1)
            if moved < 0 { throw Failure.system("pipe") }
            close(pipeFDs[index])
            pipeFDs[index] = moved
        }
        let (readFD, writeFD) = (pipeFDs[0], pipeFDs[1])
        defer { close(readFD) }

        markDescriptorsCloseOnExec()
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, home.logPath, O_WRONLY | O_APPEND | O_CREAT, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        posix_spawn_file_actions_adddup2(&actions, writeFD, childFD)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // POSIX_SPAWN_SETSID (glibc 2.26+) is a macro under _GNU_SOURCE that Swift does not import.
        let setsid: Int16 = 0x80
        posix_spawnattr_setflags(&attributes, setsid)

        var environment: [String] = []
        var entry = environ
        while let pointer = entry.pointee {
            let text = String(cString: pointer)
            if !text.hasPrefix(Readiness.environmentVariable + "=") { environment.append(text) }
            entry += 1
        }
        environment.append("\(Readiness.environmentVariable)=\(childFD)")

        var pid: pid_t = 0
        let spawned = withCStrings(["hypernet"] + arguments) { argv in
            withCStrings(environment) { envp in
                posix_spawn(&pid, "/proc/self/exe", &actions, &attributes, argv, envp)
            }
        }
        close(writeFD)
        if spawned != 0 { throw Failure.system("starting the daemon", spawned) }

        var reader = LineReader(fd: readFD, limit: 64 * 1024)
        switch reader.next() {
        case .line(let bytes):
            let line = String(decoding: bytes, as: UTF8.self)
            if line == "ready" { return }
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            let parts = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
            if parts.count == 3, parts[0] == "error", let code = Int32(parts[1]),
                let exitStatus = ExitStatus(rawValue: code)
            {
                throw Failure(exitStatus, String(parts[2]))
            }
            throw Failure(.failure, "the daemon reported: \(line)")
        case .end, .tooLong, .failed:
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            throw Failure(.failure, "the daemon exited before the mount was ready (see \(home.logPath))")
        }
    }

    /// Marks every descriptor above stderr close-on-exec, so the daemon inherits only what the
    /// file actions give it, not whatever the shell or test harness left open in this process
    /// (an inherited pipe would keep the caller waiting for EOF for the daemon's whole life).
    private static func markDescriptorsCloseOnExec() {
        guard let directory = opendir("/proc/self/fd") else { return }
        defer { closedir(directory) }
        let own = dirfd(directory)
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard let fd = Int32(name), fd > 2, fd != own else { continue }
            _ = fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC)
        }
    }

    private static func withCStrings<T>(
        _ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> T
    ) -> T {
        let pointers = strings.map { strdup($0) } + [nil]
        defer { for pointer in pointers { free(pointer) } }
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}
