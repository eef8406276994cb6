import HypernetCrypto
import HypernetModel
import HypernetStore

/// The messages nodes exchange after the handshake, and their canonical encoding (docs/protocol.md,
/// "Messages"). Pure values: decoding untrusted bytes throws `DecodingError`, never traps.
public enum Message: Sendable, Equatable {
    /// First message on each side: who I am as a replica, what I hold and want.
    case hello(Hello)
    /// Peer exchange: addresses of other nodes.
    case peers([String])
    /// Send me your log of `tree` after `seq` (valid if your store id is still `storeID`), then keep pushing.
    case subscribe(tree: SigningPublicKey, storeID: String, after: Int64)
    /// A run of the sender's log of `tree`; `caughtUp`: nothing older remains to send; `held`: records the
    /// sender relays, held back and sent late (docs/protocol.md, "Relaying").
    case entries(tree: SigningPublicKey, storeID: String, entries: [LogEntry], caughtUp: Bool, held: Bool = false)
    /// The receiver of `entries` has processed (stored or rejected) the log of `tree` through `seq`: the
    /// sender may send more (at most `Replicator.window` runs are unconfirmed at any time).
    case progress(tree: SigningPublicKey, seq: Int64)
    /// Send me these chunks.
    case want([ChunkID])
    /// One sealed chunk (`sealed` nil: the sender does not hold it).
    case chunk(id: ChunkID, sealed: [UInt8]?)
    /// `node` durably holds `revisions`, signed by `node`: forwarded by every node that relays it.
    case ack(Ack)
    /// Keep-alive; any frame resets the peer's idle timer.
    case ping
    /// I get the records of `tree` you relay from another node first: hold your relayed live runs back a while.
    case prune(tree: SigningPublicKey)
    /// Send me your relayed live runs of `tree` at once again (undoes `prune`).
    case graft(tree: SigningPublicKey)
    /// Run this query on the documents it names that you hold (docs/protocol.md, "Queries"); a `blind query` (16)
    /// when it carries trapdoors ("Blind queries").
    case query(Query)
    /// A piece of the answer to the query `id` this connection's peer sent.
    case result(QueryResult)
    /// The sender of query `id` has taken `received` bytes of its results in all: the server may send more.
    case credit(id: UInt64, received: UInt64)
    /// Stop query `id`.
    case cancel(id: UInt64)
    /// I am fetching `ids` (the fetch `swarm`): tell me which you hold, and which you get from now on; an empty list
    /// ends it (docs/protocol.md, "Have-sets").
    case interest(swarm: Digest, ids: [ChunkID])
    /// Of the `interest` list `swarm` this connection's peer sent, the ids the sender holds: bit i of `bits`.
    case have(swarm: Digest, bits: [UInt8])
    /// The sender now also holds these positions of the `interest` list `swarm`.
    case got(swarm: Digest, indexes: [UInt32])

    public struct Hello: Sendable, Equatable {
        /// `HOST:PORT` this node accepts connections on; empty if it does not listen.
        public var listen: String
        public var software: String
        public var storeID: String
        /// Trees this node holds or pins.
        public var trees: [SigningPublicKey]
        /// The node stores every tree offered to it (`pin '*'`).
        public var pinsEverything: Bool

        public init(listen: String, software: String, storeID: String, trees: [SigningPublicKey], pinsEverything: Bool)
        {
            self.listen = listen
            self.software = software
            self.storeID = storeID
            self.trees = trees
            self.pinsEverything = pinsEverything
        }
    }

    public struct Ack: Sendable, Equatable, Hashable {
        static let context = Array("hypernet ack v1\n".utf8)
        public var node: SigningPublicKey
        public var revisions: [RevisionID]
        public var signature: [UInt8]

        public static func signed(by key: SigningKeyPair, revisions: [RevisionID]) -> Ack {
            let unsigned = Ack(node: key.publicKey, revisions: revisions, signature: [])
            return Ack(node: key.publicKey, revisions: revisions, signature: key.signature(for: unsigned.signedBytes))
        }

        init(node: SigningPublicKey, revisions: [RevisionID], signature: [UInt8]) {
            self.node = node
            self.revisions = revisions
            self.signature = signature
        }

        var signedBytes: [UInt8] {
            var w = ByteWriter(capacity: Self.context.count + 32 * (revisions.count + 1))
            w.raw(Self.context)
            w.raw(node.bytes)
            for r in revisions { w.digest(r) }
            return w.bytes
        }

        public var isValid: Bool { signedBytes.withUnsafeBytes { node.isValidSignature(signature, for: $0) } }
    }

    enum Kind: UInt8 {
        case hello = 1
        case peers = 2
        case subscribe = 3
        case entries = 4
        case progress = 5
        case want = 6
        case chunk = 7
        case ack = 8
        case ping = 9
        case prune = 10
        case graft = 11
        case query = 12
        case result = 13
        case credit = 14
        case cancel = 15
        case interest = 16
        case have = 17
        case got = 18
        case blindQuery = 19
    }

