import HypernetCrypto
import HypernetModel
import HypernetStore
import HypernetSync
import Testing

@Suite struct MessageTests {
    static let key = SigningKeyPair.generate()
    static let tree = key.publicKey
    static let digest = BLAKE2b.hash(Array("x".utf8))

    static let samples: [Message] = [
        .hello(
            .init(
                listen: "127.0.0.1:7000", software: "hypernet/test", storeID: "abc", trees: [tree], pinsEverything: true
            )),
        .peers(["10.0.0.1:1", "[::1]:2"]),
        .subscribe(tree: tree, storeID: "s", after: 42),
        .entries(
            tree: tree, storeID: "s", entries: [LogEntry(seq: 7, record: [1, 2, 3], chunks: [digest])], caughtUp: false),
        .entries(tree: tree, storeID: "s", entries: [], caughtUp: true),
        .entries(
            tree: tree, storeID: "s", entries: [LogEntry(seq: 8, record: [4], chunks: [])], caughtUp: false, held: true),
        .progress(tree: tree, seq: 9),
        .want([digest, digest]),
        .chunk(id: digest, sealed: [9, 9]),
        .chunk(id: digest, sealed: nil),
        .ack(.signed(by: key, revisions: [digest])),
        .ping,
        .prune(tree: tree),
        .graft(tree: tree),
        .query(
            .signed(
                by: key, id: 3, origin: tree, issued: 1_700_000_000_000, op: .count, flags: [.ignoreCase, .word],
                pattern: "(\\w+): error", window: 1 << 20, limit: 10,
                targets: [.init(tree: tree, document: .random(), revision: digest, after: 12)])),
        .result(
            .init(id: 3, status: .data, index: 0, cursor: 40, items: [.init(number: 2, offset: 7, bytes: [65, 66])])),
        .result(.init(id: 3, status: .unavailable, index: 1)),
        .credit(id: 3, received: 1 << 40),
        .cancel(id: 3),
        .interest(swarm: digest, ids: [digest, tree.bytes.withUnsafeBytes { try! Digest(bytes: $0) }]),
        .interest(swarm: digest, ids: []),
        .have(swarm: digest, bits: [0b10]),
        .got(swarm: digest, indexes: [0, 1]),
    ]

    @Test func everyMessageRoundTrips() throws {
        var stream = Self.samples.flatMap(Frame.encode)
        let decoded = try Frame.decode(&stream)
        #expect(decoded == Self.samples)
        #expect(stream.isEmpty)
    }

    @Test func framesSplitAnywhereDecodeTheSame() throws {
        let all = Self.samples.flatMap(Frame.encode)
        for cut in stride(from: 1, to: all.count, by: 7) {
            var buffer = Array(all[..<cut])
            var got = try Frame.decode(&buffer)
            buffer += all[cut...]
            got += try Frame.decode(&buffer)
            #expect(got == Self.samples, "split at \(cut)")
        }
    }

    @Test func everyTruncationIsIncompleteOrAnError() {
        for message in Self.samples {
            let frame = Frame.encode(message)
            for n in 0..<frame.count {
                // A prefix of a frame is incomplete (nothing decoded, bytes kept); a payload cut short inside
                // a valid length is impossible here because the length covers it.
                var buffer = Array(frame[..<n])
                #expect((try? Frame.decode(&buffer))?.isEmpty ?? true)
            }
        }
    }

    @Test func oversizedLengthIsRejectedBeforeThePayload() {
        var buffer: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 1]
        #expect(throws: DecodingError.self) { try Frame.decode(&buffer) }
    }

    @Test func unknownVersionAndTypeAreRejected() {
        var version: [UInt8] = [2, 0, 0, 0, 9, 8]
        #expect(throws: DecodingError.unsupportedVersion(9)) { try Frame.decode(&version) }
        var type: [UInt8] = [2, 0, 0, 0, 1, 200]
        #expect(throws: DecodingError.self) { try Frame.decode(&type) }
    }

    @Test func trailingBytesInAPayloadAreRejected() {
        var frame = Frame.encode(.ping)
        frame[0] += 1
        frame.append(0)
        #expect(throws: DecodingError.self) { try Frame.decode(&frame) }
    }

    @Test func haveSetsPastTheirLimitsAreRejected() {
        // A bitfield over more than 65,536 ids, and a position past them.
        var have = Frame.encode(.have(swarm: Self.digest, bits: [UInt8](repeating: 0, count: 8193)))
        #expect(throws: DecodingError.self) { try Frame.decode(&have) }
        var got = Frame.encode(.got(swarm: Self.digest, indexes: [1 << 16]))
        #expect(throws: DecodingError.self) { try Frame.decode(&got) }
        var fits = Frame.encode(.got(swarm: Self.digest, indexes: [(1 << 16) - 1]))
        #expect((try? Frame.decode(&fits))?.count == 1)
    }

    @Test func anAckWithAnotherNodesSignatureIsInvalid() throws {
        let genuine = Message.Ack.signed(by: Self.key, revisions: [Self.digest])
        #expect(genuine.isValid)
        let other = Message.Ack.signed(by: SigningKeyPair.generate(), revisions: [Self.digest])
        var stream = Frame.encode(.ack(genuine))
        // Swap in the other node's key: the signature no longer verifies.
        stream.replaceSubrange(6..<38, with: other.node.bytes)
        guard case .ack(let forged)? = try Frame.decode(&stream).first else {
            Issue.record("not an ack")
            return
        }
        #expect(!forged.isValid)
    }
}
