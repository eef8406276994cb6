/// ChaCha20-Poly1305, IETF construction (RFC 8439; see `ChaChaPolyAEAD`). The 96-bit nonce
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
        ChaChaPolyAEAD.seal(.chacha20IETF, plaintext, key: key, nonce: nonce, associatedData: associatedData)
    }

    /// Opens ciphertext || tag. Throws `authenticationFailed` if the tag does not verify.
    public static func open(
        _ ciphertext: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer,
        associatedData: UnsafeRawBufferPointer? = nil
    ) throws(CryptoError) -> [UInt8] {
        try ChaChaPolyAEAD.open(.chacha20IETF, ciphertext, key: key, nonce: nonce, associatedData: associatedData)
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
}