    /// Limits that bound what one frame can make a node allocate (docs/protocol.md, "Limits").
    public enum Limits {
        public static let maximumFrame = 17 << 20
        static let maximumList = 1 << 16
        /// Chunks one revision lists: ~32 GiB of new content at the 64 KiB average (16 MiB of ids, in one frame).
        static let maximumChunkList = 1 << 19
        static let maximumString = 1024
        static let maximumRecord = 17 << 20
        static let maximumChunk = 1 << 24
        static let maximumQueryTargets = 4096
        /// Ids in one `interest` (and positions in its bitfield).
        static let maximumInterest = 1 << 16
    }

    var kind: Kind {
        switch self {
        case .hello: .hello
        case .peers: .peers
        case .subscribe: .subscribe
        case .entries: .entries
        case .progress: .progress
        case .want: .want
        case .chunk: .chunk
        case .ack: .ack
        case .ping: .ping
        case .prune: .prune
        case .graft: .graft
        case .query(let q): q.trapdoors == nil ? .query : .blindQuery
        case .result: .result
        case .credit: .credit
        case .cancel: .cancel
        case .interest: .interest
        case .have: .have
        case .got: .got
        }
    }

    /// The payload (without the frame header).
    func encodedPayload() -> [UInt8] {
        var w = ByteWriter(capacity: 64)
        switch self {
        case .hello(let h):
            w.string(h.listen)
            w.string(h.software)
            w.string(h.storeID)
            w.u32(UInt32(h.trees.count))
            for t in h.trees { w.raw(t.bytes) }
            w.u8(h.pinsEverything ? 1 : 0)
        case .peers(let addresses):
            w.u32(UInt32(addresses.count))
            for a in addresses { w.string(a) }
        case .subscribe(let tree, let storeID, let after):
            w.raw(tree.bytes)
            w.string(storeID)
            w.i64(after)
        case .entries(let tree, let storeID, let entries, let caughtUp, let held):
            w.raw(tree.bytes)
            w.string(storeID)
            w.u8((caughtUp ? 1 : 0) | (held ? 2 : 0))
            w.u32(UInt32(entries.count))
            for e in entries {
                w.i64(e.seq)
                w.blob(e.record)
                w.u32(UInt32(e.chunks.count))
                for c in e.chunks { w.digest(c) }
            }
        case .progress(let tree, let seq):
            w.raw(tree.bytes)
            w.i64(seq)
        case .want(let ids):
            w.u32(UInt32(ids.count))
            for id in ids { w.digest(id) }
        case .chunk(let id, let sealed):
            w.digest(id)
            if let sealed {
                w.u8(1)
                w.blob(sealed)
            } else {
                w.u8(0)
            }
        case .ack(let a):
            w.raw(a.node.bytes)
            w.u32(UInt32(a.revisions.count))
            for r in a.revisions { w.digest(r) }
            w.raw(a.signature)
        case .ping:
            break
        case .prune(let tree), .graft(let tree):
            w.raw(tree.bytes)
        case .query(let q):
            w.raw(q.body)
            w.raw(q.signature)
        case .result(let result):
            result.encode(&w)
        case .credit(let id, let received):
            w.u64(id)
            w.u64(received)
        case .cancel(let id):
            w.u64(id)
        case .interest(let swarm, let ids):
            w.digest(swarm)
            w.u32(UInt32(ids.count))
            for id in ids { w.digest(id) }
        case .have(let swarm, let bits):
            w.digest(swarm)
            w.blob(bits)
        case .got(let swarm, let indexes):
            w.digest(swarm)
            w.u32(UInt32(indexes.count))
            for i in indexes { w.u32(i) }
        }
        return w.bytes
    }

