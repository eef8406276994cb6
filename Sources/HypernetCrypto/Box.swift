import CSodium

/// An X25519 public key; anyone can seal a message to it (crypto_box_seal).
public struct BoxPublicKey: Hashable, Sendable {
    public static let byteCount = 32
    public let bytes: [UInt8]

    public init(bytes: some Collection<UInt8>) throws(CryptoError) {
        guard bytes.count == Self.byteCount else { throw .invalidLength(expected: Self.byteCount, actual: bytes.count) }
        self.bytes = Array(bytes)
    }

    /// crypto_box_seal: an anonymous sender's box, `message.count + 48` bytes (ephemeral key + MAC).
    public func seal(_ message: [UInt8]) -> [UInt8] {
        Sodium.ready()
        return makeBytes(count: message.count + crypto_box_sealbytes()) { out in
            precondition(crypto_box_seal(out, message, UInt64(message.count), bytes) == 0)
        }
    }
}

/// An X25519 key pair; the secret key stays in sodium memory.
public final class BoxKeyPair: Sendable {
    public static let secretKeyByteCount = 32

    public let publicKey: BoxPublicKey
    public let secretKey: SecureBytes

    /// crypto_box_keypair: a random scalar and its public point.
    public static func generate() -> BoxKeyPair {
        Sodium.ready()
        let secretKey = SecureBytes(count: secretKeyByteCount)
        var publicKey = [UInt8](repeating: 0, count: BoxPublicKey.byteCount)
        secretKey.initialize { sk in precondition(crypto_box_keypair(&publicKey, sk.baseAddress!) == 0) }
        return BoxKeyPair(secretKey: secretKey, publicKey: try! BoxPublicKey(bytes: publicKey))
    }

    /// Restores a pair from its secret key; the public key is crypto_scalarmult_base of it.
    public init(secretKey: SecureBytes) throws(CryptoError) {
        Sodium.ready()
        guard secretKey.count == Self.secretKeyByteCount else {
            throw .invalidLength(expected: Self.secretKeyByteCount, actual: secretKey.count)
        }
        var publicKey = [UInt8](repeating: 0, count: BoxPublicKey.byteCount)
        let rc = secretKey.withUnsafeBytes { crypto_scalarmult_base(&publicKey, $0.nonEmptyPointer) }
        guard rc == 0 else { throw .failure("crypto_scalarmult_base rejected the secret key") }
        self.secretKey = secretKey
        self.publicKey = try BoxPublicKey(bytes: publicKey)
    }

    private init(secretKey: SecureBytes, publicKey: BoxPublicKey) {
        self.secretKey = secretKey
        self.publicKey = publicKey
    }

    /// crypto_box_seal_open. Throws `authenticationFailed` for anything not sealed to this key intact.
    public func openSealed(_ box: [UInt8]) throws(CryptoError) -> [UInt8] {
        let overhead = crypto_box_sealbytes()
        guard box.count >= overhead else { throw .authenticationFailed }
        var rc: Int32 = 0
        let message = secretKey.withUnsafeBytes { sk in
            makeBytes(count: box.count - overhead) { out in
                rc = crypto_box_seal_open(out, box, UInt64(box.count), publicKey.bytes, sk.nonEmptyPointer)
            }
        }
        guard rc == 0 else { throw .authenticationFailed }
        return message
    }
}
