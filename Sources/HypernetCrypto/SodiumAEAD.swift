import CSodium

/// The one implementation behind `AEAD` (XChaCha20-Poly1305) and `ChaChaPolyIETF` (ChaCha20-Poly1305 IETF):
/// libsodium's two IETF AEAD constructions differ only in their nonce size and function names.
enum SodiumAEAD {
    static let keyByteCount = 32, tagByteCount = 16

    enum Construction {
        case chacha20IETF, xchacha20

        var nonceByteCount: Int { self == .chacha20IETF ? 12 : 24 }
        var name: String { self == .chacha20IETF ? "ChaCha20-Poly1305" : "XChaCha20-Poly1305" }
    }

    /// Returns ciphertext || tag (`plaintext.count + 16` bytes).
    static func seal(
        _ construction: Construction, _ plaintext: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer,
        nonce: UnsafeRawBufferPointer, associatedData: UnsafeRawBufferPointer?
    ) -> [UInt8] {
        Sodium.ready()
        checkSizes(construction, key: key, nonce: nonce)
        return makeBytes(count: plaintext.count + tagByteCount) { out in
            let (m, mLength) = (plaintext.sodiumPointer, UInt64(plaintext.count))
            let (ad, adLength) = (associatedData?.sodiumPointer, UInt64(associatedData?.count ?? 0))
            let rc =
                switch construction {
                case .chacha20IETF:
                    crypto_aead_chacha20poly1305_ietf_encrypt(out, nil, m, mLength, ad, adLength, nil, nonce.nonEmptyPointer, key.nonEmptyPointer)
                case .xchacha20:
                    crypto_aead_xchacha20poly1305_ietf_encrypt(out, nil, m, mLength, ad, adLength, nil, nonce.nonEmptyPointer, key.nonEmptyPointer)
                }
            precondition(rc == 0, "\(construction.name) encryption failed")
        }
    }

    /// Opens ciphertext || tag. Throws `authenticationFailed` if the tag does not verify.
    static func open(
        _ construction: Construction, _ ciphertext: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer,
        nonce: UnsafeRawBufferPointer, associatedData: UnsafeRawBufferPointer?
    ) throws(CryptoError) -> [UInt8] {
        Sodium.ready()
        checkSizes(construction, key: key, nonce: nonce)
        guard ciphertext.count >= tagByteCount else { throw .authenticationFailed }
        var rc: Int32 = 0
        let plaintext = makeBytes(count: ciphertext.count - tagByteCount) { out in
            let (c, cLength) = (ciphertext.nonEmptyPointer, UInt64(ciphertext.count))
            let (ad, adLength) = (associatedData?.sodiumPointer, UInt64(associatedData?.count ?? 0))
            rc =
                switch construction {
                case .chacha20IETF:
                    crypto_aead_chacha20poly1305_ietf_decrypt(out, nil, nil, c, cLength, ad, adLength, nonce.nonEmptyPointer, key.nonEmptyPointer)
                case .xchacha20:
                    crypto_aead_xchacha20poly1305_ietf_decrypt(out, nil, nil, c, cLength, ad, adLength, nonce.nonEmptyPointer, key.nonEmptyPointer)
                }
        }
        guard rc == 0 else { throw .authenticationFailed }
        return plaintext
    }

    private static func checkSizes(_ construction: Construction, key: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer) {
        precondition(key.count == keyByteCount, "\(construction.name) key must be \(keyByteCount) bytes, got \(key.count)")
        precondition(
            nonce.count == construction.nonceByteCount,
            "\(construction.name) nonce must be \(construction.nonceByteCount) bytes, got \(nonce.count)")
    }
}
