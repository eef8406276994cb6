import HypernetCrypto
import HypernetModel

/// A query run near the data (docs/protocol.md, "Queries"): signed by the identity that asks, bound to the node
/// that sends it, naming each document at one revision and the offset in it to resume after.
public struct Query: Sendable, Equatable {
    static let context = Array("hypernet query v1\n".utf8)

    public enum Operator: UInt8, Sendable {
        /// Matching lines (`grep`).
        case grep = 1
        /// Occurrences per group captured by the pattern (`count --by`).
        case count = 2
        /// The last `limit` lines, filtered by the pattern when it is not empty (`tail --grep`).
        case tail = 3
    }

    /// How the pattern matches and what `grep` reports (GNU grep's `-i -w -F -E -v -c -l`).
    public struct Flags: OptionSet, Sendable, Hashable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let ignoreCase = Flags(rawValue: 1)
        public static let word = Flags(rawValue: 2)
        public static let fixed = Flags(rawValue: 4)
        public static let extended = Flags(rawValue: 8)
        public static let invert = Flags(rawValue: 16)
        public static let countOnly = Flags(rawValue: 32)
        public static let namesOnly = Flags(rawValue: 64)
    }

    /// One document of a tree at one revision; results of it start after byte `after` of its content.
    public struct Target: Sendable, Hashable {
        public var tree: SigningPublicKey
        public var document: DocumentID
        public var revision: RevisionID
        public var after: Int64

        public init(tree: SigningPublicKey, document: DocumentID, revision: RevisionID, after: Int64 = 0) {
            self.tree = tree
            self.document = document
            self.revision = revision
            self.after = after
        }
    }

    /// Chosen by the sender; unique among its running queries on the connection.
    public var id: UInt64
    /// The identity whose read rights the query runs with; it signs.
    public var requester: SigningPublicKey
    /// The node key of the node that sends it: a serving node refuses it on any other connection.
    public var origin: SigningPublicKey
    /// When it was signed (Unix milliseconds): refused 5 minutes either side of the serving node's clock.
    public var issued: Int64
    public var op: Operator
    public var flags: Flags
    public var pattern: String
    /// Result bytes the server may send beyond those acknowledged with `credit`.
    public var window: UInt32
    /// `tail`: lines per document; else at most this many result lines per document (0: no limit).
    public var limit: UInt32
    public var targets: [Target]
    public var signature: [UInt8]
    /// Set for a `blind query` (message 16, BlindQuery.swift): the tokens of the words whose blocks are wanted.
    /// Such a query carries no operator, flags, pattern or limit (`grep`, none, empty, 0).
    public var trapdoors: [UInt32]? = nil

    public static func signed(
        by identity: SigningKeyPair, id: UInt64, origin: SigningPublicKey, issued: Int64, op: Operator, flags: Flags,
        pattern: String, window: UInt32, limit: UInt32, targets: [Target], trapdoors: [UInt32]? = nil
    ) -> Query {
        var q = Query(
            id: id, requester: identity.publicKey, origin: origin, issued: issued, op: op, flags: flags,
            pattern: pattern, window: window, limit: limit, targets: targets, signature: [], trapdoors: trapdoors)
        q.signature = identity.signature(for: q.signingContext + q.body)
        return q
    }

    /// Everything but the signature, as encoded.
    var body: [UInt8] { trapdoors.map(blindBody) ?? queryBody }

    private var queryBody: [UInt8] {
        var w = ByteWriter(capacity: 128 + 88 * targets.count)
        w.u64(id)
        w.raw(requester.bytes)
        w.raw(origin.bytes)
        w.i64(issued)
        w.u8(op.rawValue)
        w.u8(flags.rawValue)
        w.string(pattern)
        w.u32(window)
        w.u32(limit)
        Self.encode(targets, &w)
        return w.bytes
    }

    static func encode(_ targets: [Target], _ w: inout ByteWriter) {
        w.u32(UInt32(targets.count))
        for t in targets {
            w.raw(t.tree.bytes)
            w.raw(t.document.bytes)
            w.digest(t.revision)
            w.i64(t.after)
        }
    }

    public var isValid: Bool { requester.isValidSignature(signature, for: signingContext + body) }

    /// The longest pattern a query carries (bytes), and the most documents one query names: a receiver refuses
    /// more, so a requester refuses a longer pattern and splits a longer list.
    public static let maximumPattern = Message.Limits.maximumString
    static let maximumTargets = Message.Limits.maximumQueryTargets

    static func decode(_ r: inout ByteReader) throws(DecodingError) -> Query {
        let id = try r.u64()
        let requester = try r.key()
        let origin = try r.key()
        let issued = try r.i64()
        guard let op = Operator(rawValue: try r.u8()) else { throw .invalid("query operator") }
        let flags = Flags(rawValue: try r.u8())
        guard flags.rawValue & 0x80 == 0 else { throw .invalid("query flags") }
        let pattern = try r.string(limit: maximumPattern)
        let window = try r.u32()
        let limit = try r.u32()
        let targets = try decodeTargets(&r)
        return Query(
            id: id, requester: requester, origin: origin, issued: issued, op: op, flags: flags, pattern: pattern,
            window: window, limit: limit, targets: targets, signature: try r.raw(SigningKeyPair.signatureByteCount))
    }

    static func decodeTargets(_ r: inout ByteReader) throws(DecodingError) -> [Target] {
        let n = Int(try r.u32())
        guard n <= maximumTargets else { throw .invalid("query of \(n) documents") }
        var targets: [Target] = []
        for _ in 0..<n {
            let tree = try r.key()
            let document = try DocumentID(bytes: r.raw(DocumentID.byteCount))
            let revision = try r.digest()
            let after = try r.i64()
            guard after >= 0 else { throw .invalid("negative query offset") }
            targets.append(Target(tree: tree, document: document, revision: revision, after: after))
        }
        return targets
    }
}