    /// Decodes one frame's type and payload.
    public init(kind rawKind: UInt8, payload: [UInt8]) throws(DecodingError) {
        guard let kind = Kind(rawValue: rawKind) else { throw .invalid("message type \(rawKind)") }
        var r = ByteReader(payload, context: "\(kind) message")
        func key() throws(DecodingError) -> SigningPublicKey { try r.key() }
        func count(limit: Int = Limits.maximumList) throws(DecodingError) -> Int {
            let n = Int(try r.u32())
            guard n <= limit else { throw .invalid("list of \(n) in \(kind) message") }
            return n
        }
        switch kind {
        case .hello:
            let listen = try r.string(limit: Limits.maximumString)
            let software = try r.string(limit: Limits.maximumString)
            let storeID = try r.string(limit: Limits.maximumString)
            var trees: [SigningPublicKey] = []
            for _ in 0..<(try count()) { trees.append(try key()) }
            let flag = try r.u8()
            guard flag <= 1 else { throw .invalid("hello flag") }
            self = .hello(
                Hello(listen: listen, software: software, storeID: storeID, trees: trees, pinsEverything: flag == 1))
        case .peers:
            var addresses: [String] = []
            for _ in 0..<(try count()) { addresses.append(try r.string(limit: Limits.maximumString)) }
            self = .peers(addresses)
        case .subscribe:
            let tree = try key()
            let storeID = try r.string(limit: Limits.maximumString)
            let after = try r.i64()
            guard after >= 0 else { throw .invalid("negative sequence") }
            self = .subscribe(tree: tree, storeID: storeID, after: after)
        case .entries:
            let tree = try key()
            let storeID = try r.string(limit: Limits.maximumString)
            let flags = try r.u8()
            guard flags & ~3 == 0 else { throw .invalid("entries flags") }
            var entries: [LogEntry] = []
            for _ in 0..<(try count()) {
                let seq = try r.i64()
                let record = try r.blob(limit: Limits.maximumRecord)
                var chunks: [ChunkID] = []
                for _ in 0..<(try count(limit: Limits.maximumChunkList)) { chunks.append(try r.digest()) }
                entries.append(LogEntry(seq: seq, record: record, chunks: chunks))
            }
            self = .entries(
                tree: tree, storeID: storeID, entries: entries, caughtUp: flags & 1 != 0, held: flags & 2 != 0)
        case .progress:
            let tree = try key()
            self = .progress(tree: tree, seq: try r.i64())
        case .want:
            var ids: [ChunkID] = []
            for _ in 0..<(try count()) { ids.append(try r.digest()) }
            self = .want(ids)
        case .chunk:
            let id = try r.digest()
            switch try r.u8() {
            case 0: self = .chunk(id: id, sealed: nil)
            case 1: self = .chunk(id: id, sealed: try r.blob(limit: Limits.maximumChunk))
            default: throw .invalid("chunk flag")
            }
        case .ack:
            let node = try key()
            var revisions: [RevisionID] = []
            for _ in 0..<(try count()) { revisions.append(try r.digest()) }
            self = .ack(Ack(node: node, revisions: revisions, signature: try r.raw(SigningKeyPair.signatureByteCount)))
        case .ping:
            self = .ping
        case .prune:
            self = .prune(tree: try key())
        case .graft:
            self = .graft(tree: try key())
        case .query:
            self = .query(try Query.decode(&r))
        case .blindQuery:
            self = .query(try Query.decodeBlind(&r))
        case .result:
            self = .result(try QueryResult.decode(&r))
        case .credit:
            self = .credit(id: try r.u64(), received: try r.u64())
        case .cancel:
            self = .cancel(id: try r.u64())
        case .interest:
            let swarm = try r.digest()
            var ids: [ChunkID] = []
            for _ in 0..<(try count()) { ids.append(try r.digest()) }
            self = .interest(swarm: swarm, ids: ids)
        case .have:
            let swarm = try r.digest()
            self = .have(swarm: swarm, bits: try r.blob(limit: Limits.maximumInterest / 8))
        case .got:
            let swarm = try r.digest()
            var indexes: [UInt32] = []
            for _ in 0..<(try count()) {
                let i = try r.u32()
                guard i < Limits.maximumInterest else { throw .invalid("position \(i) in got message") }
                indexes.append(i)
            }
            self = .got(swarm: swarm, indexes: indexes)
        }
        try r.expectEnd()
    }
}

extension ByteReader {
    mutating func key() throws(DecodingError) -> SigningPublicKey {
        do { return try SigningPublicKey(bytes: raw(SigningPublicKey.byteCount)) } catch let e as DecodingError {
            throw e
        } catch {
            throw .invalid("key")
        }
    }
}

/// Frames: `u32 length | u8 version | u8 type | payload`, little-endian, `length` counting version, type and
/// payload. Carried inside the encrypted record stream (docs/protocol.md, "Framing").
public enum Frame {
    public static let version: UInt8 = 1
    static let headerByteCount = 6

    public static func encode(_ message: Message) -> [UInt8] {
        let payload = message.encodedPayload()
        var w = ByteWriter(capacity: headerByteCount + payload.count)
        w.u32(UInt32(payload.count + 2))
        w.u8(version)
        w.u8(message.kind.rawValue)
        w.raw(payload)
        return w.bytes
    }

    /// Splits complete frames off the front of `buffer`; what remains is an incomplete frame. Throws on an
    /// oversized length or an unknown version before reading the payload, so a 4 GiB length costs nothing.
    public static func decode(_ buffer: inout [UInt8]) throws(DecodingError) -> [Message] {
        var messages: [Message] = []
        var start = 0
        while buffer.count - start >= 4 {
            let length =
                Int(buffer[start]) | Int(buffer[start + 1]) << 8 | Int(buffer[start + 2]) << 16 | Int(buffer[start + 3])
                << 24
            guard length >= 2, length <= Message.Limits.maximumFrame else { throw .invalid("frame length \(length)") }
            if buffer.count - start >= 5, buffer[start + 4] != version {
                throw .unsupportedVersion(Int(buffer[start + 4]))
            }
            guard buffer.count - start >= 4 + length else { break }
            let payload = Array(buffer[(start + headerByteCount)..<(start + 4 + length)])
            messages.append(try Message(kind: buffer[start + 5], payload: payload))
            start += 4 + length
        }
        buffer.removeFirst(start)
        return messages
    }
}
