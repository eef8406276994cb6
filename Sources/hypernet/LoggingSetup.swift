import Glibc
import HypernetDaemon
import HypernetStore
import Logging

/// Points swift-log at `HOME/hypernet.log` (level from `HYPERNET_LOG_LEVEL`), or at stderr when the
/// log cannot be opened. The daemon under systemd (`daemon`, stderr the journal) logs only to the journal.
/// Called once, by the commands that open the store.
func bootstrapLogging(home: Home, daemon: Bool = false) -> Logger {
    let level = FileLogHandler.levelFromEnvironment()
    if daemon, FileLogHandler.standardErrorIsJournal() {
        LoggingSystem.bootstrap { label in FileLogHandler(label: label, fd: STDERR_FILENO, level: level, journal: true)
        }
    } else if let fd = FileLogHandler.open(path: home.logPath) {
        LoggingSystem.bootstrap { label in FileLogHandler(label: label, fd: fd, level: level) }
    } else {
        let reason = String(cString: strerror(errno))
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        Logger(label: "hypernet").warning(
            "cannot open the log file", metadata: ["path": "\(home.logPath)", "reason": "\(reason)"])
    }
    return Logger(label: "hypernet")
}
