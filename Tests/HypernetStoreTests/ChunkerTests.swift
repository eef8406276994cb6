import HypernetCrypto
import HypernetStore
import Testing

@Suite struct ChunkerTests {
    /// Deterministic test data: splitmix64 from `seed`, each output little-endian.
    static func pseudoRandom(count: Int, seed: UInt64) -> [UInt8] {
        var state = seed
        var out = [UInt8]()
        out.reserveCapacity(count + 8)
        while out.count < count {
            state &+= 0x9e37_79b9_7f4a_7c15
            var z = state
            z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
            z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
            withUnsafeBytes(of: (z ^ (z >> 31)).littleEndian) { out.append(contentsOf: $0) }
        }
        return Array(out.prefix(count))
    }

    /// Chunk lengths of `data`, revealed to the chunker `piece` bytes at a time (all at once if nil).
    static func lengths(_ data: [UInt8], _ chunker: Chunker = .standard, piece: Int? = nil) -> [Int] {
        var result: [Int] = []
        var start = 0
        var available = piece.map { min($0, data.count) } ?? data.count
        data.withUnsafeBytes { all in
            while true {
                let window = UnsafeRawBufferPointer(rebasing: all[start..<available])
                if let n = chunker.firstChunkLength(in: window, atEnd: available == all.count) {
                    result.append(n)
                    start += n
                } else if available == all.count {
                    return
                } else {
                    available = min(all.count, available + piece!)
                }
            }
        }
        return result
    }

    /// The gear table defines stored chunk boundaries; these values were cross-checked with an independent
    /// Python implementation of the documented generator.
    @Test func gearTableIsPinned() {
        #expect(gearTable.count == 256)
        #expect(gearTable[0] == 0xa857_a95e_f756_87f6)
        #expect(gearTable[1] == 0xc67c_7dfe_226b_c6bf)
        #expect(gearTable[255] == 0x1631_188e_15da_ed30)
        let bytes = gearTable.flatMap { value in withUnsafeBytes(of: value.littleEndian) { Array($0) } }
        #expect(BLAKE2b.hash(bytes).hex == "2422b52586edfe9d7cef4b20118f1c8fc6340c10fdc06113611b1761a074b64e")
    }

    /// Golden boundaries for 1 MiB of splitmix64(seed 1) data, from the same Python cross-check.
    @Test func boundariesArePinned() {
        let data = Self.pseudoRandom(count: 1 << 20, seed: 1)
        #expect(BLAKE2b.hash(data).hex.hasPrefix("def015d35d9cc0e4"))
        #expect(
            Self.lengths(data) == [
                77791, 19104, 80271, 75452, 105921, 84521, 72883, 68036, 20938, 74759, 72834, 71542, 57028, 68453,
                79325, 19718,
            ])
    }

    @Test func lengthsStayWithinBounds() {
        let chunker = Chunker(minimum: 2 << 10, average: 8 << 10, maximum: 32 << 10)
        let data = Self.pseudoRandom(count: 4 << 20, seed: 7)
        let lengths = Self.lengths(data, chunker)
        #expect(lengths.reduce(0, +) == data.count)
        for length in lengths.dropLast() { #expect((chunker.minimum...chunker.maximum).contains(length)) }
        #expect(lengths.last! <= chunker.maximum)
        // Normalized chunking keeps the mean near the target.
        let mean = data.count / lengths.count
        #expect((6 << 10...12 << 10).contains(mean), "mean chunk \(mean)")
    }

    @Test func deterministic() {
        let data = Self.pseudoRandom(count: 2 << 20, seed: 3)
        #expect(Self.lengths(data) == Self.lengths(Array(data)))
    }

    @Test func insertionNearStartKeepsLaterChunks() {
        let data = Self.pseudoRandom(count: 8 << 20, seed: 11)
        var edited = data
        edited.insert(contentsOf: Array("an insertion near the start".utf8), at: 5000)
        func chunks(_ bytes: [UInt8]) -> [Digest] {
            var offset = 0
            return Self.lengths(bytes).map { length in
                defer { offset += length }
                return BLAKE2b.hash(Array(bytes[offset..<offset + length]))
            }
        }
        let before = chunks(data)
        let after = Set(chunks(edited))
        let kept = before.filter(after.contains).count
        #expect(kept >= before.count - 2, "kept \(kept) of \(before.count) chunks")
    }

    @Test func allZeroInputCutsAtMaximum() {
        let data = [UInt8](repeating: 0, count: 1 << 20 + 123)
        let lengths = Self.lengths(data)
        #expect(lengths.dropLast().allSatisfy { $0 == Chunker.standard.maximum })
        #expect(lengths.reduce(0, +) == data.count)
    }

    /// Each retry after nil rescans from `minimum`, so tiny pieces are tested with a tiny chunker.
    @Test(arguments: [1, 7, 100])
    func tinyPiecesGiveTheSameCutsAsWhole(piece: Int) {
        let chunker = Chunker(minimum: 64, average: 256, maximum: 1024)
        let data = Self.pseudoRandom(count: 100_000, seed: 5)
        #expect(Self.lengths(data, chunker, piece: piece) == Self.lengths(data, chunker))
    }

    @Test(arguments: [65536, 100_000, 300_000])
    func piecesGiveTheSameCutsAsWhole(piece: Int) {
        let data = Self.pseudoRandom(count: 3 << 20 + 17, seed: 5)
        #expect(Self.lengths(data, piece: piece) == Self.lengths(data))
    }

    @Test func edgeCases() {
        let chunker = Chunker.standard
        let small = [UInt8](repeating: 1, count: 100)
        small.withUnsafeBytes { raw in
            #expect(chunker.firstChunkLength(in: raw, atEnd: false) == nil)
            #expect(chunker.firstChunkLength(in: raw, atEnd: true) == 100)
            #expect(chunker.firstChunkLength(in: UnsafeRawBufferPointer(rebasing: raw[0..<0]), atEnd: true) == nil)
        }
    }
}