/// A piece of a query's answer for one of its targets (by position in the query's list: results carry no name).
public struct QueryResult: Sendable, Equatable {
    public enum Status: UInt8, Sendable {
        /// `items` are results; the target's results so far cover its content up to byte `cursor`.
        case data = 0
        /// The target is finished (its content ends at byte `cursor`); no more results for it.
        case done = 1
        /// Not answered here: not held, no read right for the requester, or no key to open it. Ask elsewhere.
        case unavailable = 2
        /// The whole query is refused: `items` hold one line saying why; nothing more comes for it.
        case refused = 3
    }

    /// One result line: `grep`, `tail`: line number, the offset of the line's first byte in the content and the line
    /// (without its newline); `grep -c`: the number of matching lines and no bytes; `grep -l`: 1 and no bytes;
    /// `count`: occurrences and the captured group (offset 0 for all three).
    public struct Item: Sendable, Equatable {
        /// What an item counts in a result's size besides its bytes: its number, offset and the bytes' length.
        public static let overhead = 20

        public var number: UInt64
        public var offset: Int64
        public var bytes: [UInt8]
        public init(number: UInt64, offset: Int64 = 0, bytes: [UInt8]) {
            self.number = number
            self.offset = offset
            self.bytes = bytes
        }
    }

    public static let noTarget = UInt32.max

    public var id: UInt64
    public var status: Status
    public var index: UInt32
    public var cursor: Int64
    public var items: [Item]

    public init(id: UInt64, status: Status, index: UInt32, cursor: Int64 = 0, items: [Item] = []) {
        self.id = id
        self.status = status
        self.index = index
        self.cursor = cursor
        self.items = items
    }

    static func refusal(_ id: UInt64, _ reason: String) -> QueryResult {
        QueryResult(id: id, status: .refused, index: noTarget, items: [Item(number: 0, bytes: Array(reason.utf8))])
    }

    static let headerByteCount = 25

    /// The bytes it counts for in the credit window: its encoded payload's length.
    public var byteCount: Int { Self.headerByteCount + items.reduce(0) { $0 + Item.overhead + $1.bytes.count } }

    func encode(_ w: inout ByteWriter) {
        w.u64(id)
        w.u8(status.rawValue)
        w.u32(index)
        w.i64(cursor)
        w.u32(UInt32(items.count))
        for item in items {
            w.u64(item.number)
            w.i64(item.offset)
            w.blob(item.bytes)
        }
    }

    static func decode(_ r: inout ByteReader) throws(DecodingError) -> QueryResult {
        let id = try r.u64()
        guard let status = Status(rawValue: try r.u8()) else { throw .invalid("result status") }
        let index = try r.u32()
        let cursor = try r.i64()
        guard cursor >= 0 else { throw .invalid("negative result cursor") }
        let n = Int(try r.u32())
        guard n <= Message.Limits.maximumList else { throw .invalid("result of \(n) items") }
        var items: [Item] = []
        for _ in 0..<n {
            let number = try r.u64()
            let offset = try r.i64()
            guard offset >= 0 else { throw .invalid("negative result offset") }
            items.append(Item(number: number, offset: offset, bytes: try r.blob(limit: Message.Limits.maximumChunk)))
        }
        return QueryResult(id: id, status: status, index: index, cursor: cursor, items: items)
    }
}
