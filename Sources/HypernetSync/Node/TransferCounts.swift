import HypernetCrypto
import Synchronization

/// Bytes of chunks served to and received from each peer (by node key) answering `want`s, since start: what
/// `hypernet status` shows per peer, and how a swarm's spread is seen.
final class TransferCounts: Sendable {
    private let counts = Mutex<[String: (served: Int64, received: Int64)]>([:])

    func served(_ bytes: Int, to node: SigningPublicKey?) {
        guard let node, bytes > 0 else { return }
        counts.withLock { $0[Hex.encode(node.bytes), default: (0, 0)].served += Int64(bytes) }
    }

    func received(_ bytes: Int, from node: SigningPublicKey?) {
        guard let node else { return }
        counts.withLock { $0[Hex.encode(node.bytes), default: (0, 0)].received += Int64(bytes) }
    }

    /// The counts by node key in hex.
    func snapshot() -> [String: (served: Int64, received: Int64)] { counts.withLock { $0 } }
}
