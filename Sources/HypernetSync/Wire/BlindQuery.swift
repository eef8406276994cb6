import HypernetCrypto
import HypernetModel

/// A `blind query` (docs/protocol.md, "Blind queries"): the blocks of each target whose blind tokens hold every
/// trapdoor, answered by nodes without the epoch key. Carried as a `Query` with `trapdoors` set.
extension Query {
    static let blindContext = Array("hypernet blind query v1\n".utf8)
    static let maximumTrapdoors = 16

    var signingContext: [UInt8] { trapdoors == nil ? Self.context : Self.blindContext }

    func blindBody(_ trapdoors: [UInt32]) -> [UInt8] {
        var w = ByteWriter(capacity: 128 + 4 * trapdoors.count + 88 * targets.count)
        w.u64(id)
        w.raw(requester.bytes)
        w.raw(origin.bytes)
        w.i64(issued)
        w.u32(window)
        w.u32(UInt32(trapdoors.count))
        for t in trapdoors { w.u32(t) }
        Self.encode(targets, &w)
        return w.bytes
    }

    static func decodeBlind(_ r: inout ByteReader) throws(DecodingError) -> Query {
        let id = try r.u64()
        let requester = try r.key()
        let origin = try r.key()
        let issued = try r.i64()
        let window = try r.u32()
        let n = Int(try r.u32())
        guard (1...maximumTrapdoors).contains(n) else { throw .invalid("blind query of \(n) trapdoors") }
        var trapdoors: [UInt32] = []
        for _ in 0..<n { trapdoors.append(try r.u32()) }
        let targets = try decodeTargets(&r)
        return Query(
            id: id, requester: requester, origin: origin, issued: issued, op: .grep, flags: [], pattern: "",
            window: window, limit: 0, targets: targets, signature: try r.raw(SigningKeyPair.signatureByteCount),
            trapdoors: trapdoors)
    }
}

/// A matching block, as a blind query's `data` item carries it: `number` is its first line's number, `bytes` say
/// which chunks to fetch and where its lines are in them.
public struct BlindBlock: Sendable, Equatable {
    /// Its position in the content's chunk list.
    public var block: UInt32
    /// Where its first line starts in its chunk.
    public var start: UInt32
    /// The chunks its lines run over, from its own.
    public var span: UInt32
    /// Where its last line ends in the last of them; nil: at that chunk's end.
    public var end: UInt32?
    public var firstLine: UInt64

    public init(block: UInt32, start: UInt32, span: UInt32, end: UInt32?, firstLine: UInt64) {
        self.block = block
        self.start = start
        self.span = span
        self.end = end
        self.firstLine = firstLine
    }

    public var item: QueryResult.Item {
        var w = ByteWriter(capacity: 16)
        w.u32(block)
        w.u32(start)
        w.u32(span)
        w.u32(end ?? .max)
        return QueryResult.Item(number: firstLine, bytes: w.bytes)
    }

    /// The block's bytes, its lines from the first to the last one's newline (or the content's end), cut from the
    /// plaintexts of the `span` chunks from its own; nil when they do not reach where it says.
    public func text(_ chunks: [[UInt8]]) -> [UInt8]? {
        guard chunks.count == Int(span) else { return nil }
        var bytes: [UInt8] = []
        for (k, chunk) in chunks.enumerated() {
            var piece = chunk[...]
            if k == chunks.count - 1, let end {
                guard Int(end) <= chunk.count else { return nil }
                piece = piece[..<Int(end)]
            }
            if k == 0 {
                guard Int(start) <= piece.count else { return nil }
                piece = piece[Int(start)...]
            }
            bytes += piece
        }
        return bytes
    }

    public init(_ item: QueryResult.Item) throws(DecodingError) {
        var r = ByteReader(item.bytes, context: "blind block")
        block = try r.u32()
        start = try r.u32()
        span = try r.u32()
        let end = try r.u32()
        self.end = end == .max ? nil : end
        firstLine = item.number
        try r.expectEnd()
        guard span > 0, firstLine > 0 else { throw .invalid("blind block") }
    }
}
