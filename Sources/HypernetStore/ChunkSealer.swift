import HypernetCrypto
import HypernetModel

/// Turns plaintext into stored chunks and back (docs/store-format.md, "Chunk"):
///
///     key        = BLAKE2b-256(key: epoch key, "hypernet chunk v1" || plaintext)   (keyed convergent)
///     frame      = codec (0 raw, 1 zstd) || data
///     ciphertext = XChaCha20-Poly1305(key, nonce: 24 zero bytes, frame)
///     id         = BLAKE2b-256(ciphertext)
///
/// A zero nonce is safe because each key encrypts exactly one plaintext: equal plaintexts under one epoch
/// give equal chunks (dedup), and nobody without the epoch key can confirm a guessed plaintext.
enum ChunkSealer {
    static let context = Array("hypernet chunk v1".utf8)
    static let zeroNonce = [UInt8](repeating: 0, count: AEAD.nonceByteCount)
    /// Compression is tried on a prefix first; data that is (nearly) incompressible skips the full attempt.
    static let probeLength = 8 << 10
    /// The largest chunk plaintext a peer may make us decompress.
    static let maximumPlaintext = 1 << 22

    struct Sealed {
        var reference: ChunkReference
        var ciphertext: [UInt8]
    }

    static func seal(_ plaintext: UnsafeRawBufferPointer, epochKey: SecureBytes) -> Sealed {
        var hasher = BLAKE2b.Hasher(key: epochKey)
        hasher.update(context)
        hasher.update(plaintext)
        let key = hasher.finalize()
        var frame: [UInt8]
        let probe = UnsafeRawBufferPointer(rebasing: plaintext.prefix(probeLength))
        if plaintext.count >= 64, plaintext.count <= probeLength || probeWorthIt(probe),
            let compressed = Zstd.compressIfSmaller(plaintext)
        {
            frame = [1]
            frame.append(contentsOf: compressed)
        } else {
            frame = [0]
            frame.append(contentsOf: plaintext)
        }
        let ciphertext = key.withUnsafeBytes { k in
            frame.withUnsafeBytes { f in zeroNonce.withUnsafeBytes { n in AEAD.seal(f, key: k, nonce: n) } }
        }
        let id = BLAKE2b.hash(ciphertext)
        return Sealed(reference: ChunkReference(id: id, key: key, length: UInt64(plaintext.count)), ciphertext: ciphertext)
    }

    /// `isData`: the reference's length is the plaintext's (for manifest nodes it is the subtree's).
    /// A prefix that zstd shrinks by at least 1/8 predicts a chunk worth compressing; data that is only a
    /// few percent compressible (most media, fio's buffers) is not worth the time it would cost.
    static func probeWorthIt(_ probe: UnsafeRawBufferPointer) -> Bool {
        guard let compressed = Zstd.compressIfSmaller(probe) else { return false }
        return compressed.count <= probe.count - probe.count / 8
    }

    static func open(_ ciphertext: [UInt8], reference: ChunkReference, isData: Bool) throws(StoreError) -> [UInt8] {
        let object = "chunk \(reference.id.hex)"
        let frame: [UInt8]
        do {
            frame = try reference.key.withUnsafeBytes { k in
                try ciphertext.withUnsafeBytes { c in
                    try zeroNonce.withUnsafeBytes { n in try AEAD.open(c, key: k, nonce: n) }
                }
            }
        } catch {
            throw .corrupt(object: object, reason: "authentication failed")
        }
        guard let codec = frame.first else { throw .corrupt(object: object, reason: "empty frame") }
        let plaintext: [UInt8]
        switch codec {
        case 0:
            plaintext = Array(frame.dropFirst())
        case 1:
            do {
                plaintext = try frame.withUnsafeBytes { f throws(ZstdError) in
                    try Zstd.decompress(UnsafeRawBufferPointer(rebasing: f.dropFirst()), limit: maximumPlaintext)
                }
            } catch {
                throw .corrupt(object: object, reason: "zstd: \(error)")
            }
        default:
            throw .corrupt(object: object, reason: "unknown codec \(codec)")
        }
        guard !isData || UInt64(plaintext.count) == reference.length else {
            throw .corrupt(object: object, reason: "length \(plaintext.count), expected \(reference.length)")
        }
        return plaintext
    }
}
