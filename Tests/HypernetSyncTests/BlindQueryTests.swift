import HypernetCrypto
import HypernetModel
import Testing

@testable import HypernetSync

/// Blind queries (docs/protocol.md, "Blind queries") over the simulated peers of `QueryTests`: a storage node that
/// cannot open a document answers from its blind index with exactly the blocks holding the word, and the requester,
/// cutting those blocks from the chunks and filtering them, gets exactly grep -w's lines.
@Suite struct BlindQueryTests {
    typealias T = QueryTests
    static let epochKey = SecureBytes([UInt8](repeating: 7, count: 32))
    static let key = BlindTokenKey(epochKey: epochKey)
    let node = SigningKeyPair.generate()

    /// A log whose lines name words at random, cut into chunks of 1 to 700 bytes, and its index.
    static func document(lines: Int, seed: UInt64) -> (held: QueryTests.Held, chunks: [[UInt8]]) {
        var rng = seed
        func next() -> UInt64 {
            rng = rng &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return rng >> 33
        }
        let words = ["ok", "ERROR", "errors", "Error_2", "disk", "full", "x-error"]
        var text: [UInt8] = []
        for n in 1...lines { text += Array("line \(n) \(words[Int(next() % 7)]) \(words[Int(next() % 7)])\n".utf8) }
        var chunks: [[UInt8]] = []
        var at = 0
        while at < text.count {
            let end = min(text.count, at + 1 + Int(next() % 700))
            chunks.append(Array(text[at..<end]))
            at = end
        }
        var builder = BlindIndex.Builder(key: key)
        for c in chunks { builder.add(c) }
        var held = T.held(text)
        held.index = builder.finish()
        return (held, chunks)
    }

    /// Lines (number, text) holding `word` as grep -w -i finds it.
    static func grep(_ text: [UInt8], _ word: String) -> [QueryResult.Item] {
        text.split(separator: 0x0a, omittingEmptySubsequences: false).enumerated().compactMap { n, line in
            var words = BlindWords()
            words.add(Array(line))
            words.close()
            return words.words.contains(Array(word.lowercased().utf8))
                ? .init(number: UInt64(n + 1), bytes: Array(line)) : nil
        }
    }

    /// What the requester prints of the blocks it was sent: each cut from the chunks and filtered exactly.
    static func filtered(_ items: [QueryResult.Item], _ chunks: [[UInt8]], _ word: String) throws -> [QueryResult.Item]
    {
        try items.flatMap { item -> [QueryResult.Item] in
            let block = try BlindBlock(item)
            let first = Int(block.block)
            let text = try #require(block.text(Array(chunks[first..<(first + Int(block.span))])))
            #expect(text.last == 0x0a || first + Int(block.span) == chunks.count)
            return grep(text, word).map { .init(number: $0.number + block.firstLine - 1, bytes: $0.bytes) }
        }
    }

    @Test(arguments: ["ERROR", "disk", "errors", "nothing"]) func aStorageNodeAnswersExactlyTheBlocksHoldingTheWord(
        word: String
    ) throws {
        let (doc, chunks) = Self.document(lines: 3000, seed: 46)
        let storage = T.Peer(T.Host([doc], openable: false), client: node.publicKey)
        let client = QueryClient(identity: T.alice.signing, node: node.publicKey, window: 64 << 10, now: T.now)
        let collector = T.Collector()
        let trapdoor = try #require(Self.key.trapdoor(pattern: Array(word.utf8)))
        client.start(
            .init(trapdoors: [trapdoor]), targets: [doc.target], holders: [[storage.toPeer]], sink: collector.sink)
        let sent = storage.toPeer.sent
        #expect(sent.count == 1 && Frame.encode(sent[0])[5] == 19)
        QueryTests().deliver(client, [storage], collector)
        #expect(collector.finished && storage.host.read.count == 0)
        // The blocks sent are those whose lines hold the word, by the naive computation over the whole text.
        let index = try #require(doc.index)
        let holding = index.blocks.indices.filter { i in
            guard let start = index.blocks[i].start else { return false }
            let from = chunks[..<i].reduce(0) { $0 + $1.count } + Int(start)
            let last = i + Int(index.blocks[i].span) - 1
            let to = index.end(of: i).map { chunks[..<last].reduce(0) { $0 + $1.count } + Int($0) } ?? doc.content.count
            return !Self.grep(Array(doc.content[from..<to]), word).isEmpty
        }
        let sentBlocks = try collector.items(0).map { Int(try BlindBlock($0).block) }
        #expect(sentBlocks == holding)
        #expect(try Self.filtered(collector.items(0), chunks, word) == Self.grep(doc.content, word))
    }

    /// No read right for the requester: one bare `unavailable`, not even a count of blocks.
    @Test func aRequesterWithoutReadRightGetsNothing() {
        let (doc, _) = Self.document(lines: 200, seed: 1)
        let storage = T.Peer(T.Host([doc], openable: false), client: node.publicKey)
        let client = QueryClient(identity: T.bob.signing, node: node.publicKey, window: 64 << 10, now: T.now)
        let collector = T.Collector()
        client.start(
            .init(trapdoors: [Self.key.token(Array("error".utf8))]), targets: [doc.target],
            holders: [[storage.toPeer]], sink: collector.sink)
        QueryTests().deliver(client, [storage], collector)
        #expect(collector.events.withLock { $0 } == [.unavailable(target: 0), .finished])
        #expect(storage.results.withLock { $0 }.allSatisfy { $0.status == .unavailable && $0.items.isEmpty })
    }

    /// A blind query is signed under its own context: as a `query` it does not verify, and a changed trapdoor
    /// breaks the signature; it decodes back whole, and trapdoor counts outside 1...16 do not decode.
    @Test func blindQueriesAreSignedAndBoundedOnTheWire() throws {
        let (doc, _) = Self.document(lines: 10, seed: 2)
        let query = Query.signed(
            by: T.alice.signing, id: 3, origin: node.publicKey, issued: T.now(), op: .grep, flags: [], pattern: "",
            window: 64 << 10, limit: 0, targets: [doc.target], trapdoors: [1, 2])
        var frame = Frame.encode(.query(query))
        #expect(try Frame.decode(&frame) == [.query(query)])
        #expect(query.isValid)
        var plain = query
        plain.trapdoors = nil
        #expect(!plain.isValid)
        var changed = query
        changed.trapdoors = [1, 3]
        #expect(!changed.isValid)
        for count in [0, 17] {
            var bad = query
            bad.trapdoors = Array(repeating: 1, count: count)
            var frame = Frame.encode(.query(bad))
            #expect(throws: DecodingError.self) { _ = try Frame.decode(&frame) }
        }
    }
}
