import HypernetCrypto

/// Small values sealed under an epoch key: a random nonce in front of XChaCha20-Poly1305 under
/// BLAKE2b-256(key = epoch key, context), with associated data binding the value to its place
/// (docs/store-format.md: revision metadata; docs/security.md: permission block labels).
enum EpochSeal {
    static func seal(_ plaintext: [UInt8], epochKey: SecureBytes, context: [UInt8], associatedData: [UInt8]) -> [UInt8]
    {
        let nonce = SecureRandom.bytes(count: AEAD.nonceByteCount)
        let key = BLAKE2b.hash(context, key: epochKey)
        return nonce
            + key.bytes.withUnsafeBytes { k in
                plaintext.withUnsafeBytes { p in
                    nonce.withUnsafeBytes { n in
                        associatedData.withUnsafeBytes { ad in AEAD.seal(p, key: k, nonce: n, associatedData: ad) }
                    }
                }
            }
    }

    /// Nil if it is too short or does not authenticate under this key and associated data.
    static func open(_ sealed: [UInt8], epochKey: SecureBytes, context: [UInt8], associatedData: [UInt8]) -> [UInt8]? {
        guard sealed.count >= AEAD.nonceByteCount + AEAD.tagByteCount else { return nil }
        let nonce = Array(sealed[..<AEAD.nonceByteCount])
        let box = Array(sealed[AEAD.nonceByteCount...])
        let key = BLAKE2b.hash(context, key: epochKey)
        return try? key.bytes.withUnsafeBytes { k in
            try box.withUnsafeBytes { c in
                try nonce.withUnsafeBytes { n in
                    try associatedData.withUnsafeBytes { ad in try AEAD.open(c, key: k, nonce: n, associatedData: ad) }
                }
            }
        }
    }
}
