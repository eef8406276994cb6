import HypernetCrypto

/// Noise SymmetricState (spec section 5.2) with BLAKE2b: the chaining key, the handshake hash and the
/// handshake's CipherState.
struct NoiseSymmetricState: Sendable {
    private var chainingKey: SecureBytes
    private(set) var handshakeHash: [UInt8]
    private var cipher = NoiseCipherState(key: nil)

    /// InitializeSymmetric: a name of at most HASHLEN bytes is zero-padded to HASHLEN, a longer one hashed.
    init(protocolName: String) {
        let name = Array(protocolName.utf8)
        handshakeHash =
            name.count <= BLAKE2b512.byteCount
            ? name + [UInt8](repeating: 0, count: BLAKE2b512.byteCount - name.count) : BLAKE2b512.hash(name)
        chainingKey = SecureBytes(handshakeHash)
    }

    var hasKey: Bool { cipher.hasKey }

    mutating func mixHash(_ data: [UInt8]) {
        handshakeHash = BLAKE2b512.hash(handshakeHash, data)
    }

    /// ck, temp_k = HKDF(ck, ikm, 2); the cipher key is temp_k cut to its first 32 bytes (HASHLEN is 64).
    mutating func mixKey(_ inputKeyMaterial: SecureBytes) {
        let outputs = BLAKE2b512.hkdf(chainingKey: chainingKey, inputKeyMaterial: inputKeyMaterial, outputCount: 2)
        chainingKey = outputs[0]
        cipher = NoiseCipherState(key: Self.cipherKey(outputs[1]))
    }

    mutating func encryptAndHash(_ plaintext: [UInt8]) throws(NoiseError) -> [UInt8] {
        // Typed throws do not pass through withUnsafeBytes (rethrows); carry the result out instead.
        let ciphertext = try plaintext.withUnsafeBytes { plaintext in
            Result { () throws(NoiseError) in try cipher.encrypt(plaintext, associatedData: handshakeHash) }
        }.get()
        mixHash(ciphertext)
        return ciphertext
    }

    mutating func decryptAndHash(_ ciphertext: ArraySlice<UInt8>) throws(NoiseError) -> [UInt8] {
        let plaintext = try ciphertext.withUnsafeBytes { ciphertext in
            Result { () throws(NoiseError) in try cipher.decrypt(ciphertext, associatedData: handshakeHash) }
        }.get()
        mixHash(Array(ciphertext))
        return plaintext
    }

    /// The initiator-to-responder and responder-to-initiator cipher states, in that order.
    func split() -> (NoiseCipherState, NoiseCipherState) {
        let outputs = [UInt8]().withUnsafeBytes {
            BLAKE2b512.hkdf(chainingKey: chainingKey, inputKeyMaterial: $0, outputCount: 2)
        }
        return (NoiseCipherState(key: Self.cipherKey(outputs[0])), NoiseCipherState(key: Self.cipherKey(outputs[1])))
    }

    private static func cipherKey(_ hkdfOutput: SecureBytes) -> SecureBytes {
        hkdfOutput.withUnsafeBytes { SecureBytes($0.prefix(ChaChaPolyIETF.keyByteCount)) }
    }
}
