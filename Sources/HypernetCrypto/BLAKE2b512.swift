import CSodium

/// BLAKE2b with its full 64-byte output (unkeyed crypto_generichash), and the HMAC and HKDF built on it.
/// This is Noise's "BLAKE2b" hash function (HASHLEN 64, BLOCKLEN 128; Noise spec rev 34, sections 4.3
/// and 12.8); `BLAKE2b` is the 32-byte variant used for content ids.
public enum BLAKE2b512 {
    public static let byteCount = 64
    /// BLAKE2b's block size: HMAC pads its key to this length.
    public static let blockByteCount = 128

    /// The hash of the concatenation of `parts`, streamed through one state rather than concatenated.
    public static func hash(_ parts: [UInt8]...) -> [UInt8] {
        makeBytes(count: byteCount) { out in
            digest(into: out) { update in
                for part in parts { part.withUnsafeBytes(update) }
            }
        }
    }

    /// Keyed BLAKE2b-512 (`crypto_generichash` with a 16...64-byte key and 64 bytes out), written to `out`: the
    /// primitive of the reference's keyed test vectors, which blind tokens truncate (docs/security.md).
    public static func hash(
        _ data: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer
    ) {
        Sodium.ready()
        precondition(
            (crypto_generichash_keybytes_min()...crypto_generichash_keybytes_max()).contains(key.count),
            "BLAKE2b key must be 16...64 bytes, got \(key.count)")
        let rc = crypto_generichash(
            out.assumingMemoryBound(to: UInt8.self), byteCount, data.sodiumPointer, UInt64(data.count),
            key.sodiumPointer, key.count)
        precondition(rc == 0, "crypto_generichash failed")
    }

    public static func hash(_ data: [UInt8], key: [UInt8]) -> [UInt8] {
        makeBytes(count: byteCount) { out in
            data.withUnsafeBytes { d in key.withUnsafeBytes { hash(d, key: $0, into: out) } }
        }
    }

    /// HMAC (RFC 2104) over BLAKE2b-512: Noise's HMAC-HASH.
    public static func hmac(key: SecureBytes, message: [UInt8]) -> SecureBytes {
        let mac = SecureBytes(count: byteCount)
        key.withUnsafeBytes { key in
            message.withUnsafeBytes { message in
                mac.initialize { out in hmac(key: key, into: out.baseAddress!, message: [message]) }
            }
        }
        return mac
    }

    /// Noise's HKDF (section 4.3): temp_key = HMAC(chaining_key, input_key_material), output1 =
    /// HMAC(temp_key, 0x01), output_i = HMAC(temp_key, output_(i-1) || i); 2 or 3 outputs of 64 bytes.
    public static func hkdf(
        chainingKey: SecureBytes, inputKeyMaterial: UnsafeRawBufferPointer, outputCount: Int
    ) -> [SecureBytes] {
        precondition((2...3).contains(outputCount), "Noise's HKDF has 2 or 3 outputs, not \(outputCount)")
        let tempKey = SecureBytes(count: byteCount)
        chainingKey.withUnsafeBytes { chainingKey in
            tempKey.initialize { out in hmac(key: chainingKey, into: out.baseAddress!, message: [inputKeyMaterial]) }
        }
        var outputs: [SecureBytes] = []
        tempKey.withUnsafeBytes { tempKey in
            for counter in 1...UInt8(outputCount) {
                let output = SecureBytes(count: byteCount)
                output.initialize { out in
                    Swift.withUnsafeBytes(of: counter) { counter in
                        guard let previous = outputs.last else {
                            return hmac(key: tempKey, into: out.baseAddress!, message: [counter])
                        }
                        previous.withUnsafeBytes { hmac(key: tempKey, into: out.baseAddress!, message: [$0, counter]) }
                    }
                }
                outputs.append(output)
            }
        }
        return outputs
    }

    public static func hkdf(chainingKey: SecureBytes, inputKeyMaterial: SecureBytes, outputCount: Int) -> [SecureBytes]
    {
        inputKeyMaterial.withUnsafeBytes {
            hkdf(chainingKey: chainingKey, inputKeyMaterial: $0, outputCount: outputCount)
        }
    }

    /// HASH((K ^ opad) || HASH((K ^ ipad) || message)), K the key zero-padded to a block (hashed first if
    /// longer). The message is the concatenation of `message`'s buffers.
    private static func hmac(
        key: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer, message: [UnsafeRawBufferPointer]
    ) {
        // The padded key and the inner hash are key material: kept on the stack and wiped.
        withUnsafeTemporaryAllocation(byteCount: blockByteCount + byteCount, alignment: 16) { scratch in
            let pad = UnsafeMutableRawBufferPointer(rebasing: scratch[..<blockByteCount])
            let inner = UnsafeMutableRawBufferPointer(rebasing: scratch[blockByteCount...])
            pad.initializeMemory(as: UInt8.self, repeating: 0)
            if key.count > blockByteCount {
                digest(into: pad.baseAddress!) { update in update(key) }
            } else {
                pad.copyMemory(from: key)
            }
            for i in pad.indices { pad[i] ^= 0x36 }
            digest(into: inner.baseAddress!) { update in
                update(UnsafeRawBufferPointer(pad))
                for part in message { update(part) }
            }
            for i in pad.indices { pad[i] ^= 0x36 ^ 0x5c }
            digest(into: out) { update in
                update(UnsafeRawBufferPointer(pad))
                update(UnsafeRawBufferPointer(inner))
            }
            sodium_memzero(scratch.baseAddress!, scratch.count)
        }
    }

    /// One crypto_generichash pass fed by `body`; writes 64 bytes to `out`. The state lives on the stack
    /// with the 64-byte alignment libsodium declares, and is wiped because HMAC feeds it key material.
    private static func digest(into out: UnsafeMutableRawPointer, _ body: ((UnsafeRawBufferPointer) -> Void) -> Void) {
        Sodium.ready()
        withUnsafeTemporaryAllocation(byteCount: crypto_generichash_statebytes(), alignment: 64) { memory in
            let state = OpaquePointer(memory.baseAddress!)
            precondition(crypto_generichash_init(state, nil, 0, byteCount) == 0)
            body { data in
                precondition(crypto_generichash_update(state, data.sodiumPointer, UInt64(data.count)) == 0)
            }
            precondition(crypto_generichash_final(state, out.assumingMemoryBound(to: UInt8.self), byteCount) == 0)
            sodium_memzero(memory.baseAddress!, memory.count)
        }
    }
}
