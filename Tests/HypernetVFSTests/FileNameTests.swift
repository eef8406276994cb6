import HypernetVFS
import Testing

@Suite struct FileNameTests {
    @Test func anyBytesRoundTripAndValidUTF8IsUnchanged() {
        let samples: [[UInt8]] = [
            Array("plain.txt".utf8), Array("café ✓".utf8), [0x63, 0x61, 0x66, 0xE9], [0xFF, 0xFE], [0xC3],
            [0xED, 0xA0, 0x80],  // an encoded surrogate: not UTF-8
            [0xC0, 0xAF],  // overlong "/"
            Array("\u{10FF41}".utf8),  // a real code point of the escape range
        ]
        for bytes in samples {
            let name = FileName.decode(bytes)
            #expect(FileName.encode(name) == bytes)
            #expect(FileName.byteCount(name) == bytes.count)
        }
        #expect(FileName.decode(Array("café ✓".utf8)) == "café ✓")
    }

    @Test func differentBytesGiveDifferentNames() {
        // Keyed by the String's own UTF-8: String == would merge canonically equivalent names.
        var seen: [[UInt8]: [UInt8]] = [:]
        for a in UInt8(0x80)...0xFF {
            for b in [UInt8(0x41), 0x80, 0xA9, 0xBF] {
                let bytes = [a, b]
                let name = Array(FileName.decode(bytes).utf8)
                #expect(seen[name] == nil || seen[name] == bytes)
                seen[name] = bytes
            }
        }
    }
}
