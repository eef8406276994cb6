import HypernetCrypto
import HypernetModel
import Testing

@Suite struct BlindIndexTests {
    let key = BlindTokenKey(epochKey: SecureBytes([UInt8](0..<32)))

    /// Text of short lines of a few words, cut into chunks of random lengths (some without a newline).
    func sample(seed: UInt64) -> (text: [UInt8], cuts: [Int]) {
        var rng = SplitMix(seed)
        let vocabulary = ["alpha", "Beta", "gamma_1", "ERROR", "disk", "x9", "\u{e9}t\u{e9}"]
        var text: [UInt8] = []
        for _ in 0..<400 {
            let n = Int(rng.next() % 6)
            let words = (0..<n).map { _ in vocabulary[Int(rng.next() % UInt64(vocabulary.count))] }
            text += Array(words.joined(separator: rng.next() % 2 == 0 ? " " : ":").utf8) + [0x0a]
        }
        if seed % 2 == 1 { text += Array("tail without newline".utf8) }
        var cuts: [Int] = [0]
        while cuts.last! < text.count { cuts.append(min(text.count, cuts.last! + 1 + Int(rng.next() % 90))) }
        return (text, cuts)
    }

    /// Every block is exactly the lines starting in it (its start, span, end and line number say where they are),
    /// and its tokens are exactly its words' tokens: the naive computation over the whole text agrees.
    @Test(arguments: [1, 2, 3, 4] as [UInt64]) func blocksAreTheLinesStartingInEachChunk(seed: UInt64) throws {
        let (text, cuts) = sample(seed: seed)
        var builder = BlindIndex.Builder(key: key)
        for (a, b) in zip(cuts, cuts.dropFirst()) { builder.add(Array(text[a..<b])) }
        let index = builder.finish()
        #expect(try BlindIndex(decoding: index.encoded()) == index)
        #expect(index.blocks.count == cuts.count - 1)
        var covered: [UInt8] = []
        for (i, block) in index.blocks.enumerated() {
            guard let start = block.start else {
                #expect(block.tokens.isEmpty && block.newlines == 0)
                continue
            }
            let from = cuts[i] + Int(start)
            let last = i + Int(block.span) - 1
            let to = index.end(of: i).map { cuts[last] + Int($0) } ?? cuts[last + 1]
            let bytes = Array(text[from..<to])
            #expect(from == covered.count, "blocks follow each other")
            covered += bytes
            let lines = bytes.split(separator: 0x0a, omittingEmptySubsequences: false)
            #expect(index.firstLine(of: i) == UInt64(text[..<from].count(where: { $0 == 0x0a }) + 1))
            #expect(block.newlines == UInt32(bytes.count(where: { $0 == 0x0a })))
            var words = BlindWords()
            for line in lines { words.add(Array(line) + [0x0a]) }
            #expect(block.tokens == words.take(key))
            #expect(bytes.last == 0x0a || to == text.count)
        }
        #expect(covered == text)
    }

    @Test func blocksHoldTheirWordsOnly() {
        var builder = BlindIndex.Builder(key: key)
        builder.add(Array("one ERROR here\ntwo".utf8))
        builder.add(Array(" lines\nDisk full\n".utf8))
        builder.add(Array("no newline".utf8))
        let index = builder.finish()
        let error = key.trapdoor(pattern: Array("error".utf8))!
        let disk = key.trapdoor(pattern: Array("DISK".utf8))!
        let lines = key.trapdoor(pattern: Array("lines".utf8))!
        #expect(index.blocks.map { $0.holds([error]) } == [true, false, false])
        // "two lines" starts in chunk 0: block 0 runs to chunk 1's first newline.
        #expect(index.blocks.map { $0.holds([lines]) } == [true, false, false])
        #expect(index.blocks.map { $0.holds([disk]) } == [false, true, false])
        #expect(index.blocks.map(\.span) == [2, 2, 0])
        #expect(index.end(of: 1) == nil && index.end(of: 0) == 7)
        #expect(!index.blocks[0].holds([error, disk]))
    }

    /// Formats 3 and 4 name the index after the sealed metadata; a revision without one keeps format 1 or 2, and
    /// one naming an index that is not a file's is refused.
    @Test func revisionsNameTheirIndex() throws {
        let author = SigningKeyPair.generate()
        let index = ChunkReference(id: BLAKE2b.hash([1]), key: ChunkReference.clearKey, length: 99)
        for rights in [nil, DocumentID.random()] {
            var revision = Revision(
                document: DocumentID.random(), kind: .file, epoch: rights == nil ? 0 : 3, rights: rights,
                time: HLCTime(rawValue: 5), author: author.publicKey, parents: [], sealedMetadata: [1, 2])
            #expect(revision.signed(by: author).record[0] == (rights == nil ? 1 : 2))
            revision.blindIndex = index
            let signed = revision.signed(by: author)
            #expect(signed.record[0] == (rights == nil ? 3 : 4))
            #expect(try SignedRevision(record: signed.record) == signed)
            revision.kind = .directory
            #expect(throws: DecodingError.self) { try SignedRevision(record: revision.signed(by: author).record) }
        }
    }

    @Test func malformedIndexesAreRefused() {
        var builder = BlindIndex.Builder(key: key)
        builder.add(Array("a b\nc\n".utf8))
        let good = builder.finish().encoded()
        for n in 0..<good.count { #expect(throws: DecodingError.self) { try BlindIndex(decoding: Array(good[..<n])) } }
        var unsorted = BlindIndex(blocks: [.init(start: 0, newlines: 1, span: 1, tokens: [2, 1])]).encoded()
        #expect(throws: DecodingError.self) { try BlindIndex(decoding: unsorted) }
        unsorted[0] = 9
        #expect(throws: DecodingError.self) { try BlindIndex(decoding: unsorted) }
        let overlong = BlindIndex(blocks: [.init(start: 0, newlines: 1, span: 2, tokens: [])]).encoded()
        #expect(throws: DecodingError.self) { try BlindIndex(decoding: overlong) }
    }
}

/// A small deterministic generator (splitmix64) for the samples.
struct SplitMix {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
