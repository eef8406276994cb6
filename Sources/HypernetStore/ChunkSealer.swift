import HypernetCrypto
import HypernetModel

/// Turns plaintext into stored chunks and back (docs/store-format.md, "Chunk" and "Delta chunk"):
///
///     full:   key   = BLAKE2b-256(key: epoch key, "hypernet chunk v1" || plaintext)        (keyed convergent)
///             frame = codec (0 raw, 1 zstd) || data
///     delta:  frame = 2 || depth u8 || base ChunkReference || zstd frame made with the base plaintext as prefix
///             key   = BLAKE2b-256(key: epoch key, "hypernet chunk delta v1" || frame)
///     ciphertext = XChaCha20-Poly1305(key, nonce: 24 zero bytes, frame)
///     id         = BLAKE2b-256(ciphertext)
///
/// A zero nonce is safe because each key encrypts exactly one frame: a full key is a PRF of the plaintext
/// (equal plaintexts under one epoch give equal chunks: dedup), a delta key a PRF of the frame itself, so a
/// delta and a full frame of the same plaintext never share a key. Nobody without the epoch key can confirm
/// a guessed plaintext.
enum ChunkSealer {
    static let context = Array("hypernet chunk v1".utf8)
    static let deltaContext = Array("hypernet chunk delta v1".utf8)
    static let zeroNonce = [UInt8](repeating: 0, count: AEAD.nonceByteCount)
    /// Compression is tried on a prefix first; data that is (nearly) incompressible skips the full attempt.
    static let probeLength = 8 << 10
    /// The largest chunk plaintext a peer may make us decompress.
    static let maximumPlaintext = 1 << 22
    /// Longest chain of deltas above a full chunk: reading a chunk opens at most this many more objects.
    static let maximumDeltaDepth = 32
    /// codec, depth, base reference.
    static let deltaHeaderByteCount = 2 + ChunkReference.encodedByteCount
    /// Deltas are few and small; level 3 finds the matches in the base that level 1's sparser table misses.
    static let deltaLevel: Int32 = 3

    struct Sealed {
        var reference: ChunkReference
        var ciphertext: [UInt8]
    }

    /// A delta frame, opened: what to decompress against which base.
    struct Delta {
        /// The base chunk; `length` is the base's plaintext length (for manifest nodes too).
        var base: ChunkReference
        /// 1 + the base's depth (a full chunk has depth 0).
        var depth: Int
        var data: ArraySlice<UInt8>
    }

    enum Opened {
        case full([UInt8])
        case delta(Delta)
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
        return encrypt(frame, key: key, length: plaintext.count)
    }

    /// The delta of `plaintext` against `base` (whose plaintext is `basePlaintext`, at `baseDepth`), or nil
    /// unless its sealed size is at most `limit` bytes.
    static func sealDelta(
        _ plaintext: UnsafeRawBufferPointer, base: ChunkReference, basePlaintext: [UInt8], baseDepth: Int, limit: Int,
        epochKey: SecureBytes
    ) -> Sealed? {
        precondition(baseDepth < maximumDeltaDepth && UInt64(basePlaintext.count) == base.length)
        let capacity = limit - deltaHeaderByteCount - AEAD.tagByteCount
        guard capacity > 0,
            let compressed = basePlaintext.withUnsafeBytes({ prefix in
                Zstd.compress(plaintext, prefix: prefix, level: deltaLevel, capacity: capacity)
            })
        else { return nil }
        var w = ByteWriter(capacity: deltaHeaderByteCount + compressed.count)
        w.u8(2)
        w.u8(UInt8(baseDepth + 1))
        base.encode(into: &w)
        w.raw(compressed)
        let frame = w.bytes
        var hasher = BLAKE2b.Hasher(key: epochKey)
        hasher.update(deltaContext)
        hasher.update(frame)
        return encrypt(frame, key: hasher.finalize(), length: plaintext.count)
    }

    private static func encrypt(_ frame: [UInt8], key: Digest, length: Int) -> Sealed {
        let ciphertext = key.withUnsafeBytes { k in
            frame.withUnsafeBytes { f in zeroNonce.withUnsafeBytes { n in AEAD.seal(f, key: k, nonce: n) } }
        }
        let id = BLAKE2b.hash(ciphertext)
        return Sealed(reference: ChunkReference(id: id, key: key, length: UInt64(length)), ciphertext: ciphertext)
    }

    /// A prefix that zstd shrinks by at least 1/8 predicts a chunk worth compressing; data that is only a
    /// few percent compressible (most media, fio's buffers) is not worth the time it would cost.
    static func probeWorthIt(_ probe: UnsafeRawBufferPointer) -> Bool {
        guard let compressed = Zstd.compressIfSmaller(probe) else { return false }
        return compressed.count <= probe.count - probe.count / 8
    }

    /// Decrypts and decodes one stored object: a full chunk's plaintext, or a delta still to be applied.
    static func open(_ ciphertext: [UInt8], reference: ChunkReference) throws(StoreError) -> Opened {
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
        switch codec {
        case 0:
            return .full(Array(frame.dropFirst()))
        case 1:
            do {
                return .full(
                    try frame.withUnsafeBytes { f throws(ZstdError) in
                        try Zstd.decompress(UnsafeRawBufferPointer(rebasing: f.dropFirst()), limit: maximumPlaintext)
                    })
            } catch {
                throw .corrupt(object: object, reason: "zstd: \(error)")
            }
        case 2:
            var r = ByteReader(frame, context: "delta frame")
            do {
                _ = try r.u8()
                let depth = Int(try r.u8())
                let base = try ChunkReference(from: &r)
                guard (1...maximumDeltaDepth).contains(depth) else {
                    throw StoreError.corrupt(object: object, reason: "delta depth \(depth) outside 1…\(maximumDeltaDepth)")
                }
                guard base.length <= UInt64(maximumPlaintext) else {
                    throw StoreError.corrupt(object: object, reason: "delta base length \(base.length) over the limit")
                }
                return .delta(Delta(base: base, depth: depth, data: frame[deltaHeaderByteCount...]))
            } catch let error as StoreError {
                throw error
            } catch {
                throw .corrupt(object: object, reason: "delta frame: \(error)")
            }
        default:
            throw .corrupt(object: object, reason: "unknown codec \(codec)")
        }
    }

    /// The plaintext a delta encodes, given its base's plaintext (already checked against `delta.base.length`).
    static func apply(_ delta: Delta, basePlaintext: [UInt8], object: ChunkID) throws(StoreError) -> [UInt8] {
        let result = delta.data.withUnsafeBytes { data in
            basePlaintext.withUnsafeBytes { prefix in
                Result { () throws(ZstdError) in try Zstd.decompress(data, prefix: prefix, limit: maximumPlaintext) }
            }
        }
        switch result {
        case .success(let plaintext): return plaintext
        case .failure(let error):
            throw .corrupt(object: "chunk \(object.hex)", reason: "delta against \(delta.base.id.hex): zstd: \(error)")
        }
    }
}
