#if HYPERNET_FAILPOINTS
    import Glibc
#endif

/// Failpoints (docs/testing.md, "Failpoints"): named steps of the write, replication, compaction, rights and search
/// pipelines where a test build crashes, stalls or fails on demand. Only a build compiled with
/// `-Xswiftc -DHYPERNET_FAILPOINTS` (mount-helpers/test.sh) has them; in any other build `hit` is an empty
/// inlinable function that returns false, so the release product holds neither the mechanism nor the names.
public enum Failpoint {
    /// Step `name` is reached. Armed by `HYPERNET_FAILPOINT=name:[P%]ACTION[,...]` in the process's environment:
    /// `panic` kills the process here (SIGKILL: a crash, no cleanup), `sleep(MS)` stalls the step, `error`
    /// returns true, and the caller fails the step as an I/O error would. `P%` fires on that share of hits only.
    /// Returns false when not armed or not fired, and always in a build without failpoints.
    @inlinable @inline(__always)
    public static func hit(_ name: StaticString) -> Bool {
        #if HYPERNET_FAILPOINTS
            return fire(name.description)
        #else
            return false
        #endif
    }

    /// Reads `HYPERNET_FAILPOINT` (once; called at start so that a bad value stops the daemon before it serves):
    /// the names armed, or why the value is refused. Nothing armed and nothing refused in a build without them.
    public static func arm() -> Result<[String], FailpointError> {
        #if HYPERNET_FAILPOINTS
            return armed.map { $0.keys.sorted() }
        #else
            return .success([])
        #endif
    }

    #if HYPERNET_FAILPOINTS
        /// Every step that calls `hit`: arming any other name is refused at start (a typo would test nothing).
        static let names: Set<String> = [
            "vfs.stage", "store.seal", "pack.append", "catalog.commit", "store.sync",
            "sync.send", "sync.receive", "sync.store", "sync.ack", "vfs.show",
            "catalog.checkpoint", "pack.trim", "compact.copy", "compact.switch", "compact.remove",
            "rights.change", "rights.receive", "index.foreign", "retention.release",
        ]

        enum Action: Equatable {
            case panic
            case sleep(milliseconds: UInt32)
            case error
        }

        struct Armed {
            var action: Action
            var percent: Double
        }

        static let armed: Result<[String: Armed], FailpointError> = {
            guard let raw = getenv("HYPERNET_FAILPOINT") else { return .success([:]) }
            return parse(String(cString: raw))
        }()

        /// `name:[P%]ACTION[,name:[P%]ACTION...]`.
        static func parse(_ text: String) -> Result<[String: Armed], FailpointError> {
            var armed: [String: Armed] = [:]
            for item in text.split(separator: ",") {
                let parts = item.split(separator: ":", maxSplits: 1).map(String.init)
                guard parts.count == 2, names.contains(parts[0]) else {
                    return .failure(FailpointError(message: "\(item): not NAME:ACTION with a known NAME"))
                }
                var spec = Substring(parts[1])
                var percent = 100.0
                if let sign = spec.firstIndex(of: "%") {
                    guard let p = Double(spec[..<sign]), p > 0, p <= 100 else {
                        return .failure(FailpointError(message: "\(item): the share must be in (0, 100]"))
                    }
                    percent = p
                    spec = spec[spec.index(after: sign)...]
                }
                let action: Action
                if spec == "panic" {
                    action = .panic
                } else if spec == "error" {
                    action = .error
                } else if spec.hasPrefix("sleep("), spec.hasSuffix(")"),
                    let ms = UInt32(spec.dropFirst("sleep(".count).dropLast())
                {
                    action = .sleep(milliseconds: ms)
                } else {
                    return .failure(FailpointError(message: "\(item): ACTION is panic, error or sleep(MS)"))
                }
                armed[parts[0]] = Armed(action: action, percent: percent)
            }
            return .success(armed)
        }

        @usableFromInline
        static func fire(_ name: String) -> Bool {
            guard case .success(let points) = armed, let point = points[name],
                point.percent >= 100 || Double.random(in: 0..<100) < point.percent
            else { return false }
            switch point.action {
            case .panic:
                // To the log (the daemon's stderr), written at once: nothing after this line runs.
                let line = "hypernet: failpoint \(name): panic\n"
                _ = line.withCString { write(2, $0, strlen($0)) }
                kill(getpid(), SIGKILL)
                return false  // not reached
            case .sleep(let ms):
                usleep(ms * 1000)
                return false
            case .error:
                return true
            }
        }
    #endif
}

/// Why `HYPERNET_FAILPOINT` is refused (one line).
public struct FailpointError: Error, Sendable {
    public var message: String
}
