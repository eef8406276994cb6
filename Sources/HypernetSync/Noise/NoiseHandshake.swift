import HypernetCrypto

/// The Noise_XX_25519_ChaChaPoly_BLAKE2b handshake (Noise spec rev 34): mutual authentication with
/// static keys exchanged inside the handshake.
///
///     -> e
///     <- e, ee, s, es
///     -> s, se
///
/// A failed call leaves the state as it was (work happens on a copy), but the session is meant to be
/// dropped after any error, as the spec requires.
public struct NoiseHandshake: Sendable {
    public enum Role: Sendable { case initiator, responder }

    public static let protocolName = "Noise_XX_25519_ChaChaPoly_BLAKE2b"

    private enum Token { case e, s, ee, es, se }
    private static let messagePatterns: [[Token]] = [[.e], [.e, .ee, .s, .es], [.s, .se]]

    private let role: Role
    private let localStatic: BoxKeyPair
    /// Preset only by tests; otherwise generated when the `e` token is written.
    private var localEphemeral: BoxKeyPair?
    private var remoteEphemeral: BoxPublicKey?
    public private(set) var remoteStaticKey: BoxPublicKey?
    private var symmetric: NoiseSymmetricState
    /// Index into `messagePatterns` of the next message; the initiator sends the even ones.
    private var nextMessage = 0
    private var didSplit = false

    public init(role: Role, prologue: [UInt8], staticKey: BoxKeyPair, ephemeralKey: BoxKeyPair? = nil) {
        self.role = role
        localStatic = staticKey
        localEphemeral = ephemeralKey
        symmetric = NoiseSymmetricState(protocolName: Self.protocolName)
        symmetric.mixHash(prologue)
    }

    public var isComplete: Bool { nextMessage == Self.messagePatterns.count }

    /// h: identical on both sides once the handshake is complete, unique to this session (channel binding).
    public var handshakeHash: [UInt8] { symmetric.handshakeHash }

    /// Builds our next handshake message with `payload` appended (encrypted from the second message on).
    public mutating func writeMessage(payload: [UInt8]) throws(NoiseError) -> [UInt8] {
        guard isOurTurn(toSend: true) else { throw .outOfOrder }
        var next = self
        var message: [UInt8] = []
        for token in Self.messagePatterns[nextMessage] {
            switch token {
            case .e:
                let ephemeral = next.localEphemeral ?? BoxKeyPair.generate()
                next.localEphemeral = ephemeral
                message += ephemeral.publicKey.bytes
                next.symmetric.mixHash(ephemeral.publicKey.bytes)
            case .s:
                message += try next.symmetric.encryptAndHash(localStatic.publicKey.bytes)
            case .ee, .es, .se:
                try next.mixKey(token)
            }
        }
        message += try next.symmetric.encryptAndHash(payload)
        guard message.count <= NoiseCipherState.maxMessageLength else { throw .messageTooLong(length: message.count) }
        next.nextMessage += 1
        self = next
        return message
    }

    /// Consumes the peer's next handshake message and returns its payload.
    public mutating func readMessage(_ message: [UInt8]) throws(NoiseError) -> [UInt8] {
        guard isOurTurn(toSend: false) else { throw .outOfOrder }
        guard message.count <= NoiseCipherState.maxMessageLength else { throw .messageTooLong(length: message.count) }
        var next = self
        var rest = message[...]
        for token in Self.messagePatterns[nextMessage] {
            switch token {
            case .e:
                let bytes = try Self.take(BoxPublicKey.byteCount, from: &rest, of: message)
                next.remoteEphemeral = try! BoxPublicKey(bytes: bytes)
                next.symmetric.mixHash(Array(bytes))
            case .s:
                let length = BoxPublicKey.byteCount + (next.symmetric.hasKey ? ChaChaPolyIETF.tagByteCount : 0)
                let bytes = try Self.take(length, from: &rest, of: message)
                let key = try next.symmetric.decryptAndHash(bytes)
                next.remoteStaticKey = try! BoxPublicKey(bytes: key)
            case .ee, .es, .se:
                try next.mixKey(token)
            }
        }
        if next.symmetric.hasKey, rest.count < ChaChaPolyIETF.tagByteCount {
            throw .messageTooShort(length: message.count)
        }
        let payload = try next.symmetric.decryptAndHash(rest)
        next.nextMessage += 1
        self = next
        return payload
    }

    /// The transport cipher states, already oriented for this side. Once only: a second split would hand
    /// out the same keys with fresh nonces, i.e. nonce reuse.
    public mutating func split() -> (send: NoiseCipherState, receive: NoiseCipherState) {
        precondition(isComplete, "NoiseHandshake.split() before the handshake is complete")
        precondition(!didSplit, "NoiseHandshake.split() called twice")
        didSplit = true
        localEphemeral = nil  // forward secrecy: drop the ephemeral secret as soon as it is no longer needed
        let (initiatorToResponder, responderToInitiator) = symmetric.split()
        return role == .initiator
            ? (initiatorToResponder, responderToInitiator) : (responderToInitiator, initiatorToResponder)
    }

    private func isOurTurn(toSend: Bool) -> Bool {
        !isComplete && ((nextMessage % 2 == 0) == (role == .initiator)) == toSend
    }

    /// MixKey(DH(...)) for a DH token. The token names the initiator's key first: "es" is the initiator's
    /// ephemeral with the responder's static, so the responder computes it as DH(s, re).
    private mutating func mixKey(_ token: Token) throws(NoiseError) {
        let initiator = role == .initiator
        let (local, remote): (BoxKeyPair?, BoxPublicKey?) =
            switch token {
            case .ee: (localEphemeral, remoteEphemeral)
            case .es: initiator ? (localEphemeral, remoteStaticKey) : (localStatic, remoteEphemeral)
            case .se: initiator ? (localStatic, remoteEphemeral) : (localEphemeral, remoteStaticKey)
            case .e, .s: preconditionFailure("not a DH token")
            }
        // The XX pattern guarantees both keys exist by the time their DH token comes up.
        guard let local, let remote else { preconditionFailure("DH \(token) before its keys are known") }
        do {
            symmetric.mixKey(try X25519.sharedSecret(secretKey: local.secretKey, publicKey: remote))
        } catch {
            throw .invalidDHResult
        }
    }

    /// Splits the next `count` bytes off `rest`, or throws `messageTooShort` for the whole `message`.
    private static func take(
        _ count: Int, from rest: inout ArraySlice<UInt8>, of message: [UInt8]
    ) throws(NoiseError) -> ArraySlice<UInt8> {
        guard rest.count >= count else { throw .messageTooShort(length: message.count) }
        defer { rest = rest.dropFirst(count) }
        return rest.prefix(count)
    }
}
