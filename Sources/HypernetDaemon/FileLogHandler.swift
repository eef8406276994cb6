import Glibc
import HypernetModel
import Logging

/// A swift-log handler appending one line per event to a file:
/// `2025-01-31T12:00:00.123Z info hypernet.daemon: message key=value`, or, to systemd's journal (stderr under a
/// unit), `<6>hypernet.daemon: message key=value`: the journal adds the time and reads the priority
/// from the sd-daemon(3) prefix.
///
/// Each line is written with a single `write(2)` on an `O_APPEND` descriptor, so lines from
/// concurrent threads (and from a CLI process logging into the same file) never interleave.
public struct FileLogHandler: LogHandler {
    /// The descriptor is opened once per process and never closed: loggers live until exit.
    private let fd: Int32
    private let label: String
    private let journal: Bool
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?

    public init(label: String, fd: Int32, level: Logger.Level, journal: Bool = false) {
        self.label = label
        self.fd = fd
        self.logLevel = level
        self.journal = journal
    }

    /// Whether stderr is systemd's journal: `$JOURNAL_STREAM` (`DEVICE:INODE`) names the stream it
    /// connected there (systemd.exec(5)), and a redirected stderr no longer matches it.
    public static func standardErrorIsJournal() -> Bool {
        guard let raw = getenv("JOURNAL_STREAM") else { return false }
        let parts = String(cString: raw).split(separator: ":")
        var info = stat()
        guard parts.count == 2, let device = UInt(parts[0]), let inode = UInt(parts[1]),
            fstat(STDERR_FILENO, &info) == 0
        else { return false }
        return UInt(info.st_dev) == device && UInt(info.st_ino) == inode
    }

    /// Opens `path` for appending (mode 0600), or nil with errno set.
    public static func open(path: String) -> Int32? {
        let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        return fd >= 0 ? fd : nil
    }

    /// `HYPERNET_LOG_LEVEL` (trace, debug, info, notice, warning, error, critical), default info.
    public static func levelFromEnvironment() -> Logger.Level {
        guard let raw = getenv("HYPERNET_LOG_LEVEL") else { return .info }
        return Logger.Level(rawValue: String(cString: raw).lowercased()) ?? .info
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let explicit = event.metadata { merged.merge(explicit) { _, new in new } }
        if let error = event.error { merged["error"] = "\(error)" }
        var line =
            journal
            ? "<\(Self.priority(event.level))>\(label): \(event.message)"
            : "\(Self.timestamp()) \(event.level) \(label): \(event.message)"
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            line += " \(key)=\(value)"
        }
        line += "\n"
        var bytes = Array(line.utf8)
        bytes.withUnsafeMutableBytes { buffer in
            var done = 0
            while done < buffer.count {
                let n = write(fd, buffer.baseAddress! + done, buffer.count - done)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }
                done += n
            }
        }
    }

    /// The syslog priority of `level` (sd-daemon(3)).
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    /// UTC, ISO-8601 with milliseconds.
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return ISO8601.format(milliseconds: UInt64(now.tv_sec) * 1000 + UInt64(now.tv_nsec / 1_000_000))
    }
}
