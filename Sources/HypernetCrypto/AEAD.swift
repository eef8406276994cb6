/// XChaCha20-Poly1305 (IETF construction, draft-irtf-cfrg-xchacha; see `ChaChaPolyAEAD`). The 24-byte nonce is
/// large enough to be chosen at random; key and nonce sizes are programmer-checked.
public enum AEAD {
    public static let keyByteCount = 32, nonceByteCount = 24, tagByteCount = 16

    /// Returns ciphertext || tag (`plaintext.count + 16` bytes).
    public static func seal(
        _ plaintext: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer,
        associatedData: UnsafeRawBufferPointer? = nil
    ) -> [UInt8] {
        ChaChaPolyAEAD.seal(.xchacha20, plaintext, key: key, nonce: nonce, associatedData: associatedData)
    }

    /// Opens ciphertext || tag. Throws `authenticationFailed` if the tag does not verify.
    public static func open(
        _ ciphertext: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer,
        associatedData: UnsafeRawBufferPointer? = nil
    ) throws(CryptoError) -> [UInt8] {
        try ChaChaPolyAEAD.open(.xchacha20, ciphertext, key: key, nonce: nonce, associatedData: associatedData)
    }
}

// Convenience overloads: arrays, and keys held in sodium memory.
extension AEAD {
    public static func seal(
        _ plaintext: [UInt8], key: [UInt8], nonce: [UInt8], associatedData: [UInt8]? = nil
    ) -> [UInt8] {
        key.withUnsafeBytes { seal(plaintext, rawKey: $0, nonce: nonce, associatedData: associatedData) }
    }

    public static func open(
        _ ciphertext: [UInt8], key: [UInt8], nonce: [UInt8], associatedData: [UInt8]? = nil
    ) throws(CryptoError) -> [UInt8] {
        try key.withUnsafeBytes { key in
            Result { () throws(CryptoError) in
                try open(ciphertext, rawKey: key, nonce: nonce, associatedData: associatedData)
            }
        }.get()
    }

    public static func seal(
        _ plaintext: [UInt8], key: SecureBytes, nonce: [UInt8], associatedData: [UInt8]? = nil
    ) -> [UInt8] {
        key.withUnsafeBytes { seal(plaintext, rawKey: $0, nonce: nonce, associatedData: associatedData) }
    }

    public static func open(
        _ ciphertext: [UInt8], key: SecureBytes, nonce: [UInt8], associatedData: [UInt8]? = nil
    ) throws(CryptoError) -> [UInt8] {
        try key.withUnsafeBytes { (key) throws(CryptoError) in
            try open(ciphertext, rawKey: key, nonce: nonce, associatedData: associatedData)
        }
    }

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

    private static func seal(
        _ plaintext: [UInt8], rawKey key: UnsafeRawBufferPointer, nonce: [UInt8], associatedData: [UInt8]?
    ) -> [UInt8] {
        plaintext.withUnsafeBytes { plaintext in
            nonce.withUnsafeBytes { nonce in
                withOptionalBytes(associatedData) {
                    seal(plaintext, key: key, nonce: nonce, associatedData: $0)
                }
            }
        }
    }

    private static func open(
        _ ciphertext: [UInt8], rawKey key: UnsafeRawBufferPointer, nonce: [UInt8], associatedData: [UInt8]?
    ) throws(CryptoError) -> [UInt8] {
        // Typed throws do not pass through rethrowing closures; carry the result out instead.
        let result: Result<[UInt8], CryptoError> = ciphertext.withUnsafeBytes { ciphertext in
            nonce.withUnsafeBytes { nonce in
                withOptionalBytes(associatedData) { ad in
                    Result { () throws(CryptoError) in try open(ciphertext, key: key, nonce: nonce, associatedData: ad)
                    }
                }
            }
        }
        return try result.get()
    }

    private static func withOptionalBytes<R>(_ bytes: [UInt8]?, _ body: (UnsafeRawBufferPointer?) -> R) -> R {
        guard let bytes else { return body(nil) }
        return bytes.withUnsafeBytes { body($0) }
    }
}
