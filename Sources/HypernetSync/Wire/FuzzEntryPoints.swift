import HypernetCrypto
import HypernetModel
import HypernetStore

/// Entry points for the libFuzzer targets in `Fuzz/` and for replaying their corpus in the test suite
/// (`Tests/HypernetSyncTests/FuzzCorpusTests.swift`). This is the only public surface the fuzzers need:
/// each function feeds arbitrary bytes to the decoders a peer can reach, exactly as the transport does
/// (`SecureChannelHandler.process`), and never traps on its own. Decoding errors are the expected outcome
/// and are swallowed; what is returned are broken *invariants* (a decoded value that does not re-encode
/// to the bytes it came from, a stream decoded differently depending on how it was split, ...). The fuzz
/// targets trap on a non-empty result so libFuzzer keeps the input; the corpus replay expects it empty.
///
/// Input layouts (the first byte is a selector, so one corpus file is one self-contained case):
/// - `frames`: `u8 split | stream`. `stream` goes to `Frame.decode` whole and again in pieces of
///   `split % 64 + 1` bytes (as records deliver plaintext), and `stream[0] | stream[1...]` goes to
///   `Message(kind:payload:)` directly.
/// - `handshake`: `u8 mode | rest`. Even mode: `rest` is a run of records `u16 LE length | bytes` read by
///   the responder of a Noise XX handshake with fixed keys (`handshakeResponder*` below): message 1, our
///   message 2 carrying our NodeAuth, message 3 whose payload goes through the NodeAuth check, then
///   transport records decrypted and their plaintext run through `Frame.decode`. Odd mode: `rest` goes
///   to the NodeAuth check directly, against a fixed Noise static key.
/// - `records`: `u8 decoder | bytes`: decoder % 6 picks `SignedRevision(record:)`,
///   `RevisionMetadata(decoding:)`, `ManifestNode(decoding:)`, `DirectoryListing(decoding:)`,
///   `IdentityToken(_:)` (bytes as UTF-8) or `RevisionMetadata(unsealing:)` under a fixed key.
/// - `haveSets`: `u8 n | stream`. A fetch of `n + 1` fixed ids is open and announced to one peer; the frames of
///   `stream` are that peer's: each `have` and `got` goes to `HaveSets` (its verdict checked: what it accepts
///   names only ids of the fetch, what it refuses changes nothing), each `interest` to `Announcements` as a
///   serving node's (its answer must decode as a `have` of the list's length, and arrivals give positions in it).
public enum WireFuzz {
    public static func frames(_ data: [UInt8]) -> [String] {
        guard let split = data.first else { return [] }
        var violations: [String] = []
        let stream = Array(data.dropFirst())

        // Whole, as one record would deliver it.
        var whole = stream
        let wholeResult = Result { () throws(DecodingError) in try Frame.decode(&whole) }
        if case .success(let messages) = wholeResult {
            let consumed = stream.count - whole.count
            let reencoded = messages.flatMap { Frame.encode($0) }
            if reencoded != Array(stream.prefix(consumed)) {
                violations.append(
                    "frames: \(messages.count) decoded frames do not re-encode to the \(consumed) bytes read")
            }
        }

        // In pieces, as successive records deliver it: same messages, same remainder, same verdict.
        let step = Int(split % 64) + 1
        var buffer: [UInt8] = []
        var pieced: [Message] = []
        var piecedFailed = false
        var start = 0
        while start < stream.count {
            buffer += stream[start..<min(start + step, stream.count)]
            start += step
            do throws(DecodingError) { pieced += try Frame.decode(&buffer) } catch {
                piecedFailed = true
                break
            }
        }
        switch wholeResult {
        case .success(let messages):
            if piecedFailed || pieced != messages || buffer != whole {
                violations.append("frames: decoding in pieces of \(step) differs from decoding whole")
            }
        case .failure:
            if !piecedFailed {
                violations.append("frames: decoding in pieces of \(step) accepts what decoding whole refuses")
            }
        }

        // One message body directly, without a frame around it.
        if let kind = stream.first {
            let payload = Array(stream.dropFirst())
            if let message = try? Message(kind: kind, payload: payload),
                message.kind.rawValue != kind || message.encodedPayload() != payload
            {
                violations.append("frames: message of type \(kind) does not re-encode to its payload")
            }
        }
        return violations
    }

