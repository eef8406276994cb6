import HypernetCrypto
import HypernetModel

/// Turns plaintext into stored chunks and back (docs/store-format.md, "Chunk" and "Delta chunk"):
///
///     full:   key   = HMAC-SHA-256(key: epoch key, "hypernet chunk v2" || plaintext)        (keyed convergent)
///             frame = codec (0 raw, 1 zstd) || data
///     delta:  frame = 2 || depth u8 || base ChunkReference || zstd frame made with the base plaintext as prefix
///             key   = HMAC-SHA-256(key: epoch key, "hypernet chunk delta v2" || frame)
///     multi-base delta (2…4 bases, their plaintexts concatenated in order as the prefix):
///             frame = 3 || depth u8 || count u8 || count × ChunkReference || zstd frame
///             key   = HMAC-SHA-256(key: epoch key, "hypernet chunk multi-base delta v2" || frame)
///     ciphertext = XChaCha20-Poly1305(key, nonce: 24 zero bytes, frame)
///     id         = BLAKE2b-256(ciphertext)
///     public epoch (its key is `PermissionBlock.publicEpochKey`): stored = frame, in the clear; key = 32 zero
///             bytes (`clearKey`, which no keyed hash yields but by a 2^-256 chance); id = BLAKE2b-256(frame), which
///             a reader checks since no AEAD tag does
///
/// A zero nonce is safe because each key encrypts exactly one frame: a full key is a PRF of the plaintext
/// (equal plaintexts under one epoch give equal chunks: dedup), a delta key a PRF of the frame itself, so a
/// delta and a full frame of the same plaintext never share a key. Nobody without the epoch key can confirm
/// a guessed plaintext. Readers never derive keys (references carry them): chunks written with the v1 keys
/// (keyed BLAKE2b-256, before HMAC-SHA-256 was chosen for speed) read the same, they only do not deduplicate
/// against v2 ones.
enum ChunkSealer {
    static let context = Array("hypernet chunk v2".utf8)
    static let deltaContext = Array("hypernet chunk delta v2".utf8)
    static let multiBaseDeltaContext = Array("hypernet chunk multi-base delta v2".utf8)
    static let zeroNonce = [UInt8](repeating: 0, count: AEAD.nonceByteCount)
    /// The key of a chunk stored in the clear (a public epoch's).
    static let clearKey = try! Digest(bytes: [UInt8](repeating: 0, count: 32))
    /// Compression is tried on a prefix first; data that is (nearly) incompressible skips the full attempt.
    static let probeLength = 8 << 10
    /// The largest chunk plaintext a peer may make us decompress.
    static let maximumPlaintext = 1 << 22
    /// Longest chain of deltas above a full chunk: reading a chunk opens at most this many more objects.
    static let maximumDeltaDepth = 32
    /// The most bases one delta names (codec 3); one base is codec 2.
    static let maximumDeltaBases = 4
    /// The most bytes of base plaintext one delta decompresses against (all its bases together).
    static let maximumDeltaPrefix = maximumPlaintext
    /// Deltas are few and small; level 3 finds the matches in the base that level 1's sparser table misses.
    static let deltaLevel: Int32 = 3

    struct Sealed {
        var reference: ChunkReference
        var ciphertext: [UInt8]
    }

    /// A delta frame, opened: what to decompress against which bases.
    struct Delta {
        /// The base objects in prefix order; each `length` is that base's plaintext length (for manifest nodes
        /// too). One base: codec 2; 2…`maximumDeltaBases`: codec 3.
        var bases: [ChunkReference]
        /// 1 + the greatest depth among the bases (a full chunk has depth 0).
        var depth: Int
        var data: ArraySlice<UInt8>
    }

    enum Opened {
        case full([UInt8])
        case delta(Delta)
    }

    static func seal(_ plaintext: UnsafeRawBufferPointer, epochKey: SecureBytes) -> Sealed {
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
        if isPublic(epochKey) { return inTheClear(frame, length: plaintext.count) }
        return encrypt(frame, key: chunkKey(epochKey, context, plaintext), length: plaintext.count)
    }

    /// HMAC-SHA-256 under the epoch key of `context` || `data`.
    static func chunkKey(_ epochKey: SecureBytes, _ context: [UInt8], _ data: UnsafeRawBufferPointer) -> Digest {
        context.withUnsafeBytes { c in HMACSHA256.mac(key: epochKey, [c, data]) }
    }

    static func isPublic(_ epochKey: SecureBytes) -> Bool { epochKey.isEqual(to: PermissionBlock.publicEpochKey) }

    private static func inTheClear(_ frame: [UInt8], length: Int) -> Sealed {
        Sealed(
            reference: ChunkReference(id: BLAKE2b.hash(frame), key: clearKey, length: UInt64(length)), ciphertext: frame
        )
    }

