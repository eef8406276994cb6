import HypernetModel

/// A blind query's answer for one target (docs/protocol.md, "Blind queries"): the blocks of its index that hold every
/// trapdoor, from block `after` on, each as a `BlindBlock` item; cursors count blocks. Reads nothing but the index.
final class BlindScan: QueryScan {
    private let index: BlindIndex
    private let trapdoors: [UInt32]
    private var block: Int
    private var line: UInt64
    let failed = false

    init(index: BlindIndex, trapdoors: [UInt32], after: Int) {
        self.index = index
        self.trapdoors = trapdoors
        block = min(after, index.blocks.count)
        line = index.firstLine(of: block)
    }

    var end: Int64 { Int64(index.blocks.count) }

    func next(maximumBytes: Int) -> (items: [QueryResult.Item], cursor: Int64)? {
        guard block < index.blocks.count else { return nil }
        var items: [QueryResult.Item] = []
        var bytes = 0
        while block < index.blocks.count {
            let b = index.blocks[block]
            if let start = b.start, b.holds(trapdoors) {
                let item = BlindBlock(
                    block: UInt32(block), start: start, span: b.span, end: index.end(of: block), firstLine: line
                ).item
                guard items.isEmpty || bytes + 12 + item.bytes.count <= maximumBytes else { break }
                items.append(item)
                bytes += 12 + item.bytes.count
            }
            line += UInt64(b.newlines)
            block += 1
        }
        return (items, Int64(block))
    }
}
