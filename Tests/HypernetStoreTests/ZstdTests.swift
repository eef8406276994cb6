import HypernetStore
import Testing

@Suite struct ZstdTests {
    static let text = Array(String(repeating: "the quick brown fox jumps over the lazy dog. ", count: 2000).utf8)

    static func compress(_ bytes: [UInt8]) -> [UInt8]? { bytes.withUnsafeBytes { Zstd.compressIfSmaller($0) } }
    static func decompress(_ bytes: [UInt8], limit: Int) throws(ZstdError) -> [UInt8] {
        try bytes.withUnsafeBytes { raw in
            Result { () throws(ZstdError) in try Zstd.decompress(raw, limit: limit) }
        }.get()
    }

    @Test func roundTrip() throws {
        let compressed = try #require(Self.compress(Self.text))
        #expect(compressed.count < Self.text.count / 10)
        #expect(try Self.decompress(compressed, limit: Self.text.count) == Self.text)
        #expect(try Self.decompress(try #require(Self.compress(Self.text)), limit: 1 << 22) == Self.text)
    }

    @Test func incompressibleOrTinyGivesNil() {
        var generator = SystemRandomNumberGenerator()
        let random = (0..<65536).map { _ in UInt8.random(in: 0...255, using: &generator) }
        #expect(Self.compress(random) == nil)
        #expect(Self.compress([]) == nil)
        #expect(Self.compress([1, 2, 3]) == nil)
    }

    @Test func garbageAndTruncatedFramesFail() throws {
        let compressed = try #require(Self.compress(Self.text))
        #expect(throws: ZstdError.self) { try Self.decompress([], limit: 1000) }
        #expect(throws: ZstdError.self) { try Self.decompress(Array("not zstd at all".utf8), limit: 1000) }
        #expect(throws: ZstdError.self) { try Self.decompress(Array(compressed.dropLast()), limit: 1 << 20) }
        #expect(throws: ZstdError.self) { try Self.decompress(Array(compressed.prefix(8)), limit: 1 << 20) }
        #expect(throws: ZstdError.self) { try Self.decompress(compressed + [0], limit: 1 << 20) }
        var flipped = compressed
        flipped[flipped.count / 2] ^= 0xff
        // A corrupted body either fails to decode or (rarely) decodes to other bytes; it must never crash.
        if let output = try? Self.decompress(flipped, limit: 1 << 20) { #expect(output != Self.text) }
    }

    @Test func declaredSizeOverLimitFails() throws {
        let compressed = try #require(Self.compress(Self.text))
        #expect(throws: ZstdError.self) { try Self.decompress(compressed, limit: Self.text.count - 1) }
        #expect(throws: ZstdError.self) { try Self.decompress(compressed, limit: 0) }
    }

    /// `printf hello | zstd --no-content-size --no-check`: a valid frame (`zstd -d` decodes it) that does
    /// not declare its size, so it must be refused.
    @Test func unknownContentSizeFails() {
        let frame = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58, 0x29, 0x00, 0x00] + Array("hello".utf8)
        #expect(throws: ZstdError.self) { try Self.decompress(frame, limit: 1000) }
    }

    @Test func manyThreadsShareNothing() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<8 {
                group.addTask {
                    let input = Array(String(repeating: "row \(i);", count: 5000).utf8)
                    for _ in 0..<20 {
                        let compressed = try #require(Self.compress(input))
                        #expect(try Self.decompress(compressed, limit: input.count) == input)
                    }
                }
            }
            try await group.waitForAll()
        }
    }
}
