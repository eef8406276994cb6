import HypernetCrypto

/// One connection as the sync components see it: a `Session` in the daemon, a recording double in unit tests.
/// Thread-safe, like `Session`.
protocol PeerLink: AnyObject, Sendable {
    /// The peer's node key, once the handshake authenticated it.
    var node: SigningPublicKey? { get }
    var isEnded: Bool { get }
    func send(_ message: Message)
    func close(_ reason: String)
}

extension Session: PeerLink {}
