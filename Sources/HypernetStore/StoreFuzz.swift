import HypernetCrypto
import HypernetModel

/// Entry point for the `FuzzStore` libFuzzer target (`Fuzz/`) and its corpus replay
/// (`Tests/HypernetSyncTests/FuzzCorpusTests.swift`): the decoders of bytes this node reads back from its
/// own disk or is handed as a file, which a damaged disk, another local user's file or a peer's chunk can
/// make anything. As `WireFuzz`: errors are expected and swallowed, broken invariants are returned.
///
/// Input layout `u8 decoder | bytes`, decoder % 3 picks:
/// - 0, a stored or received chunk: `ChunkSealer.open` with a clear-key reference whose id is the bytes'
///   hash (so the id check passes and the frame decoders run: plain, zstd, delta headers), then, for a
///   delta, `ChunkSealer.apply` against a prefix of the bases' total length;
/// - 1, a key file (`KeyFile.parse`; an identity key also through `Keyring.parseIdentity`);
/// - 2, the header of an identity export file (`IdentityExport.Header.parse`; what is checked before a
///   passphrase is asked for and the key derived).
public enum StoreFuzz {
    public static func records(_ data: [UInt8]) -> [String] {
        guard let selector = data.first else { return [] }
        let bytes = Array(data.dropFirst())
        switch selector % 3 {
        case 0:
            let reference = ChunkReference(
                id: BLAKE2b.hash(bytes), key: ChunkSealer.clearKey, length: UInt64(bytes.count))
            switch try? ChunkSealer.open(bytes, reference: reference) {
            case .full(let plaintext):
                if plaintext.count > ChunkSealer.maximumPlaintext {
                    return ["store: a chunk opened to \(plaintext.count) bytes, over the limit"]
                }
            case .delta(let delta):
                let prefix = [UInt8](repeating: 0x5A, count: Int(delta.bases.reduce(0) { $0 + $1.length }))
                if let plaintext = try? ChunkSealer.apply(delta, prefix: prefix, object: reference.id),
                    plaintext.count > ChunkSealer.maximumPlaintext
                {
                    return ["store: a delta applied to \(plaintext.count) bytes, over the limit"]
                }
            case nil:
                break
            }
        case 1:
            if let contents = try? KeyFile.parse(bytes[...], path: "fuzz") {
                if contents.kind == .identity, let (_, _, name) = try? Keyring.parseIdentity(contents, path: "fuzz"),
                    let name, name.utf8.isEmpty || name.utf8.count > 255
                {
                    return ["store: an identity key file named its identity with \(name.utf8.count) bytes"]
                }
            }
        default:
            if (try? IdentityExport.Header.parse(bytes)) != nil,
                !(IdentityExport.minimumByteCount...IdentityExport.maximumByteCount).contains(bytes.count)
            {
                return ["store: an identity export header of a \(bytes.count)-byte file was accepted"]
            }
        }
        return []
    }

    /// Small valid inputs (name, bytes), deterministic: `Fuzz/corpus/FuzzStore/seed-<name>` is exactly
    /// this (FuzzCorpusTests checks it, and rewrites it with `HYPERNET_FUZZ_WRITE_SEEDS=1`).
    public static func seeds() -> [(name: String, bytes: [UInt8])] {
        let text = [UInt8]("hypernet chunk, stored in the clear. ".utf8)
        let plain = [UInt8](repeating: 0x41, count: 3000) + text
        let compressed = plain.withUnsafeBytes { Zstd.compressIfSmaller($0, level: 3)! }
        let base = ChunkReference(id: BLAKE2b.hash(plain), key: ChunkSealer.clearKey, length: UInt64(plain.count))
        var delta = ByteWriter()
        delta.u8(2)
        delta.u8(1)
        base.encode(into: &delta)
        let edited = plain + text
        let prefix = [UInt8](repeating: 0x5A, count: plain.count)
        let deltaData = edited.withUnsafeBytes { e in
            prefix.withUnsafeBytes { Zstd.compress(e, prefix: $0, level: 3, capacity: edited.count)! }
        }
        let identity = [UInt8](repeating: 1, count: 32) + [UInt8](repeating: 2, count: 32) + [4] + Array("test".utf8)
        let exportHeader =
            IdentityExport.magic + [IdentityExport.version, PasswordHash.argon2id13]
            + le(PasswordHash.minimumOpsLimit) + le(PasswordHash.minimumMemLimit)
            + [UInt8](repeating: 3, count: 16 + 24)
        return [
            ("chunk-plain", [0, 0] + text),
            ("chunk-zstd", [0, 1] + compressed),
            ("chunk-delta", [0] + delta.bytes + deltaData),
            ("keyfile-identity", [1] + keyFileHeader(.identity) + identity),
            ("keyfile-node", [1] + keyFileHeader(.node) + Array(identity[..<32])),
            (
                "export-header",
                [2] + exportHeader + [UInt8](repeating: 0, count: IdentityExport.minimumByteCount - exportHeader.count)
            ),
        ]
    }

    private static func keyFileHeader(_ kind: KeyFile.Kind) -> [UInt8] {
        KeyFile.magic + [KeyFile.version, kind.rawValue]
    }

    private static func le(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
}
