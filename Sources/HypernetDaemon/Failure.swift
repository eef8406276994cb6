import Glibc

/// The exit codes of `hypernet`, documented in docs/cli.md. The daemon sends the same numbers over
/// the control socket so the CLI exits with the code the daemon chose.
public enum ExitStatus: Int32, Sendable, Codable {
    case failure = 1
    case usage = 2
    case noDaemon = 3
    case notHypernetPath = 4
    case unknownRevision = 5
    case mountpoint = 6
    case store = 7
    case alreadyRunning = 8
    /// A search query with bad syntax (docs/search.md).
    case badQuery = 9
}

/// A user-facing error: one line for stderr and the exit code that goes with it.
public struct Failure: Error, Sendable, CustomStringConvertible {
    public let status: ExitStatus
    public let message: String

    public init(_ status: ExitStatus, _ message: String) {
        self.status = status
        self.message = message
    }

    public var description: String { message }

    /// `strerror` text for an errno, for messages like "HOME: Permission denied".
    public static func errnoText(_ code: Int32) -> String { String(cString: strerror(code)) }

    /// A failed system call: "what: strerror(errno)".
    static func system(_ what: String, _ code: Int32 = errno, status: ExitStatus = .failure) -> Failure {
        Failure(status, "\(what): \(errnoText(code))")
    }
}