    // MARK: Handshake

    /// The fixed responder: node key, Noise static and ephemeral keys (seeds 1, 2, 3; test values only).
    static let handshakeResponderNode = try! SigningKeyPair(seed: SecureBytes([UInt8](repeating: 1, count: 32)))
    static let handshakeResponderStatic = try! BoxKeyPair(secretKey: SecureBytes([UInt8](repeating: 2, count: 32)))
    static let handshakeResponderEphemeral = try! BoxKeyPair(secretKey: SecureBytes([UInt8](repeating: 3, count: 32)))

    public static func handshake(_ data: [UInt8]) -> [String] {
        guard let mode = data.first else { return [] }
        let rest = Array(data.dropFirst())
        if mode % 2 == 1 {
            let node = try? NodeAuth.verify(rest, staticKey: handshakeResponderStatic.publicKey)
            if node != nil, rest.count != NodeAuth.byteCount {
                return ["handshake: NodeAuth accepted \(rest.count) bytes"]
            }
            return []
        }
        var records: [[UInt8]] = []
        var offset = 0
        while rest.count - offset >= 2 {
            let length = Int(rest[offset]) | Int(rest[offset + 1]) << 8
            offset += 2
            guard rest.count - offset >= length else { break }
            records.append(Array(rest[offset..<offset + length]))
            offset += length
        }
        return respond(to: records)
    }

    /// What `SecureChannelHandler.process` does on the responder side, record by record, stopping at the
    /// first error as the handler closes the connection.
    private static func respond(to records: [[UInt8]]) -> [String] {
        var handshake = NoiseHandshake(
            role: .responder, prologue: SecureChannelHandler.prologue, staticKey: handshakeResponderStatic,
            ephemeralKey: handshakeResponderEphemeral)
        var receive: NoiseCipherState?
        var plaintext: [UInt8] = []
        for record in records {
            if var cipher = receive {
                guard let bytes = try? record.withUnsafeBytes({ (b) throws(NoiseError) in try cipher.decrypt(b) })
                else { return [] }
                receive = cipher
                plaintext += bytes
                guard (try? Frame.decode(&plaintext)) != nil else { return [] }
                continue
            }
            guard let payload = try? handshake.readMessage(record) else { return [] }
            if handshake.isComplete {
                guard let remote = handshake.remoteStaticKey else {
                    return ["handshake: complete without a remote static key"]
                }
                guard (try? NodeAuth.verify(payload, staticKey: remote)) != nil else { return [] }
                receive = handshake.split().receive
            } else {
                let auth = NodeAuth.payload(node: handshakeResponderNode, staticKey: handshakeResponderStatic.publicKey)
                // Fails on a low-order ephemeral key (the DH is all zeros): the handler then closes too.
                guard (try? handshake.writeMessage(payload: auth)) != nil else { return [] }
            }
        }
        return []
    }

    // MARK: Records

    static let recordsEpochKey = SecureBytes([UInt8](repeating: 4, count: 32))
    static let recordsDocument = try! DocumentID(bytes: [UInt8](repeating: 5, count: DocumentID.byteCount))

