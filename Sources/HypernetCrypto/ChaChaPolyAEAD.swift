import COpenSSL
import CSodium

/// The one implementation behind `AEAD` (XChaCha20-Poly1305) and `ChaChaPolyIETF` (ChaCha20-Poly1305, RFC 8439).
/// The bulk work is OpenSSL's ChaCha20-Poly1305, whose vector code runs 2.3 times as fast as libsodium's here
/// (3.5 against 1.5 GB/s, 64 KiB messages). XChaCha20-Poly1305 is built on it as draft-irtf-cfrg-xchacha
/// defines it (and as libsodium does): the subkey is HChaCha20(key, nonce[0..<16]) (libsodium), the IETF nonce
/// four zero bytes and nonce[16..<24]. The output is byte for byte libsodium's (the draft's test vector and
/// RFC 8439's are checked in the tests).
enum ChaChaPolyAEAD {
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
        checkSizes(construction, key: key, nonce: nonce)
        return withIETFKey(construction, key: key, nonce: nonce) { key, nonce in
            makeBytes(count: plaintext.count + tagByteCount) { out in
                let ok = cipher(
                    encrypt: true, key: key, nonce: nonce, associatedData: associatedData, plaintext, into: out,
                    tag: out + plaintext.count)
                precondition(ok, "\(construction.name) encryption failed")
            }
        }
    }

    /// Opens ciphertext || tag. Throws `authenticationFailed` if the tag does not verify.
    static func open(
        _ construction: Construction, _ ciphertext: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer,
        nonce: UnsafeRawBufferPointer, associatedData: UnsafeRawBufferPointer?
    ) throws(CryptoError) -> [UInt8] {
        checkSizes(construction, key: key, nonce: nonce)
        guard ciphertext.count >= tagByteCount, ciphertext.count - tagByteCount <= Int(Int32.max) else {
            throw .authenticationFailed
        }
        let count = ciphertext.count - tagByteCount
        var verified = false
        var plaintext = withIETFKey(construction, key: key, nonce: nonce) { key, nonce in
            makeBytes(count: count) { out in
                let tag = UnsafeMutableRawPointer(mutating: ciphertext.baseAddress! + count)
                verified = cipher(
                    encrypt: false, key: key, nonce: nonce, associatedData: associatedData,
                    UnsafeRawBufferPointer(rebasing: ciphertext[..<count]), into: out, tag: tag)
            }
        }
        guard verified else {
            // Decrypted before the tag was checked: wiped, never returned.
            plaintext.withUnsafeMutableBytes { sodium_memzero($0.baseAddress, $0.count) }
            throw .authenticationFailed
        }
        return plaintext
    }

    /// One pass of OpenSSL's ChaCha20-Poly1305 over `input` into `out` (as many bytes). Encrypting, the 16-byte tag
    /// is written to `tag`; decrypting, it is read from `tag`, and false means it did not verify.
    private static func cipher(
        encrypt: Bool, key: UnsafePointer<UInt8>, nonce: UnsafePointer<UInt8>, associatedData: UnsafeRawBufferPointer?,
        _ input: UnsafeRawBufferPointer, into out: UnsafeMutablePointer<UInt8>, tag: UnsafeMutableRawPointer
    ) -> Bool {
        let ctx = EVP_CIPHER_CTX_new()!
        defer { EVP_CIPHER_CTX_free(ctx) }
        var length: Int32 = 0
        var ok = EVP_CipherInit_ex(ctx, EVP_chacha20_poly1305(), nil, key, nonce, encrypt ? 1 : 0) == 1
        if let associatedData, !associatedData.isEmpty {
            ok =
                ok
                && EVP_CipherUpdate(ctx, nil, &length, associatedData.nonEmptyPointer, Int32(associatedData.count)) == 1
        }
        if !input.isEmpty {
            ok = ok && EVP_CipherUpdate(ctx, out, &length, input.nonEmptyPointer, Int32(input.count)) == 1
        }
        // Decrypting, the tag goes in before the final call, which checks it; encrypting, it comes out after.
        if !encrypt { ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, Int32(tagByteCount), tag) == 1 }
        ok = ok && EVP_CipherFinal_ex(ctx, out + input.count, &length) == 1
        if encrypt { ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, Int32(tagByteCount), tag) == 1 }
        return ok
    }

    /// Calls `body` with the ChaCha20-Poly1305 (IETF) key and 12-byte nonce of `construction`: the given ones, or
    /// for XChaCha20 the HChaCha20 subkey and the derived nonce.
    private static func withIETFKey<R>(
        _ construction: Construction, key: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer,
        _ body: (UnsafePointer<UInt8>, UnsafePointer<UInt8>) -> R
    ) -> R {
        switch construction {
        case .chacha20IETF:
            return body(key.nonEmptyPointer, nonce.nonEmptyPointer)
        case .xchacha20:
            Sodium.ready()
            // On the stack, wiped after: a sodium_malloc per chunk would cost more than sealing it.
            return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: keyByteCount + 12) { scratch in
                let subkey = scratch.baseAddress!
                let ietfNonce = subkey + keyByteCount
                defer { sodium_memzero(subkey, keyByteCount) }
                let rc = crypto_core_hchacha20(subkey, nonce.nonEmptyPointer, key.nonEmptyPointer, nil)
                precondition(rc == 0, "HChaCha20 failed")
                ietfNonce.update(repeating: 0, count: 4)
                UnsafeMutableRawPointer(ietfNonce + 4).copyMemory(from: nonce.baseAddress! + 16, byteCount: 8)
                return body(subkey, ietfNonce)
            }
        }
    }

    private static func checkSizes(
        _ construction: Construction, key: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer
    ) {
        precondition(
            key.count == keyByteCount, "\(construction.name) key must be \(keyByteCount) bytes, got \(key.count)")
        precondition(
            nonce.count == construction.nonceByteCount,
            "\(construction.name) nonce must be \(construction.nonceByteCount) bytes, got \(nonce.count)")
    }
}
