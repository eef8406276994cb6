import CLinux
import Synchronization

/// The bytes all connections of a node may hold for what they have not finished receiving: undecrypted records
/// and partial frames, each charged at its declared length once its header is in (docs/protocol.md, "Limits").
/// A connection whose next frame would take the total over the limit is closed: peers cannot make the node
/// buffer more than `limit` bytes together, whatever the number of connections.
public final class FrameBudget: Sendable {
    public let limit: Int
    private let used = Mutex(0)

    public init(limit: Int) { self.limit = limit }

    /// Changes one connection's charge from `old` to `new` bytes; false (and no change) if `new` does not fit.
    public func recharge(from old: Int, to new: Int) -> Bool {
        used.withLock { used in
            guard new <= old || used - old + new <= limit else { return false }
            used += new - old
            return true
        }
    }

    /// Returns a closed connection's charge. Large buffers freed by glibc stay in its arenas (the RSS a hostile peer
    /// raised would stay up): they go back to the system when `bytes` is large.
    public func release(_ bytes: Int) {
        guard bytes > 0 else { return }
        used.withLock { $0 -= bytes }
        if bytes >= Self.trimThreshold { _ = CLinux_malloc_trim() }
    }

    static let trimThreshold = 1 << 20
}
