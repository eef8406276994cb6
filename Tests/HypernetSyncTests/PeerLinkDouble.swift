import HypernetCrypto
import Synchronization

@testable import HypernetSync

/// A connection that records what is sent on it: the sync components' tests run over these, without sockets.
final class PeerLinkDouble: PeerLink, CustomStringConvertible {
    let node: SigningPublicKey?
    private let state = Mutex((sent: [Message](), closed: String?.none))

    init(node: SigningPublicKey? = SigningKeyPair.generate().publicKey) { self.node = node }

    var isEnded: Bool { state.withLock { $0.closed != nil } }
    var sent: [Message] { state.withLock { $0.sent } }
    var closedReason: String? { state.withLock { $0.closed } }
    var description: String { "double" }

    func send(_ message: Message) { state.withLock { $0.sent.append(message) } }
    func close(_ reason: String) { state.withLock { $0.closed = $0.closed ?? reason } }

    /// What was sent since the last call.
    func take() -> [Message] {
        state.withLock { s in
            defer { s.sent.removeAll() }
            return s.sent
        }
    }

    /// The acks sent so far, and forgets them.
    func takeAcks() -> [Message.Ack] {
        state.withLock { s in
            defer { s.sent.removeAll() }
            return s.sent.compactMap { if case .ack(let a) = $0 { a } else { nil } }
        }
    }
}
