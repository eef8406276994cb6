import CSodium

/// Raw X25519 Diffie-Hellman (crypto_scalarmult), for protocols such as Noise that derive their own keys
/// from the shared point; crypto_box hashes it for you, this does not. Key pairs are `BoxKeyPair`s:
/// crypto_box keys are X25519 scalars and points.
public enum X25519 {
    public static let sharedSecretByteCount = 32

    /// Throws `failure` when the result is all zeros: the peer sent a low-order point, so the "secret"
    /// would be known to anyone (RFC 7748 section 6.1). libsodium reports exactly that case as -1.
    public static func sharedSecret(secretKey: SecureBytes, publicKey: BoxPublicKey) throws(CryptoError) -> SecureBytes
    {
        Sodium.ready()
        precondition(secretKey.count == BoxKeyPair.secretKeyByteCount, "X25519 secret key must be 32 bytes")
        let shared = SecureBytes(count: sharedSecretByteCount)
        var rc: Int32 = 0
        secretKey.withUnsafeBytes { sk in
            shared.initialize { out in rc = crypto_scalarmult(out.baseAddress!, sk.nonEmptyPointer, publicKey.bytes) }
        }
        guard rc == 0 else { throw .failure("X25519 shared secret is all zeros (low-order public key)") }
        return shared
    }
}
