import HypernetCrypto
import HypernetModel
import Testing

@Suite struct IdentityTokenTests {
    static func token(_ fill: UInt8 = 0) throws -> IdentityToken {
        if fill == 0 {
            return IdentityToken(signing: SigningKeyPair.generate().publicKey, box: BoxKeyPair.generate().publicKey)
        }
        return IdentityToken(
            signing: try SigningPublicKey(bytes: [UInt8](repeating: fill, count: 32)),
            box: try BoxPublicKey(bytes: [UInt8](repeating: fill &+ 1, count: 32)))
    }

    /// RFC 4648 §10 test vectors, lowercased and without padding.
    @Test func base32Vectors() {
        let vectors = [
            "": "", "f": "my", "fo": "mzxq", "foo": "mzxw6", "foob": "mzxw6yq", "fooba": "mzxw6ytb",
            "foobar": "mzxw6ytboi",
        ]
        for (plain, encoded) in vectors {
            #expect(Base32.encode(Array(plain.utf8)) == encoded)
            #expect(Base32.decode(Array(encoded.utf8)) == Array(plain.utf8))
        }
        #expect(Base32.decode(Array("mz".utf8)) == nil)  // "f" is "my": the padding bits of "mz" are not zero
        #expect(Base32.decode(Array("m".utf8)) == nil)  // impossible length
        #expect(Base32.decode(Array("MY".utf8)) == nil)
        #expect(Base32.decode(Array("m1".utf8)) == nil)
    }

    @Test func roundTripAndShape() throws {
        let token = try Self.token()
        let text = token.description
        #expect(text.hasPrefix("hn1"))
        #expect(text.count == 112)
        #expect(text.allSatisfy { ("a"..."z").contains($0) || ("2"..."7").contains($0) || $0 == "1" })
        #expect(IdentityToken(text) == token)
        #expect(token.short == String(text.dropFirst(3).prefix(12)))
        #expect(token.short.count == 12)
    }

    /// Pins the text form: signing = 32 × 0x01, box = 32 × 0x02. Expected value from Python's
    /// `base64.b32encode` and `hashlib.blake2b(digest_size=32)`, lowercased, "=" stripped.
    @Test func knownToken() throws {
        let expected =
            "hn1aeaqcaibaeaqcaibaeaqcaibaeaqcaibaeaqcaibaeaqcaibaeaqeaqcaibaeaqcaibaeaqcaibaeaqcaibaeaqcaibaeaqcaibaearqwyapw"
        #expect(try Self.token(1).description == expected)
        #expect(IdentityToken(expected) == (try Self.token(1)))
    }

    @Test func rejectsMalformed() throws {
        let text = try Self.token().description
        #expect(IdentityToken("") == nil)
        #expect(IdentityToken("hn2" + text.dropFirst(3)) == nil)
        #expect(IdentityToken(String(text.dropLast())) == nil)
        #expect(IdentityToken(text + "a") == nil)
        #expect(IdentityToken(text.uppercased()) == nil)
        #expect(IdentityToken(String(text.dropLast()) + "1") == nil)  // outside the alphabet
        // Any single changed character breaks the checksum (or the padding bits, for the last one).
        var characters = Array(text)
        for index in [3, 40, 70, 100, 111] {
            let original = characters[index]
            characters[index] = original == "a" ? "b" : "a"
            #expect(IdentityToken(String(characters)) == nil, "index \(index)")
            characters[index] = original
        }
        #expect(IdentityToken(String(characters)) != nil)
    }
}