    public static func records(_ data: [UInt8]) -> [String] {
        guard let selector = data.first else { return [] }
        let bytes = Array(data.dropFirst())
        switch selector % 7 {
        case 0:
            if let signed = try? SignedRevision(record: bytes),
                signed.revision.body + bytes.suffix(SigningKeyPair.signatureByteCount) != bytes
            {
                return ["records: a revision does not re-encode to its record"]
            }
        case 1:
            if let metadata = try? RevisionMetadata(decoding: bytes), metadata.encoded() != bytes {
                return ["records: revision metadata does not re-encode to its bytes"]
            }
        case 2:
            if let node = try? ManifestNode(decoding: bytes), node.encoded() != bytes {
                return ["records: a manifest node does not re-encode to its bytes"]
            }
        case 3:
            if let listing = try? DirectoryListing(decoding: bytes), listing.encoded() != bytes {
                return ["records: a directory listing does not re-encode to its bytes"]
            }
        case 4:
            let text = String(decoding: bytes, as: UTF8.self)
            if let token = IdentityToken(text), token.description != text {
                return ["records: an identity token does not print as the text it was read from"]
            }
        case 5:
            if let block = try? SignedPermissionBlock(record: bytes),
                block.block.body + bytes.suffix(SigningKeyPair.signatureByteCount) != bytes
            {
                return ["records: a permission block does not re-encode to its record"]
            }
            if let record = try? LogRecord(record: bytes), record.record != bytes {
                return ["records: a log record does not keep its bytes"]
            }
        default:
            _ = try? RevisionMetadata(unsealing: bytes, epochKey: recordsEpochKey, document: recordsDocument)
        }
        return []
    }

    // MARK: Seeds

    /// Small valid inputs for each target (name, bytes), deterministic: the seed corpus in
    /// `Fuzz/corpus/<target>/seed-<name>` is exactly this (FuzzCorpusTests checks it, and rewrites it
    /// with `HYPERNET_FUZZ_WRITE_SEEDS=1`).
    // MARK: Have-sets

    public static func haveSets(_ data: [UInt8]) -> [String] {
        guard let n = data.first else { return [] }
        var violations: [String] = []
        var stream = Array(data.dropFirst())
        guard let messages = try? Frame.decode(&stream) else { return [] }
        let ids = (0...Int(n)).map { BLAKE2b.hash([UInt8($0)]) }
        let haves = HaveSets()
        let swarm = haveSetsSwarm
        let link = FuzzLink()
        haves.open(swarm, ids: ids)
        haves.tell(swarm, to: link)
        var table = Announcements<Int>()
        for message in messages {
            let before = haves.held(swarm, at: ObjectIdentifier(link))
            switch message {
            case .have(let s, let bits):
                let refused = haves.have(s, bits: bits, from: link) != nil
                if refused && haves.held(swarm, at: ObjectIdentifier(link)) != before {
                    violations.append("haveSets: a refused have changed the have-set")
                }
                if !refused, s == swarm, bits.count != (ids.count + 7) / 8 {
                    violations.append("haveSets: a have of \(bits.count) bytes accepted for \(ids.count) ids")
                }
            case .got(let s, let indexes):
                let refused = haves.got(s, indexes: indexes, from: link) != nil
                if refused && haves.held(swarm, at: ObjectIdentifier(link)) != before {
                    violations.append("haveSets: a refused got changed the have-set")
                }
            case .interest(let s, let list):
                let bits = table.interest(s, ids: list, from: 1, held: { $0.bytes[0] & 1 == 0 }, now: 0)
                if !list.isEmpty, bits.count != (list.count + 7) / 8 {
                    violations.append("haveSets: an answer of \(bits.count) bytes for \(list.count) ids")
                }
                for (_, swarms) in table.arrived(list.prefix(4), now: 0) {
                    for (_, positions) in swarms where positions.contains(where: { Int($0) >= list.count }) {
                        violations.append("haveSets: a got position past the list")
                    }
                }
            default:
                break
            }
            if let held = haves.held(swarm, at: ObjectIdentifier(link)), !held.isSubset(of: Set(ids)) {
                violations.append("haveSets: the have-set holds ids the fetch does not list")
            }
        }
        return violations
    }

    /// The swarm `haveSets` opens: its seeds name it.
    static let haveSetsSwarm = BLAKE2b.hash(Array("fuzz swarm".utf8))

    /// A connection that drops what is sent on it.
    private final class FuzzLink: PeerLink {
        var node: SigningPublicKey? { nil }
        var isEnded: Bool { false }
        func send(_ message: Message) {}
        func close(_ reason: String) {}
    }

