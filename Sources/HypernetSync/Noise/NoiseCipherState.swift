import HypernetCrypto

/// Noise CipherState (spec section 5.1) over ChaCha20-Poly1305: a key and a message counter used as the
/// nonce. After `NoiseHandshake.split()` one instance encrypts in each direction; a value type, so a
/// copy would reuse nonces: keep exactly one per direction.
public struct NoiseCipherState: Sendable {
    /// Noise's limit for any message, ciphertext and tag included.
    public static let maxMessageLength = 65_535
    public static let maxPlaintextLength = maxMessageLength - ChaChaPolyIETF.tagByteCount

    /// nil during the first handshake messages, before any DH: EncryptWithAd then passes data through.
    private let key: SecureBytes?
    private var nonce: UInt64 = 0

    init(key: SecureBytes?) {
        self.key = key
    }

    var hasKey: Bool { key != nil }

    public mutating func encrypt(
        _ plaintext: UnsafeRawBufferPointer, associatedData: [UInt8] = []
    ) throws(NoiseError) -> [UInt8] {
        guard plaintext.count <= Self.maxPlaintextLength else {
            throw .messageTooLong(length: plaintext.count + ChaChaPolyIETF.tagByteCount)
        }
        guard let key else { return Array(plaintext) }
        let ciphertext = try withNonce { nonce in
            associatedData.withUnsafeBytes { ad in
                ChaChaPolyIETF.seal(plaintext, key: key, nonce: nonce, associatedData: ad)
            }
        }
        nonce += 1
        return ciphertext
    }

    /// On failure the nonce is not consumed (spec section 5.1), though the session is dead anyway.
    public mutating func decrypt(
        _ ciphertext: UnsafeRawBufferPointer, associatedData: [UInt8] = []
    ) throws(NoiseError) -> [UInt8] {
        guard ciphertext.count <= Self.maxMessageLength else { throw .messageTooLong(length: ciphertext.count) }
        guard let key else { return Array(ciphertext) }
        guard ciphertext.count >= ChaChaPolyIETF.tagByteCount else { throw .messageTooShort(length: ciphertext.count) }
        let result = try withNonce { nonce in
            associatedData.withUnsafeBytes { ad in
                Result { () throws(CryptoError) in
                    try ChaChaPolyIETF.open(ciphertext, key: key, nonce: nonce, associatedData: ad)
                }
            }
        }
        guard case .success(let plaintext) = result else { throw .authenticationFailed }
        nonce += 1
        return plaintext
    }

    /// ChaChaPoly's nonce (spec section 12.3): 32 zero bits, then the counter as 64-bit little-endian.
    /// 2^64 - 1 is reserved for rekeying, so it is never used to encrypt.
    private func withNonce<R>(_ body: (UnsafeRawBufferPointer) -> R) throws(NoiseError) -> R {
        guard nonce < UInt64.max else { throw .nonceExhausted }
        let words = (UInt32(0), UInt32(truncatingIfNeeded: nonce).littleEndian, UInt32(nonce >> 32).littleEndian)
        return withUnsafeBytes(of: words, body)
    }
}

extension NoiseCipherState {
    /// Noise's SetNonce. Only tests use it (to reach nonce exhaustion without 2^64 messages): moving the
    /// counter back would reuse nonces, which is why it is not part of the public API.
    @_spi(Testing) public mutating func setNonce(_ value: UInt64) { nonce = value }
}
