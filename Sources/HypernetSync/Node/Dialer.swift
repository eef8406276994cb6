import HypernetCrypto
import HypernetStore
import Synchronization

/// Which addresses of the peer table to dial, and when (docs/protocol.md, "Dialing"): a back-off per address, and
/// the addresses and node keys this node refuses (its own, and those removed with `peer remove`). Owns that
/// schedule and those lists; the peer table and the open connections are its inputs, and time (Unix seconds) is
/// passed in, so it is tested without sockets or clocks.
final class Dialer: Sendable {
    static let firstDelay: Double = 0.5
    static let maximumBackoff: Double = 30

    struct Dial {
        var next: Double = 0
        var delay = Dialer.firstDelay
        var inProgress = false
    }

    /// How many dials may be in progress at once (`PeerSet.dialPlan`), of configured and of learned addresses.
    struct Limits: Equatable {
        var configured = Int.max
        var learned = Int.max
    }

    private struct State {
        var dials: [String: Dial] = [:]
        /// Addresses where this node reached itself.
        var selfAddresses: Set<String> = []
        /// The addresses removed with `peer remove`, and the node keys (hex) last seen at them: both are refused.
        var removedAddresses: Set<String> = []
        var removedNodes: Set<String> = []
    }

    private let state = Mutex(State())

    /// The addresses of `records` to dial now, in their order, each marked as being dialed until `failed` or
    /// `ended`. Left out: this node's own, those in `open` (a connected peer was dialed at or listens there) and
    /// those last seen with a node key in `connected` (hex): dialing them would only make a duplicate connection;
    /// and any past `limits`, counting the dials in progress that have not made a connection in `open` yet.
    func due(
        _ records: [PeerRecord], open: Set<String>, connected: Set<String>, now: Double, limits: Limits = Limits()
    ) -> [String] {
        state.withLock { s in
            let known = Set(records.map(\.address))
            s.dials = s.dials.filter { known.contains($0.key) || $0.value.inProgress }
            var pending = s.dials.count { $0.value.inProgress && !open.contains($0.key) }
            var due: [String] = []
            for r in records where !s.selfAddresses.contains(r.address) && !open.contains(r.address) {
                if let node = r.node, connected.contains(node) { continue }
                var d = s.dials[r.address] ?? Dial()
                guard !d.inProgress, d.next <= now, pending < (r.configured ? limits.configured : limits.learned)
                else { continue }
                pending += 1
                d.inProgress = true
                s.dials[r.address] = d
                due.append(r.address)
            }
            return due
        }
    }

    /// A dial of `address` failed, or the connection it made ended: the next waits the current delay, which
    /// doubles. True after the first failure since the address last answered.
    @discardableResult
    func failed(_ address: String, now: Double) -> Bool {
        state.withLock { s in
            var d = s.dials[address] ?? Dial()
            let first = d.delay <= Self.firstDelay
            d.inProgress = false
            d.next = now + d.delay
            d.delay = min(d.delay * 2, Self.maximumBackoff)
            s.dials[address] = d
            return first
        }
    }

    /// The peer dialed at `address` answered (its `hello`) on `link`: its back-off starts over, unless `link` has
    /// ended (checked under the lock, so a `failed` for that end is never undone).
    func answered(_ address: String, on link: any PeerLink) {
        state.withLock { s in if !link.isEnded { s.dials[address] = Dial() } }
    }

    /// `peer remove`: no schedule is kept for `address`.
    func forget(_ address: String) {
        state.withLock { _ = $0.dials.removeValue(forKey: address) }
    }

    /// The connection dialed at `address` reached this node itself: never dialed again.
    func reachedSelf(at address: String) {
        state.withLock { _ = $0.selfAddresses.insert(address) }
    }

    /// The peer table's removed rows, whose addresses and node keys are refused.
    func setRemoved(_ records: [PeerRecord]) {
        state.withLock { s in
            s.removedAddresses = Set(records.map(\.address))
            s.removedNodes = Set(records.compactMap(\.node))
        }
    }

    func isRemoved(address: String) -> Bool {
        state.withLock { $0.removedAddresses.contains(address) }
    }

    func isRemoved(node: SigningPublicKey) -> Bool {
        let hex = Hex.encode(node.bytes)
        return state.withLock { $0.removedNodes.contains(hex) }
    }
}
