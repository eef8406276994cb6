import HypernetCrypto

/// A file revision's blind token index (docs/store-format.md, "Blind index"; docs/security.md, "Search on
/// ciphertext"): for each chunk of the content, the block of lines starting in it and the tokens of their words, so a
/// node without the epoch key can say which blocks hold a word. Stored in the clear: it holds no plaintext.
public struct BlindIndex: Sendable, Equatable {
    public static let formatVersion: UInt8 = 1
    /// No line starts in the chunk (it holds no newline): its bytes belong to the block before.
    static let noStart = UInt32.max

    /// Block i holds the lines starting from `start` in chunk i up to the first newline of a later chunk (included),
    /// or to the end of the content; block 0 starts at 0.
    public struct Block: Sendable, Equatable {
        /// Offset in its chunk of its first line; nil when no line starts in the chunk (the block is empty).
        public var start: UInt32?
        /// The newlines in the block: the number of its lines that end with one.
        public var newlines: UInt32
        /// The chunks it runs over: its own through the one its last line ends in (0 for an empty block).
        public var span: UInt32
        /// The tokens of its lines' words, sorted, each once.
        public var tokens: [UInt32]

        public init(start: UInt32?, newlines: UInt32, span: UInt32, tokens: [UInt32]) {
            self.start = start
            self.newlines = newlines
            self.span = span
            self.tokens = tokens
        }

        /// Whether its lines have every one of `trapdoors` among their words' tokens (or collide with them).
        public func holds(_ trapdoors: [UInt32]) -> Bool {
            start != nil
                && trapdoors.allSatisfy { t in
                    var (low, high) = (0, tokens.count)
                    while low < high {
                        let mid = (low + high) / 2
                        if tokens[mid] < t { low = mid + 1 } else { high = mid }
                    }
                    return low < tokens.count && tokens[low] == t
                }
        }
    }

    /// One per chunk of the content, in order.
    public var blocks: [Block]

    public init(blocks: [Block]) { self.blocks = blocks }

    /// Where block `i` ends in the last chunk of its span: the next block's start there, nil for the content's end.
    public func end(of i: Int) -> UInt32? {
        let last = i + Int(blocks[i].span) - 1
        return last > i && last < blocks.count ? blocks[last].start : nil
    }

    /// The line number (from 1) of block `i`'s first line.
    public func firstLine(of i: Int) -> UInt64 { 1 + blocks[..<i].reduce(0) { $0 + UInt64($1.newlines) } }

    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 16 + blocks.reduce(0) { $0 + 16 + 4 * $1.tokens.count })
        w.u8(Self.formatVersion)
        w.u8(UInt8(BlindTokenKey.tokenByteCount))
        w.u32(UInt32(blocks.count))
        for b in blocks {
            w.u32(b.start ?? Self.noStart)
            w.u32(b.newlines)
            w.u32(b.span)
            w.u32(UInt32(b.tokens.count))
            for t in b.tokens { w.u32(t) }
        }
        return w.bytes
    }

    public init(decoding bytes: [UInt8]) throws(DecodingError) {
        var r = ByteReader(bytes, context: "blind index")
        let version = try r.u8()
        guard version == Self.formatVersion else { throw .unsupportedVersion(Int(version)) }
        guard try r.u8() == BlindTokenKey.tokenByteCount else { throw .invalid("blind index token length") }
        let count = Int(try r.u32())
        // Each block takes at least 16 bytes: a count past that is a lie, refused before allocating for it.
        guard count <= r.remaining / 16 else { throw .truncated("blind index") }
        var blocks: [Block] = []
        blocks.reserveCapacity(count)
        for i in 0..<count {
            let start = try r.u32()
            let newlines = try r.u32()
            let span = try r.u32()
            let n = Int(try r.u32())
            guard n <= r.remaining / 4 else { throw .truncated("blind index") }
            var tokens: [UInt32] = []
            tokens.reserveCapacity(n)
            for _ in 0..<n { tokens.append(try r.u32()) }
            guard zip(tokens, tokens.dropFirst()).allSatisfy({ $0 < $1 }) else {
                throw .invalid("blind index tokens out of order")
            }
            guard span <= count - i, (start == Self.noStart) == (span == 0), i > 0 || start == 0 || count == 0 else {
                throw .invalid("blind index block \(i)")
            }
            blocks.append(
                Block(start: start == Self.noStart ? nil : start, newlines: newlines, span: span, tokens: tokens))
        }
        try r.expectEnd()
        self.init(blocks: blocks)
    }

    /// Builds an index from the content's chunks, given in order.
    public struct Builder {
        private let key: BlindTokenKey
        private var blocks: [Block] = []
        private var words = BlindWords()
        /// The block whose lines the chunks given now continue.
        private var open = 0

        public init(key: BlindTokenKey) { self.key = key }

        public mutating func add(_ chunk: [UInt8]) {
            guard !blocks.isEmpty else {
                blocks.append(Block(start: 0, newlines: 0, span: 1, tokens: []))
                return lines(chunk[...])
            }
            blocks[open].span += 1
            guard let newline = chunk.firstIndex(of: 0x0a) else {
                words.add(chunk)
                return blocks.append(Block(start: nil, newlines: 0, span: 0, tokens: []))
            }
            // The open block's last line ends here; the lines after the newline are this chunk's block.
            chunk[..<newline].withUnsafeBytes { words.add($0) }
            blocks[open].newlines += 1
            blocks[open].tokens = words.take(key)
            open = blocks.count
            blocks.append(Block(start: UInt32(newline + 1), newlines: 0, span: 1, tokens: []))
            lines(chunk[(newline + 1)...])
        }

        private mutating func lines(_ bytes: ArraySlice<UInt8>) {
            bytes.withUnsafeBytes { words.add($0) }
            blocks[open].newlines += UInt32(bytes.reduce(0) { $0 + ($1 == 0x0a ? 1 : 0) })
        }

        public mutating func finish() -> BlindIndex {
            if !blocks.isEmpty { blocks[open].tokens = words.take(key) }
            return BlindIndex(blocks: blocks)
        }
    }
}
