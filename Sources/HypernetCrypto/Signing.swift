import CSodium

/// An Ed25519 public key (crypto_sign).
public struct SigningPublicKey: Hashable, Sendable {
    public static let byteCount = 32
    public let bytes: [UInt8]

    public init(bytes: some Collection<UInt8>) throws(CryptoError) {
        guard bytes.count == Self.byteCount else { throw .invalidLength(expected: Self.byteCount, actual: bytes.count) }
        self.bytes = Array(bytes)
    }

    /// crypto_sign_verify_detached. Any malformed signature is simply invalid.
    public func isValidSignature(_ signature: [UInt8], for message: UnsafeRawBufferPointer) -> Bool {
        Sodium.ready()
        guard signature.count == SigningKeyPair.signatureByteCount else { return false }
        return crypto_sign_verify_detached(signature, message.sodiumPointer, UInt64(message.count), bytes) == 0
    }

    public func isValidSignature(_ signature: [UInt8], for message: [UInt8]) -> Bool {
        message.withUnsafeBytes { isValidSignature(signature, for: $0) }
    }
}

/// An Ed25519 key pair, kept as its 32-byte seed plus libsodium's expanded secret key, both in
/// sodium memory.
public final class SigningKeyPair: Sendable {
    public static let seedByteCount = 32
    public static let signatureByteCount = 64

    public let publicKey: SigningPublicKey
    /// The 32-byte seed (RFC 8032 "private key"); persisting it is enough to restore the pair.
    public let seed: SecureBytes
    private let secretKey: SecureBytes

    public static func generate() -> SigningKeyPair {
        // A fresh random seed is exactly what crypto_sign_keypair does internally.
        try! SigningKeyPair(seed: .random(count: seedByteCount))
    }

    /// crypto_sign_seed_keypair.
    public init(seed: SecureBytes) throws(CryptoError) {
        Sodium.ready()
        guard seed.count == Self.seedByteCount else {
            throw .invalidLength(expected: Self.seedByteCount, actual: seed.count)
        }
        let secretKey = SecureBytes(count: crypto_sign_secretkeybytes())
        var publicKey = [UInt8](repeating: 0, count: SigningPublicKey.byteCount)
        seed.withUnsafeBytes { seedBytes in
            secretKey.initialize { sk in
                precondition(crypto_sign_seed_keypair(&publicKey, sk.baseAddress!, seedBytes.nonEmptyPointer) == 0)
            }
        }
        self.seed = seed
        self.secretKey = secretKey
        self.publicKey = try SigningPublicKey(bytes: publicKey)
    }

    /// crypto_sign_detached: a 64-byte signature.
    public func signature(for message: UnsafeRawBufferPointer) -> [UInt8] {
        secretKey.withUnsafeBytes { sk in
            makeBytes(count: Self.signatureByteCount) { out in
                precondition(
                    crypto_sign_detached(out, nil, message.sodiumPointer, UInt64(message.count), sk.nonEmptyPointer)
                        == 0)
            }
        }
    }

    public func signature(for message: [UInt8]) -> [UInt8] {
        message.withUnsafeBytes { signature(for: $0) }
    }
}
