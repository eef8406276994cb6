import CFuse3
import Glibc
import Logging
import Synchronization

/// Routes libfuse's own messages ("fuse: unknown option(s)", "fuse: bad mount point") into swift-log,
/// and keeps the last error so a failed mount can say why in one line. libfuse has a single,
/// process-wide log hook with no userdata, so the sink is process-wide too: the last mount to
/// install its logger receives the messages.
enum LibfuseLog {
    private struct Sink {
        var logger: Logger?
        var lastError: String?
        /// libfuse sometimes logs one line in several calls; a line is complete at its newline.
        var partial = ""
    }

    private static let sink = Mutex(Sink())

    static func install(_ logger: Logger) {
        sink.withLock { $0.logger = logger }
        fuse_set_log_func(forward)
    }

    /// The last error libfuse reported since the previous call, if any.
    static func takeLastError() -> String? {
        sink.withLock { sink in
            defer { sink.lastError = nil }
            return sink.lastError
        }
    }

    private static func record(_ level: fuse_log_level, _ fragment: String) {
        let (logger, line): (Logger?, String?) = sink.withLock { sink in
            sink.partial += fragment
            guard sink.partial.hasSuffix("\n") else { return (nil, nil) }
            var line = sink.partial
            sink.partial = ""
            while line.last == "\n" { line.removeLast() }
            if level.rawValue <= FUSE_LOG_ERR.rawValue { sink.lastError = line }
            return (sink.logger, line)
        }
        guard let message = line else { return }
        switch level {
        case FUSE_LOG_EMERG, FUSE_LOG_ALERT, FUSE_LOG_CRIT, FUSE_LOG_ERR: logger?.error("\(message)")
        case FUSE_LOG_WARNING: logger?.warning("\(message)")
        case FUSE_LOG_DEBUG: logger?.debug("\(message)")
        default: logger?.info("\(message)")
        }
    }

    private static let forward: fuse_log_func_t = { level, format, arguments in
        let fragment = withUnsafeTemporaryAllocation(of: CChar.self, capacity: 1024) { buffer in
            _ = vsnprintf(buffer.baseAddress, buffer.count, format, arguments!)
            return String(cString: buffer.baseAddress!)
        }
        LibfuseLog.record(level, fragment)
    }
}
