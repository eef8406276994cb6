import HypernetCrypto
import HypernetModel
import HypernetScan
import HypernetStore
import HypernetSync

/// `grep -w WORD` over documents that no connected peer able to read could scan (docs/protocol.md, "Blind
/// queries"): peers holding their blind index (a storage node) say which blocks hold the word's token; this node
/// fetches those blocks' chunks, opens them and filters their lines exactly, so a token collision prints nothing.
extension Controller {
    /// The one word whose trapdoor answers `query`, nil when only a node that reads can answer it.
    static func blindWord(_ query: ScanQuery) -> [UInt8]? {
        guard query.wholeWord, !query.invert, query.output != .groups, query.output != .tail else { return nil }
        let word = Array(query.pattern.utf8)
        return !word.isEmpty && word.allSatisfy(BlindWords.isWordByte) ? word : nil
    }

    /// Runs the blind queries for `targets` and sends what their blocks hold, as `remoteScan` sends peers' results;
    /// false when the requester went away.
    func blindScan(
        _ query: ScanQuery, word: [UInt8], _ targets: [(String, Query.Target)], stream: ControlStream,
        send: (ScanLine) -> Bool, total: inout ScanLine.Progress
    ) -> Bool {
        guard let pattern = try? query.compiled() else { return true }
        // Targets sealed under one epoch key share a trapdoor: one blind query for each.
        var groups: [UInt32: [Int]] = [:]
        var contents: [[ChunkReference]?] = []
        for (i, (path, target)) in targets.enumerated() {
            guard let (revision, _) = try? store.sealedRevision(target.revision), revision.blindIndex != nil,
                let key = store.epochKey(tree: target.tree, rights: revision.rights, epoch: revision.epoch),
                let trapdoor = BlindTokenKey(epochKey: key).trapdoor(pattern: word),
                let metadata = try? store.revision(target.revision, readingXattrs: false).metadata,
                let chunks = try? store.loadManifest(metadata.content).chunks
            else {
                contents.append(nil)
                guard send(ScanLine(error: "\(path): no connected peer may read it here")) else { return false }
                continue
            }
            contents.append(chunks)
            groups[trapdoor, default: []].append(i)
        }
        for (trapdoor, members) in groups {
            var selected = [Int](repeating: 0, count: members.count)
            let events = QueryEvents()
            let handle = node.query(
                .init(trapdoors: [trapdoor]), targets: members.map { targets[$0].1 }, sink: { events.append($0) })
            func stop() -> Bool {
                node.cancelQuery(handle)
                return false
            }
            while true {
                guard let event = events.next() else {
                    if stream.isCancelled { return stop() }
                    continue
                }
                if stream.isCancelled { return stop() }
                switch event {
                case .items(let m, let items, let credit):
                    let (path, _) = targets[members[m]]
                    for item in items {
                        let lines: [ScannedLine]
                        do { lines = try Self.lines(of: BlindBlock(item), contents[members[m]]!, store, pattern) } catch
                        {
                            guard send(ScanLine(error: "\(path): \(error)")) else { return stop() }
                            continue
                        }
                        selected[m] += lines.count
                        guard query.output == .lines else { continue }
                        for line in lines {
                            let (text, base64) = ScanLine.text(line.bytes)
                            let match = ScanLine.Match(
                                path: path, line: line.number, offset: -1, text: text, base64: base64)
                            guard send(ScanLine(match: match)) else { return stop() }
                        }
                    }
                    node.consumed(credit)
                case .done(let m, _):
                    let path = targets[members[m]].0
                    total.documents += 1
                    switch query.output {
                    case .counts:
                        guard send(ScanLine(file: .init(path: path, count: selected[m]))) else { return stop() }
                    case .files:
                        guard selected[m] > 0 else { break }
                        guard send(ScanLine(file: .init(path: path))) else { return stop() }
                    case .lines, .groups, .tail: break
                    }
                    total.selected =
                        (total.selected ?? 0) + (query.output == .files ? min(selected[m], 1) : selected[m])
                case .unavailable(let m):
                    guard send(ScanLine(error: "\(targets[members[m]].0): no connected peer may read it here")) else {
                        return stop()
                    }
                case .refused(let reason):
                    logger.warning("a peer refused a blind query", metadata: ["reason": "\(reason)"])
                case .finished:
                    break
                }
                if event == .finished { break }
            }
        }
        return true
    }

    /// The lines of one matching block that `pattern` selects, numbered in the document: its chunks read (fetched
    /// from peers when absent here) and checked against the manifest, its lines cut from them.
    static func lines(of block: BlindBlock, _ chunks: [ChunkReference], _ store: Store, _ pattern: LinePattern)
        throws -> [ScannedLine]
    {
        let first = Int(block.block)
        guard first + Int(block.span) <= chunks.count,
            let bytes = block.text(try chunks[first..<(first + Int(block.span))].map { try store.readChunk($0) })
        else { throw Failure(.failure, "a blind block that is not where the content is") }
        var found: [ScannedLine] = []
        let scanner = LineScanner(pattern)
        let collect = { (line: ScannedLine) -> Bool in
            var line = line
            line.number += Int(block.firstLine) - 1
            found.append(line)
            return true
        }
        try scanner.feed(bytes, collect)
        try scanner.finish(collect)
        return found
    }
}
