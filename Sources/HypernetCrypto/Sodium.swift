import CSodium

/// One-time libsodium set-up. Every entry point of this module calls `Sodium.ready()` before touching
/// libsodium, so no caller has to remember `sodium_init`.
enum Sodium {
    /// Swift runs a global/static initializer exactly once, thread-safely (swift_once), which is the
    /// guarantee `sodium_init` needs; it is itself idempotent, so this is belt and braces.
    private static let initialized: Void = {
        precondition(sodium_init() >= 0, "sodium_init failed")
        // The Swift API hard-codes these sizes in its types; a libsodium that disagrees must not run.
        precondition(crypto_generichash_bytes() == Digest.byteCount)
        precondition(crypto_sign_publickeybytes() == SigningPublicKey.byteCount)
        precondition(crypto_sign_seedbytes() == SigningKeyPair.seedByteCount)
        precondition(crypto_sign_bytes() == SigningKeyPair.signatureByteCount)
        precondition(crypto_box_publickeybytes() == BoxPublicKey.byteCount)
        precondition(crypto_box_secretkeybytes() == BoxKeyPair.secretKeyByteCount)
        precondition(crypto_scalarmult_bytes() == BoxPublicKey.byteCount)
        precondition(crypto_scalarmult_scalarbytes() == BoxKeyPair.secretKeyByteCount)
        precondition(crypto_aead_xchacha20poly1305_ietf_keybytes() == AEAD.keyByteCount)
        precondition(crypto_aead_xchacha20poly1305_ietf_npubbytes() == AEAD.nonceByteCount)
        precondition(crypto_aead_xchacha20poly1305_ietf_abytes() == AEAD.tagByteCount)
    }()

    @inline(__always)
    static func ready() { _ = initialized }
}

extension UnsafeRawBufferPointer {
    /// The C view libsodium wants; nil only for an empty buffer, which libsodium accepts with length 0.
    @inline(__always)
    var sodiumPointer: UnsafePointer<UInt8>? { baseAddress?.assumingMemoryBound(to: UInt8.self) }

    /// For arguments libsodium declares nonnull; the caller has checked the buffer is not empty.
    @inline(__always)
    var nonEmptyPointer: UnsafePointer<UInt8> { baseAddress!.assumingMemoryBound(to: UInt8.self) }
}

/// Builds a `[UInt8]` of exactly `count` bytes filled by `body`. `body` always runs, also for `count == 0`
/// (an empty AEAD/box plaintext must still be authenticated), with a valid pointer.
@inline(__always)
func makeBytes(count: Int, _ body: (UnsafeMutablePointer<UInt8>) -> Void) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: max(count, 1)) { buffer, initialized in
        body(buffer.baseAddress!)
        initialized = count
    }
}
