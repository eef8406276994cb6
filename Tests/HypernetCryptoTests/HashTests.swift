import HypernetCrypto
import Testing

@Suite struct HashTests {
    /// BLAKE2b-256 (unkeyed) known answers, as listed in the task brief and reproduced by CPython's
    /// `hashlib.blake2b(digest_size=32)` (the BLAKE2 reference code).
    @Test func knownAnswers() {
        #expect(BLAKE2b.hash([]).hex == "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8")
        #expect(
            BLAKE2b.hash(Array("abc".utf8)).hex == "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319")
    }

    /// The reference `blake2b-kat.txt` lists only 64-byte keyed outputs (key = 00..3f); BLAKE2b's output
    /// length is a parameter, so no 32-byte value can be read off it. This keyed 32-byte answer comes from
    /// CPython `hashlib.blake2b(bytes(range(64)), digest_size=32, key=bytes(range(64)))`, whose 64-byte
    /// output for the empty message matches the first `blake2b-kat.txt` entry (10ebb677…c51568).
    @Test func keyedCrossImplementation() {
        let key = [UInt8](0..<64)
        let expected = "28c89a7c58f807ae33bc5aae78340e9c565290597436632f4613dbe33192c5db"
        #expect(BLAKE2b.hash([UInt8](0..<64), key: key).hex == expected)
        #expect(BLAKE2b.hash([UInt8](0..<64), key: SecureBytes(key)).hex == expected)
        var hasher = BLAKE2b.Hasher(key: key)
        hasher.update([UInt8](0..<10))
        hasher.update([UInt8](10..<64))
        #expect(hasher.finalize().hex == expected)
    }

    /// RFC 4231, test cases 1, 2, 3, 4 and 6 (a key longer than the block size), HMAC-SHA-256; also with the
    /// message given in pieces, as a chunk key's context and plaintext are.
    @Test func hmacSHA256KnownAnswers() {
        let cases: [(key: [UInt8], data: [UInt8], mac: String)] = [
            (
                [UInt8](repeating: 0x0b, count: 20), Array("Hi There".utf8),
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
            ),
            (
                Array("Jefe".utf8), Array("what do ya want for nothing?".utf8),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
            ),
            (
                [UInt8](repeating: 0xaa, count: 20), [UInt8](repeating: 0xdd, count: 50),
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"
            ),
            (
                [UInt8](1...25), [UInt8](repeating: 0xcd, count: 50),
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"
            ),
            (
                [UInt8](repeating: 0xaa, count: 131),
                Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
            ),
        ]
        for c in cases {
            let whole = c.key.withUnsafeBytes { k in c.data.withUnsafeBytes { d in HMACSHA256.mac(key: k, [d]) } }
            #expect(whole.hex == c.mac)
            let pieces = c.data.withUnsafeBytes { d in
                HMACSHA256.mac(
                    key: SecureBytes(c.key),
                    [UnsafeRawBufferPointer(rebasing: d[..<3]), UnsafeRawBufferPointer(rebasing: d[3...])])
            }
            #expect(pieces.hex == c.mac)
        }
    }

    @Test func incrementalMatchesOneShotAndForksOnCopy() {
        let data = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var hasher = BLAKE2b.Hasher()
        hasher.update(Array(data[..<1]))
        var fork = hasher  // value semantics: the fork must not see later updates of `hasher`
        hasher.update(Array(data[1...]))
        #expect(hasher.finalize() == BLAKE2b.hash(data))
        fork.update([])
        #expect(fork.finalize() == BLAKE2b.hash(Array(data[..<1])))
    }

    @Test func digestHexOrderAndHashing() throws {
        let digest = BLAKE2b.hash(Array("abc".utf8))
        #expect(digest.description == digest.hex)
        #expect(Digest(hex: digest.hex) == digest)
        #expect(Digest(hex: digest.hex.uppercased()) == digest)
        #expect(Digest(hex: String(digest.hex.dropLast())) == nil)
        #expect(Digest(hex: String(digest.hex.dropLast()) + "g") == nil)
        #expect(try Digest(bytes: digest.bytes) == digest)
        #expect(throws: CryptoError.invalidLength(expected: 32, actual: 3)) { try Digest(bytes: [1, 2, 3]) }
        digest.withUnsafeBytes { #expect(Array($0) == digest.bytes) }

        // Comparable is bytewise lexicographic, whatever word a difference falls in.
        for position in [0, 7, 8, 31] {
            var low = [UInt8](repeating: 0x80, count: 32)
            var high = low
            low[position] = 0x7f
            high[position] = 0x81
            if position < 31 { low[31] = 0xff }  // a later byte must not matter
            let a = try Digest(bytes: low)
            let b = try Digest(bytes: high)
            #expect(a < b)
            #expect(!(b < a))
        }
        #expect(Set([digest, digest, BLAKE2b.hash([])]).count == 2)
    }
}
