import Dispatch
import Glibc
import HypernetVFS
import Logging
import Synchronization

/// The daemon's end of the control socket (`HOME/control.sock`, mode 0600). One work item accepts
/// (in `poll`, woken by a pipe at shutdown); each connection is served on its own work item, one
/// request line at a time, by `handler`.
final class ControlServer: Sendable {
    typealias Handler = @Sendable (ControlRequest) -> ControlReply

    /// A request line longer than this is refused (requests carry a command and one path).
    static let requestLimit = 1 << 20

    let path: String
    private let listenFD: Int32
    /// Written once by `stop` to wake the accept loop.
    private let wakeFDs: (read: Int32, write: Int32)
    /// The accept loop and every connection being served.
    private let work = DispatchGroup()
    private let logger: Logger
    private let state = Mutex(State.created)

    private enum State { case created, running, stopped }

    /// Binds and listens. `HOME` is 0700 and the socket is created under umask 0177, so it is never
    /// reachable by anyone but the owner; call this before other threads create files, as the umask
    /// is process-wide. A socket left by a killed daemon is removed first (the caller holds the home
    /// lock, so it cannot belong to a live one).
    init(path: String, logger: Logger) throws(Failure) {
        self.path = path
        self.logger = logger
        let wake = try UnixSocket.closeOnExecPipe()
        wakeFDs = wake
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 {
            let code = errno
            close(wake.read)
            close(wake.write)
            throw Failure.system("socket", code)
        }
        let previousMask = umask(0o177)
        var failure: Failure?
        do throws(Failure) {
            let code = try UnixSocket.withAddress(path) { bind(fd, $0, $1) == 0 ? 0 : errno }
            if code != 0 { failure = Failure.system(path, code) }
        } catch {
            failure = error
        }
        umask(previousMask)
        if failure == nil && listen(fd, 16) != 0 { failure = Failure.system(path) }
        if let failure {
            close(fd)
            close(wake.read)
            close(wake.write)
            unlink(path)
            throw failure
        }
        listenFD = fd
    }

    /// Starts serving requests with `handler`.
    func start(handler: @escaping Handler) {
        let start = state.withLock { state in
            guard state == .created else { return false }
            state = .running
            return true
        }
        guard start else { return }
        DispatchQueue(label: "hypernet.control.accept").async(group: work) { [self] in
            acceptLoop(handler: handler)
        }
    }

    /// Stops accepting, removes the socket and waits (up to `grace`) for requests in progress.
    func stop(grace: DispatchTimeInterval = .seconds(10)) {
        let previous = state.withLock { state in
            defer { state = .stopped }
            return state
        }
        guard previous != .stopped else { return }
        unlink(path)
        if previous == .running {
            _ = write(wakeFDs.write, "x", 1)
            if work.wait(timeout: .now() + grace) == .timedOut {
                logger.warning("control requests still running at shutdown")
            }
        }
        close(listenFD)
        close(wakeFDs.read)
        close(wakeFDs.write)
    }

    private func acceptLoop(handler: @escaping Handler) {
        var fds = [
            pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0),
            pollfd(fd: wakeFDs.read, events: Int16(POLLIN), revents: 0),
        ]
        while true {
            if poll(&fds, nfds_t(fds.count), -1) < 0 {
                if errno == EINTR { continue }
                logger.error("control socket poll failed", metadata: ["errno": "\(errno)"])
                return
            }
            if fds[1].revents != 0 { return }
            guard fds[0].revents != 0 else { continue }
            let client = accept(listenFD, nil, nil)
            if client < 0 {
                if errno != EINTR && errno != ECONNABORTED {
                    logger.warning("control accept failed", metadata: ["errno": "\(errno)"])
                }
                continue
            }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            let logger = logger
            DispatchQueue.global().async(group: work) { [self] in
                serve(client, handler: handler, logger: logger)
            }
        }
    }

    fileprivate var isStopped: Bool { state.withLock { $0 == .stopped } }

    private func serve(_ fd: Int32, handler: Handler, logger: Logger) {
        defer { close(fd) }
        // A client that connects and says nothing must not hold a worker forever.
        var timeout = timeval(tv_sec: 60, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var reader = LineReader(fd: fd, limit: Self.requestLimit)
        while true {
            let reply: ControlReply
            // After stop/unmount the daemon is going away: end the connection so shutdown, which
            // waits for open connections, does not wait for the client to hang up.
            var last = false
            switch reader.next() {
            case .end, .failed:
                return
            case .tooLong:
                _ = UnixSocket.writeAll(fd, ControlCodec.encode(.failure(Failure(.usage, "control request too long"))))
                return
            case .line(let line):
                do throws(Failure) {
                    let request = try ControlCodec.decodeRequest(line)
                    logger.debug("control request", metadata: ["command": "\(request.command.rawValue)"])
                    reply = handler(request)
                    last = request.command == .stop || request.command == .unmount
                } catch {
                    reply = .failure(error)
                }
            }
            if !UnixSocket.writeAll(fd, ControlCodec.encode(reply)) || last { return }
            if case .stream(let reader) = reply {
                stream(reader, to: fd)
                return
            }
            if case .lines(let produce) = reply {
                produce(ControlStream(fd: fd, server: self))
                return
            }
        }
    }

    /// Writes the reader's lines to the client until it hangs up (or sends anything) or the server stops.
    private func stream(_ reader: EventReader, to fd: Int32) {
        defer { reader.close() }
        while !isStopped {
            var client = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&client, 1, 0) != 0 { return }
            guard let bytes = reader.read(maximum: 64 << 10, timeout: .seconds(1)) else { continue }
            if !UnixSocket.writeAll(fd, bytes) { return }
        }
    }
}

/// The client's end of a `lines` reply, for its producer: each line is written at once, blocking while the client
/// does not read (a slow reader slows the producer; nothing piles up in the daemon).
public final class ControlStream {
    private let fd: Int32
    private let server: ControlServer
    private var hungUp = false

    fileprivate init(fd: Int32, server: ControlServer) {
        self.fd = fd
        self.server = server
    }

    /// Writes `line` (newline included); false once the client has gone.
    public func send(_ line: [UInt8]) -> Bool {
        if isCancelled { return false }
        hungUp = !UnixSocket.writeAll(fd, line)
        return !hungUp
    }

    /// The client hung up (Ctrl-C), sent anything (it asks nothing more on this connection), or the daemon stops.
    public var isCancelled: Bool {
        if hungUp { return true }
        var client = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        hungUp = poll(&client, 1, 0) != 0 || server.isStopped
        return hungUp
    }
}
