import CSodium

/// ChaCha20-Poly1305, IETF construction (RFC 8439; crypto_aead_chacha20poly1305_ietf). The 96-bit nonce
/// is too short to choose at random: callers must use each (key, nonce) once, e.g. with a counter as
/// Noise does. For random nonces use `AEAD` (XChaCha20). Key and nonce sizes are programmer-checked.
public enum ChaChaPolyIETF {
    public static let keyByteCount = 32, nonceByteCount = 12, tagByteCount = 16

    /// Returns ciphertext || tag (`plaintext.count + 16` bytes). Buffer based so that large records are
    /// encrypted straight from the caller's memory, with the output as the only copy.
    public static func seal(
        _ plaintext: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer,
        associatedData: UnsafeRawBufferPointer? = nil
    ) -> [UInt8] {
        Sodium.ready()
        checkSizes(key: key, nonce: nonce)
        return makeBytes(count: plaintext.count + tagByteCount) { out in
            let rc = crypto_aead_chacha20poly1305_ietf_encrypt(
                out, nil, plaintext.sodiumPointer, UInt64(plaintext.count),
                associatedData?.sodiumPointer, UInt64(associatedData?.count ?? 0),
                nil, nonce.nonEmptyPointer, key.nonEmptyPointer)
            precondition(rc == 0, "crypto_aead_chacha20poly1305_ietf_encrypt failed")
        }
    }

    /// Opens ciphertext || tag. Throws `authenticationFailed` if the tag does not verify.
    public static func open(
        _ ciphertext: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer,
        associatedData: UnsafeRawBufferPointer? = nil
    ) throws(CryptoError) -> [UInt8] {
        Sodium.ready()
        checkSizes(key: key, nonce: nonce)
        guard ciphertext.count >= tagByteCount else { throw .authenticationFailed }
        var rc: Int32 = 0
        let plaintext = makeBytes(count: ciphertext.count - tagByteCount) { out in
            rc = crypto_aead_chacha20poly1305_ietf_decrypt(
                out, nil, nil, ciphertext.nonEmptyPointer, UInt64(ciphertext.count),
                associatedData?.sodiumPointer, UInt64(associatedData?.count ?? 0),
                nonce.nonEmptyPointer, key.nonEmptyPointer)
        }
        guard rc == 0 else { throw .authenticationFailed }
        return plaintext
    }

    /// Keys held in sodium memory.
    public static func seal(
        _ plaintext: UnsafeRawBufferPointer, key: SecureBytes, nonce: UnsafeRawBufferPointer,
        associatedData: UnsafeRawBufferPointer? = nil
    ) -> [UInt8] {
        key.withUnsafeBytes { seal(plaintext, key: $0, nonce: nonce, associatedData: associatedData) }
    }

    public static func open(
        _ ciphertext: UnsafeRawBufferPointer, key: SecureBytes, nonce: UnsafeRawBufferPointer,
        associatedData: UnsafeRawBufferPointer? = nil
    ) throws(CryptoError) -> [UInt8] {
        try key.withUnsafeBytes { (key) throws(CryptoError) in
            try open(ciphertext, key: key, nonce: nonce, associatedData: associatedData)
        }
    }

    private static func checkSizes(key: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer) {
        precondition(key.count == keyByteCount, "ChaCha20-Poly1305 key must be \(keyByteCount) bytes, got \(key.count)")
        precondition(
            nonce.count == nonceByteCount, "ChaCha20-Poly1305 nonce must be \(nonceByteCount) bytes, got \(nonce.count)"
        )
    }
}
