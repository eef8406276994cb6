import HypernetCrypto
import Synchronization

/// Bytes of chunks served to and received from each peer (by node key) answering `want`s, since start: what
/// `hypernet status` shows per peer, and how a swarm's spread is seen.
final class TransferCounts: Sendable {
    private let counts = Mutex<[String: (served: Int64, received: Int64)]>([:])
    /// Bytes served to all peers: kept apart, as a forgotten key's count must not leave the total.
    private let servedTotal = Atomic<Int64>(0)
    /// Node keys counted at most: peers that come with fresh keys must not grow this without end (past it, one
    /// arbitrary count is forgotten for each new key).
    static let limit = 4096

    func served(_ bytes: Int, to node: SigningPublicKey?) {
        // "Not held" answers serve nothing.
        guard bytes > 0 else { return }
        servedTotal.add(Int64(bytes), ordering: .relaxed)
        add(node) { $0.served += Int64(bytes) }
    }

    /// Bytes served to all peers since start.
    var served: Int64 { servedTotal.load(ordering: .relaxed) }

    func received(_ bytes: Int, from node: SigningPublicKey?) {
        add(node) { $0.received += Int64(bytes) }
    }

    private func add(_ node: SigningPublicKey?, _ change: (inout (served: Int64, received: Int64)) -> Void) {
        guard let node else { return }
        let key = Hex.encode(node.bytes)
        counts.withLock { counts in
            if counts[key] == nil, counts.count >= Self.limit, let some = counts.keys.first {
                counts.removeValue(forKey: some)
            }
            change(&counts[key, default: (0, 0)])
        }
    }

    /// The counts by node key in hex.
    func snapshot() -> [String: (served: Int64, received: Int64)] { counts.withLock { $0 } }
}
