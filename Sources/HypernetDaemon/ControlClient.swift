import Glibc
import HypernetStore

/// The CLI's end of the control socket: one connection, requests answered in order.
public final class ControlClient {
    public let home: Home
    private let fd: Int32
    private var reader: LineReader

    /// Connects to the daemon of `home`; `.noDaemon` when none is listening.
    public init(home: Home) throws(Failure) {
        self.home = home
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw Failure.system("socket") }
        let path = home.controlSocketPath
        let code: Int32
        do {
            code = try UnixSocket.withAddress(path) { connect(fd, $0, $1) == 0 ? 0 : errno }
        } catch {
            close(fd)
            throw error
        }
        if code != 0 {
            close(fd)
            switch code {
            case ENOENT, ECONNREFUSED, ENOTDIR:
                throw Failure(
                    .noDaemon, "no daemon running for \(home.path) (start one with: hypernet mount MOUNTPOINT)")
            case EACCES, EPERM:
                // A daemon may well run: only the home's owner may reach it (the socket is 0600, the home 0700).
                let reason = String(cString: strerror(code))
                throw Failure(.failure, "not allowed to reach the daemon of \(home.path): \(path): \(reason)")
            default:
                throw Failure.system(path, code, status: .noDaemon)
            }
        }
        self.fd = fd
        // Replies (file contents) may be large; the daemon's side bounds what it sends.
        self.reader = LineReader(fd: fd, limit: Int.max / 2)
    }

    deinit { close(fd) }

    /// Sends `request` and decodes the `result` of the reply as `Result`; a daemon-side failure is
    /// rethrown with the daemon's message and exit status.
    public func send<Result: Decodable>(_ request: ControlRequest, expecting: Result.Type) throws(Failure) -> Result {
        guard UnixSocket.writeAll(fd, ControlCodec.encodeRequest(request)) else {
            throw Failure.system("sending to the daemon")
        }
        switch reader.next() {
        case .line(let line):
            return try ControlCodec.decodeResponse(line, as: Result.self)
        case .end, .tooLong:
            throw Failure(.failure, "the daemon closed the control connection without a reply (see \(home.logPath))")
        case .failed(let code):
            throw Failure.system("reading from the daemon", code)
        }
    }

    /// After a request answered by a stream (watch): hands each further line, newline included, to `body`
    /// until the daemon ends the stream or `body` returns false.
    public func streamLines(_ body: ([UInt8]) -> Bool) throws(Failure) {
        while true {
            switch reader.next() {
            case .line(let line):
                guard body(line + [UInt8(ascii: "\n")]) else { return }
            case .end, .tooLong:
                throw Failure(.noDaemon, "the daemon ended the stream (see \(home.logPath))")
            case .failed(let code):
                throw Failure.system("reading from the daemon", code)
            }
        }
    }
}
