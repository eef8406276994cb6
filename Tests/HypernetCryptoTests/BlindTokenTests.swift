import HypernetCrypto
import Testing

@Suite struct BlindTokenTests {
    /// Keyed BLAKE2b-512, the primitive a token truncates: the reference `blake2b-kat.txt` (key = 00..3f), its first
    /// entry (empty message) and last (message 00..fe).
    @Test func keyedBLAKE2b512KnownAnswers() {
        let key = [UInt8](0..<64)
        #expect(
            BLAKE2b512.hash([], key: key)
                == hex(
                    """
                    10ebb67700b1868efb4417987acf4690ae9d972fb7a590c2f02871799aaa4786
                    b5e996e8f0f4eb981fc214b005f42d2ff4233499391653df7aefcbc13fc51568
                    """))
        #expect(
            BLAKE2b512.hash([UInt8](0..<255), key: key)
                == hex(
                    """
                    142709d62e28fcccd0af97fad0f8465b971e82201dc51070faa0372aa43e9248
                    4be1c1e73ba10906d5d1853db6a4106e0a7bf9800d373d6dee2d46d62ef2a461
                    """))
    }

    /// The whole construction against an independent implementation: CPython's hashlib (the BLAKE2 reference code),
    /// `tk = blake2b(b"hypernet blind token key v1", key=bytes(range(32)), digest_size=32).digest()`,
    /// `int.from_bytes(blake2b(word, key=tk).digest()[:4], "little")`.
    @Test func tokensMatchTheSpecifiedConstruction() {
        let key = BlindTokenKey(epochKey: SecureBytes([UInt8](0..<32)))
        #expect(key.token(Array("error".utf8)) == 0xe1c0_c4d9)
        #expect(key.token(Array("disk_full".utf8)) == 0x38a2_fb39)
        // Another epoch's key gives unrelated tokens.
        #expect(BlindTokenKey(epochKey: SecureBytes([UInt8](1..<33))).token(Array("error".utf8)) != 0xe1c0_c4d9)
    }

    /// A pattern's trapdoor is its word's token, case-folded; anything but one word of word characters has none.
    @Test func trapdoorsOnlyForOneWord() {
        let key = BlindTokenKey(epochKey: SecureBytes([UInt8](0..<32)))
        #expect(key.trapdoor(pattern: Array("ERROR".utf8)) == 0xe1c0_c4d9)
        #expect(key.trapdoor(pattern: Array("Disk_Full".utf8)) == 0x38a2_fb39)
        for pattern in ["", "disk full", "a.b", "err*", "x\ny", "caf\u{e9}"] {
            #expect(key.trapdoor(pattern: Array(pattern.utf8)) == nil, "\(pattern)")
        }
    }

    /// Words are grep -w's (ASCII letters, digits, `_`; anything else separates, bytes of UTF-8 included), folded,
    /// and a word split between two pieces of text is one word.
    @Test func wordsAcrossPieces() {
        let key = BlindTokenKey(epochKey: SecureBytes([UInt8](0..<32)))
        var words = BlindWords()
        words.add(Array("ERROR: disk_fu".utf8))
        words.add(Array("ll at 10:32, caf\u{e9} error".utf8))
        words.close()
        #expect(
            words.words == Set(["error", "disk_full", "at", "10", "32", "caf"].map { Array($0.utf8) }))
        let tokens = words.take(key)
        #expect(tokens.count == 6 && tokens == tokens.sorted())
        #expect(tokens.contains(0xe1c0_c4d9) && tokens.contains(0x38a2_fb39))
        #expect(words.words.isEmpty && words.take(key).isEmpty)
    }
}