    /// The delta of `plaintext` against `bases` (whose plaintexts, concatenated in order, are `prefix`; the
    /// deepest at `baseDepth`), or nil unless its sealed size is at most `limit` bytes.
    static func sealDelta(
        _ plaintext: UnsafeRawBufferPointer, bases: [ChunkReference], prefix: [UInt8], baseDepth: Int, limit: Int,
        epochKey: SecureBytes
    ) -> Sealed? {
        precondition(
            (1...maximumDeltaBases).contains(bases.count) && baseDepth < maximumDeltaDepth
                && prefix.count <= maximumDeltaPrefix && UInt64(prefix.count) == bases.reduce(0) { $0 + $1.length })
        let headerByteCount = deltaHeaderByteCount(bases: bases.count)
        let capacity = limit - headerByteCount - AEAD.tagByteCount
        guard capacity > 0,
            let compressed = prefix.withUnsafeBytes({ p in
                Zstd.compress(plaintext, prefix: p, level: deltaLevel, capacity: capacity)
            })
        else { return nil }
        var w = ByteWriter(capacity: headerByteCount + compressed.count)
        // One base keeps codec 2, byte for byte what format 3 wrote.
        w.u8(bases.count == 1 ? 2 : 3)
        w.u8(UInt8(baseDepth + 1))
        if bases.count > 1 { w.u8(UInt8(bases.count)) }
        for base in bases { base.encode(into: &w) }
        w.raw(compressed)
        let frame = w.bytes
        if isPublic(epochKey) { return inTheClear(frame, length: plaintext.count) }
        let key = frame.withUnsafeBytes {
            chunkKey(epochKey, bases.count == 1 ? deltaContext : multiBaseDeltaContext, $0)
        }
        return encrypt(frame, key: key, length: plaintext.count)
    }

    /// codec, depth, [count,] references.
    static func deltaHeaderByteCount(bases: Int) -> Int {
        (bases == 1 ? 2 : 3) + bases * ChunkReference.encodedByteCount
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
        if reference.key == clearKey {
            // No tag to check: the id, which the (authenticated) reference names, is the integrity check.
            guard BLAKE2b.hash(ciphertext) == reference.id else {
                throw .corrupt(object: object, reason: "bytes do not match its id")
            }
            frame = ciphertext
        } else {
            do {
                frame = try reference.key.withUnsafeBytes { k in
                    try ciphertext.withUnsafeBytes { c in
                        try zeroNonce.withUnsafeBytes { n in try AEAD.open(c, key: k, nonce: n) }
                    }
                }
            } catch {
                throw .corrupt(object: object, reason: "authentication failed")
            }
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
        case 2, 3:
            return .delta(try openDelta(frame, object: object))
        default:
            throw .corrupt(object: object, reason: "unknown codec \(codec)")
        }
    }

    /// Parses a delta frame (codec 2 or 3) and checks what can be checked without the bases.
    private static func openDelta(_ frame: [UInt8], object: String) throws(StoreError) -> Delta {
        var r = ByteReader(frame, context: "delta frame")
        let codec: UInt8
        let depth: Int
        let count: Int
        do {
            codec = try r.u8()
            depth = Int(try r.u8())
            count = codec == 2 ? 1 : Int(try r.u8())
        } catch {
            throw .corrupt(object: object, reason: "delta frame: \(error)")
        }
        guard (1...maximumDeltaDepth).contains(depth) else {
            throw .corrupt(object: object, reason: "delta depth \(depth) outside 1…\(maximumDeltaDepth)")
        }
        guard codec == 2 || (2...maximumDeltaBases).contains(count) else {
            throw .corrupt(object: object, reason: "delta base count \(count) outside 2…\(maximumDeltaBases)")
        }
        var bases: [ChunkReference] = []
        do {
            for _ in 0..<count { bases.append(try ChunkReference(from: &r)) }
        } catch {
            throw .corrupt(object: object, reason: "delta frame: \(error)")
        }
        // Each length is checked before summing, so the sum of at most 4 cannot overflow.
        if let base = bases.first(where: { $0.length > UInt64(maximumPlaintext) }) {
            throw .corrupt(object: object, reason: "delta base length \(base.length) over the limit")
        }
        let prefixLength = bases.reduce(0) { $0 + $1.length }
        guard prefixLength <= UInt64(maximumDeltaPrefix) else {
            throw .corrupt(object: object, reason: "delta bases total \(prefixLength) bytes, over the limit")
        }
        return Delta(bases: bases, depth: depth, data: frame[deltaHeaderByteCount(bases: count)...])
    }

    /// The plaintext a delta encodes, given its bases' plaintexts concatenated in order (already checked
    /// against the bases' lengths).
    static func apply(_ delta: Delta, prefix: [UInt8], object: ChunkID) throws(StoreError) -> [UInt8] {
        let result = delta.data.withUnsafeBytes { data in
            prefix.withUnsafeBytes { p in
                Result { () throws(ZstdError) in try Zstd.decompress(data, prefix: p, limit: maximumPlaintext) }
            }
        }
        switch result {
        case .success(let plaintext): return plaintext
        case .failure(let error):
            let bases = delta.bases.map(\.id.hex).joined(separator: ", ")
            throw .corrupt(object: "chunk \(object.hex)", reason: "delta against \(bases): zstd: \(error)")
        }
    }
}
