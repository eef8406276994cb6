import Dispatch
import Synchronization

/// Ends a wait early when the request it serves is interrupted (FUSE_INTERRUPT: Ctrl-C or a signal to the
/// caller), so a process blocked on the mount can always be stopped.
public final class Interruption: Sendable {
    private let state = Mutex<(interrupted: Bool, wake: DispatchSemaphore?)>((false, nil))

    public init() {}

    public var isInterrupted: Bool { state.withLock { $0.interrupted } }

    /// Marks the wait interrupted and wakes it. Any thread, any number of times.
    public func interrupt() {
        let wake = state.withLock { s in
            s.interrupted = true
            return s.wake
        }
        wake?.signal()
    }

    /// Runs `body` with `semaphore` signalled by `interrupt()`; an earlier interrupt signals it at once.
    func waking<T>(_ semaphore: DispatchSemaphore, _ body: () -> T) -> T {
        let interrupted = state.withLock { s in
            s.wake = semaphore
            return s.interrupted
        }
        if interrupted { semaphore.signal() }
        defer { state.withLock { $0.wake = nil } }
        return body()
    }
}
