import HypernetCrypto
import Testing

@Suite struct SigningTests {
    /// RFC 8032 §7.1: (seed, public key, message, signature).
    static let vectors: [(seed: String, publicKey: String, message: String, signature: String)] = [
        (  // TEST 1
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        ),
        (  // TEST 2
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
        ),
    ]

    @Test(arguments: 0..<vectors.count)
    func rfc8032(_ index: Int) throws {
        let v = Self.vectors[index]
        let pair = try SigningKeyPair(seed: SecureBytes(hex(v.seed)))
        #expect(pair.publicKey.bytes == hex(v.publicKey))
        #expect(pair.seed.bytes == hex(v.seed))
        let signature = pair.signature(for: hex(v.message))
        #expect(signature == hex(v.signature))
        #expect(pair.publicKey.isValidSignature(signature, for: hex(v.message)))
    }

    @Test func rejectsForgeries() throws {
        let pair = SigningKeyPair.generate()
        let message: [UInt8] = Array("revision".utf8)
        var signature = pair.signature(for: message)
        #expect(pair.publicKey.isValidSignature(signature, for: message))
        #expect(!pair.publicKey.isValidSignature(signature, for: message + [0]))
        #expect(!SigningKeyPair.generate().publicKey.isValidSignature(signature, for: message))
        #expect(!pair.publicKey.isValidSignature(Array(signature.dropLast()), for: message))
        signature[10] ^= 1
        #expect(!pair.publicKey.isValidSignature(signature, for: message))
    }

    @Test func restoresFromSeedAndChecksLengths() throws {
        let pair = SigningKeyPair.generate()
        let restored = try SigningKeyPair(seed: SecureBytes(pair.seed.bytes))
        #expect(restored.publicKey == pair.publicKey)
        #expect(throws: CryptoError.invalidLength(expected: 32, actual: 31)) {
            try SigningKeyPair(seed: SecureBytes(count: 31))
        }
        #expect(throws: CryptoError.invalidLength(expected: 32, actual: 33)) {
            try SigningPublicKey(bytes: [UInt8](repeating: 0, count: 33))
        }
    }
}
