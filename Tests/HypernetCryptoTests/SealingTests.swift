import HypernetCrypto
import Testing

@Suite struct SealingTests {
    /// draft-irtf-cfrg-xchacha-03, Appendix A.3.1 (AEAD_XChaCha20_Poly1305).
    @Test func xchachaDraftVector() throws {
        let plaintext = Array(
            "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it."
                .utf8)
        let aad = hex("50515253c0c1c2c3c4c5c6c7")
        let key = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
        let nonce = hex("404142434445464748494a4b4c4d4e4f5051525354555657")
        let expected = hex(
            """
            bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb
            731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452
            2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9
            21f9664c97637da9768812f615c68b13b52e
            c0875924c1c7987947deafd8780acf49
            """)
        #expect(AEAD.seal(plaintext, key: key, nonce: nonce, associatedData: aad) == expected)
        #expect(AEAD.seal(plaintext, key: SecureBytes(key), nonce: nonce, associatedData: aad) == expected)
        #expect(try AEAD.open(expected, key: key, nonce: nonce, associatedData: aad) == plaintext)
        #expect(try AEAD.open(expected, key: SecureBytes(key), nonce: nonce, associatedData: aad) == plaintext)
    }

    @Test func aeadRejectsTampering() throws {
        let key = SecureBytes.random(count: AEAD.keyByteCount)
        let nonce = SecureRandom.bytes(count: AEAD.nonceByteCount)
        for plaintext in [[], [UInt8](repeating: 7, count: 1000)] {
            let sealed = AEAD.seal(plaintext, key: key, nonce: nonce, associatedData: [1])
            #expect(sealed.count == plaintext.count + AEAD.tagByteCount)
            #expect(try AEAD.open(sealed, key: key, nonce: nonce, associatedData: [1]) == plaintext)
            for index in [0, sealed.count - 1] {
                var tampered = sealed
                tampered[index] ^= 0x40
                #expect(throws: CryptoError.authenticationFailed) {
                    try AEAD.open(tampered, key: key, nonce: nonce, associatedData: [1])
                }
            }
            #expect(throws: CryptoError.authenticationFailed) {
                try AEAD.open(sealed, key: key, nonce: nonce, associatedData: [2])
            }
            #expect(throws: CryptoError.authenticationFailed) {
                try AEAD.open(sealed, key: key, nonce: nonce)
            }
            #expect(throws: CryptoError.authenticationFailed) {
                try AEAD.open(Array(sealed.prefix(15)), key: key, nonce: nonce, associatedData: [1])
            }
        }
    }

    @Test func rawBufferOverloads() throws {
        let key = SecureRandom.bytes(count: 32)
        let nonce = SecureRandom.bytes(count: 24)
        let plaintext = Array("raw".utf8)
        let sealed = plaintext.withUnsafeBytes { p in
            key.withUnsafeBytes { k in nonce.withUnsafeBytes { n in AEAD.seal(p, key: k, nonce: n) } }
        }
        #expect(try AEAD.open(sealed, key: key, nonce: nonce) == plaintext)
        let opened = try sealed.withUnsafeBytes { (c) throws(CryptoError) in
            try nonce.withUnsafeBytes { n in
                Result { () throws(CryptoError) in try AEAD.open(c, key: SecureBytes(key), nonce: n) }
            }.get()
        }
        #expect(opened == plaintext)
    }

    @Test func sealedBoxRoundTripAndTamper() throws {
        let recipient = BoxKeyPair.generate()
        for message in [[], Array("epoch key".utf8)] {
            let box = recipient.publicKey.seal(message)
            #expect(box.count == message.count + 48)
            #expect(try recipient.openSealed(box) == message)
            var tampered = box
            tampered[tampered.count - 1] ^= 1
            #expect(throws: CryptoError.authenticationFailed) { try recipient.openSealed(tampered) }
            #expect(throws: CryptoError.authenticationFailed) { try BoxKeyPair.generate().openSealed(box) }
            #expect(throws: CryptoError.authenticationFailed) { try recipient.openSealed(Array(box.prefix(47))) }
        }
    }

    @Test func boxKeyRestoresFromSecret() throws {
        let pair = BoxKeyPair.generate()
        let restored = try BoxKeyPair(secretKey: SecureBytes(pair.secretKey.bytes))
        #expect(restored.publicKey == pair.publicKey)
        #expect(try restored.openSealed(pair.publicKey.seal([42])) == [42])
        #expect(throws: CryptoError.invalidLength(expected: 32, actual: 16)) {
            try BoxKeyPair(secretKey: SecureBytes(count: 16))
        }
    }

    @Test func secureBytes() {
        let zero = SecureBytes(count: 4)
        #expect(zero.bytes == [0, 0, 0, 0])
        #expect(SecureBytes([1, 2, 3]).bytes == [1, 2, 3])
        #expect(SecureBytes(count: 0).bytes == [])
        let a = SecureBytes.random(count: 32)
        let b = SecureBytes.random(count: 32)
        #expect(a.count == 32)
        #expect(!a.isEqual(to: b))
        #expect(a.isEqual(to: SecureBytes(a.bytes)))
        #expect(SecureRandom.bytes(count: 32) != SecureRandom.bytes(count: 32))
        var buffer = [UInt8](repeating: 9, count: 8)
        SecureMemory.zero(&buffer)
        #expect(buffer == [UInt8](repeating: 0, count: 8))
    }
}