    public static func seeds() -> [(target: String, name: String, bytes: [UInt8])] {
        var out: [(String, String, [UInt8])] = []
        let tree = handshakeResponderNode.publicKey
        let chunk = try! Digest(bytes: [UInt8](repeating: 7, count: 32))
        let author = try! SigningKeyPair(seed: SecureBytes([UInt8](repeating: 6, count: 32)))
        let revision = Revision(
            document: recordsDocument, kind: .file, epoch: 1, rights: recordsDocument, time: HLCTime(rawValue: 1 << 20),
            author: author.publicKey,
            parents: [chunk], sealedMetadata: [1, 2, 3]
        ).signed(by: author)
        let messages: [(String, Message)] = [
            (
                "hello",
                .hello(
                    Message.Hello(
                        listen: "127.0.0.1:7000", software: "hypernet/fuzz", storeID: "s", trees: [tree],
                        pinsEverything: false))
            ),
            ("peers", .peers(["127.0.0.2:7000", "[::1]:7001"])),
            ("subscribe", .subscribe(tree: tree, storeID: "s", after: 3)),
            (
                "entries",
                .entries(
                    tree: tree, storeID: "s", entries: [LogEntry(seq: 4, record: revision.record, chunks: [chunk])],
                    caughtUp: false)
            ),
            ("entries-caught-up", .entries(tree: tree, storeID: "s", entries: [], caughtUp: true)),
            (
                "entries-held",
                .entries(
                    tree: tree, storeID: "s", entries: [LogEntry(seq: 5, record: revision.record, chunks: [chunk])],
                    caughtUp: false, held: true)
            ),
            ("progress", .progress(tree: tree, seq: 4)),
            ("want", .want([chunk, chunk])),
            ("chunk", .chunk(id: chunk, sealed: [9, 9, 9])),
            ("chunk-missing", .chunk(id: chunk, sealed: nil)),
            ("ack", .ack(.signed(by: author, revisions: [revision.id]))),
            ("ping", .ping),
            ("prune", .prune(tree: tree)),
            ("graft", .graft(tree: tree)),
            (
                "query",
                .query(
                    .signed(
                        by: author, id: 1, origin: tree, issued: 1 << 40, op: .grep, flags: [.fixed],
                        pattern: "ERROR", window: 1 << 20, limit: 0,
                        targets: [.init(tree: tree, document: recordsDocument, revision: revision.id)]))
            ),
            (
                "result",
                .result(.init(id: 1, status: .data, index: 0, cursor: 9, items: [.init(number: 1, bytes: [69])]))
            ),
            ("credit", .credit(id: 1, received: 80)),
            ("cancel", .cancel(id: 1)),
        ]
        for (name, message) in messages { out.append(("FuzzFrames", name, [0] + Frame.encode(message))) }
        out.append(("FuzzFrames", "all-split-7", [6] + messages.flatMap { Frame.encode($0.1) }))
        for (name, message) in [
            ("interest", Message.interest(swarm: chunk, ids: [chunk, chunk])), ("have", .have(swarm: chunk, bits: [1])),
            ("got", .got(swarm: chunk, indexes: [1])),
        ] {
            out.append(("FuzzFrames", name, [0] + Frame.encode(message)))
        }
        let swarm = haveSetsSwarm
        out.append(
            (
                "FuzzHaves", "have-got-end",
                [9] + Frame.encode(.have(swarm: swarm, bits: [0b101, 0]))
                    + Frame.encode(.got(swarm: swarm, indexes: [9]))
                    + Frame.encode(.got(swarm: swarm, indexes: [10]))
            ))
        out.append(("FuzzHaves", "have-short", [9] + Frame.encode(.have(swarm: swarm, bits: [0xff]))))
        out.append(
            (
                "FuzzHaves", "interest",
                [0] + Frame.encode(.interest(swarm: chunk, ids: [chunk, swarm]))
                    + Frame.encode(.interest(swarm: chunk, ids: []))
            ))

        // A whole session against the fixed responder: messages 1 and 3 of an initiator with fixed keys,
        // then two transport records carrying a hello and a ping (the second record splits a frame).
        let initiatorStatic = try! BoxKeyPair(secretKey: SecureBytes([UInt8](repeating: 8, count: 32)))
        var initiator = NoiseHandshake(
            role: .initiator, prologue: SecureChannelHandler.prologue, staticKey: initiatorStatic,
            ephemeralKey: try! BoxKeyPair(secretKey: SecureBytes([UInt8](repeating: 9, count: 32))))
        var responder = NoiseHandshake(
            role: .responder, prologue: SecureChannelHandler.prologue, staticKey: handshakeResponderStatic,
            ephemeralKey: handshakeResponderEphemeral)
        func record(_ bytes: [UInt8]) -> [UInt8] { [UInt8(bytes.count & 0xFF), UInt8(bytes.count >> 8)] + bytes }
        let m1 = try! initiator.writeMessage(payload: [])
        _ = try! responder.readMessage(m1)
        let m2 = try! responder.writeMessage(
            payload: NodeAuth.payload(node: handshakeResponderNode, staticKey: handshakeResponderStatic.publicKey))
        _ = try! initiator.readMessage(m2)
        let m3 = try! initiator.writeMessage(
            payload: NodeAuth.payload(node: author, staticKey: initiatorStatic.publicKey))
        var send = initiator.split().send
        let plain = Frame.encode(messages[0].1) + Frame.encode(.ping)
        let cut = plain.count - 3
        let t1 = try! plain[..<cut].withUnsafeBytes { (b) throws(NoiseError) in try send.encrypt(b) }
        let t2 = try! plain[cut...].withUnsafeBytes { (b) throws(NoiseError) in try send.encrypt(b) }
        out.append(("FuzzHandshake", "message-1", [0] + record(m1)))
        out.append(("FuzzHandshake", "session", [0] + record(m1) + record(m3) + record(t1) + record(t2)))
        out.append(
            (
                "FuzzHandshake", "nodeauth",
                [1] + NodeAuth.payload(node: author, staticKey: handshakeResponderStatic.publicKey)
            ))
        // A low-order X25519 point as the ephemeral key: the responder's DH must fail cleanly.
        out.append(("FuzzHandshake", "low-order-ephemeral", [0] + record([UInt8](repeating: 0, count: 32))))

        let manifest = ManifestReference(node: ChunkReference(id: chunk, key: chunk, length: 10), level: 0)
        let metadata = RevisionMetadata(
            mode: 0o100644, uid: 0, gid: 0, mtimeSeconds: 1, mtimeNanoseconds: 2, ctimeSeconds: 3, ctimeNanoseconds: 4,
            size: 10, quorum: 0, xattrs: [.init(name: "user.a", value: [1])], content: manifest, symlinkTarget: [])
        out.append(("FuzzRecords", "revision", [0] + revision.record))
        out.append(("FuzzRecords", "metadata", [1] + metadata.encoded()))
        out.append(
            (
                "FuzzRecords", "manifest-node",
                [2] + ManifestNode(level: 1, children: [manifest.node, manifest.node]).encoded()
            ))
        out.append(
            (
                "FuzzRecords", "directory",
                [3]
                    + DirectoryListing(entries: [
                        .init(name: "a.txt", document: recordsDocument, kind: .file),
                        .init(name: "é", document: recordsDocument, kind: .directory),
                    ]).encoded()
            ))
        out.append(
            (
                "FuzzRecords", "identity-token",
                [4]
                    + Array(
                        IdentityToken(signing: author.publicKey, box: handshakeResponderStatic.publicKey).description
                            .utf8)
            ))
        // A public block without a label seals nothing, so its bytes are deterministic.
        let block = SignedPermissionBlock.make(
            document: recordsDocument, after: nil,
            members: [
                .init(
                    identity: IdentityToken(signing: author.publicKey, box: handshakeResponderStatic.publicKey),
                    roles: .all)
            ],
            isPublic: true, signer: author)
        out.append(("FuzzRecords", "permission-block", [5] + block.record))
        // Sealing draws a random nonce: this seed only reaches the AEAD check, deterministically.
        out.append(
            (
                "FuzzRecords", "sealed-metadata",
                [6] + [UInt8](repeating: 0, count: 24) + metadata.encoded() + [UInt8](repeating: 0, count: 16)
            ))
        return out
    }
}
