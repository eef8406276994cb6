/// Why a Noise handshake or transport message was refused. Every case means the session must be torn
/// down; none is retryable on the same connection.
public enum NoiseError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A write while the peer is to send, a read while we are, or either once the handshake is over.
    case outOfOrder
    /// The message is shorter than its keys and tags require.
    case messageTooShort(length: Int)
    /// The message (or the one a payload would produce) exceeds Noise's 65535-byte limit.
    case messageTooLong(length: Int)
    /// An AEAD tag did not verify: the message was forged, corrupted or encrypted under other keys.
    case authenticationFailed
    /// The cipher state has used all 2^64 - 1 nonces (the last one is reserved); rekeying is the caller's job.
    case nonceExhausted
    /// X25519 gave the all-zero secret: the peer sent a low-order public key.
    case invalidDHResult

    public var description: String {
        switch self {
        case .outOfOrder: "Noise message out of order: not this side's turn, or the handshake is over"
        case .messageTooShort(let length): "Noise message too short (\(length) bytes)"
        case .messageTooLong(let length): "Noise message too long (\(length) bytes; at most 65535)"
        case .authenticationFailed: "Noise message failed authentication"
        case .nonceExhausted: "Noise cipher state out of nonces"
        case .invalidDHResult: "Noise DH produced the all-zero secret (low-order public key)"
        }
    }
}
