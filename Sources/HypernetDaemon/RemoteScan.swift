import HypernetModel
import HypernetScan
import HypernetStore
import HypernetSync

/// A peer's query over one document held here (docs/protocol.md, "Queries"): the named revision read chunk by chunk
/// through the store (decrypted, as `QueryExecutor` reads) into a `LineScanner`, pulled as the requester's credit
/// allows. A resumed query scans from the start again but sends no line that starts before `target.after`.
///
/// `tail` follows a log from a cursor: it starts at the chunk that holds byte `after` (so lines are not numbered:
/// their number is 0), sends only complete lines (a last line without its newline waits for a later revision) and
/// ends at the end of the last complete line, the cursor the requester resumes from with the next revision.
final class RemoteScan: QueryScan {
    private let store: Store
    private let pattern: LinePattern
    private let scanner: LineScanner
    private let output: ScanQuery.Output
    private let chunks: [ChunkReference]
    private let after: Int
    private let tail: Bool
    /// `tail`: only the last this many lines are sent (0: all).
    private let last: Int
    /// The offset of the first chunk scanned: a line's offset in the content is `base` + its offset in the scan.
    private let base: Int
    private(set) var end: Int64
    private var nextChunk = 0
    private var pending: [(item: QueryResult.Item, end: Int)] = []
    private var selected = 0
    private var groups = GroupCounts()
    private var exhausted = false
    private(set) var failed = false

    /// nil when this node cannot run it: a pattern that does not compile, a revision not held or not a file, content
    /// not all here (a partial replica asks its own peers instead).
    init?(store: Store, query: Query, target: Query.Target) {
        let syntax: LinePattern.Syntax =
            query.flags.contains(.fixed) ? .fixed : query.flags.contains(.extended) ? .extended : .basic
        guard
            let pattern = try? LinePattern(
                pattern: query.pattern, syntax: syntax, ignoreCase: query.flags.contains(.ignoreCase),
                wholeWord: query.flags.contains(.word), invert: query.flags.contains(.invert)),
            let (revision, metadata) = try? store.revision(target.revision), revision.kind == .file,
            let chunks = try? store.loadManifest(metadata.content).chunks,
            chunks.allSatisfy({ $0.isHole || store.holds($0.id) })
        else { return nil }
        self.store = store
        self.pattern = pattern
        scanner = LineScanner(pattern)
        output =
            query.op == .count
            ? .groups : query.flags.contains(.countOnly) ? .counts : query.flags.contains(.namesOnly) ? .files : .lines
        self.chunks = chunks
        after = Int(target.after)
        end = Int64(metadata.size)
        tail = query.op == .tail
        last = tail ? Int(query.limit) : 0
        var start = 0
        if tail {
            // Chunks wholly before the cursor hold nothing to send.
            while nextChunk < chunks.count && start + Int(chunks[nextChunk].length) <= after {
                start += Int(chunks[nextChunk].length)
                nextChunk += 1
            }
        }
        base = start
    }

    func next(maximumBytes: Int) -> (items: [QueryResult.Item], cursor: Int64)? {
        // The last lines are known only at the end.
        while (pending.isEmpty || last > 0) && !exhausted { feed() }
        guard !pending.isEmpty else { return nil }
        var bytes = 0
        var taken = 0
        for p in pending {
            let size = QueryResult.Item.overhead + p.item.bytes.count
            guard taken == 0 || bytes + size <= maximumBytes else { break }
            bytes += size
            taken += 1
        }
        let items = pending.prefix(taken)
        pending.removeFirst(taken)
        return (items.map(\.item), Int64(items.last!.end))
    }

    /// Scans the next chunk (or finishes the document), queueing what it selects.
    private func feed() {
        let found = { [self] (line: ScannedLine) -> Bool in
            let offset = base + line.offset
            guard offset >= after else { return true }
            selected += 1
            switch output {
            case .lines, .tail:
                let end = min(offset + line.bytes.count + 1, Int(self.end))
                let number = tail ? 0 : UInt64(line.number)
                pending.append((QueryResult.Item(number: number, offset: Int64(offset), bytes: line.bytes), end))
                if last > 0 && pending.count > last { pending.removeFirst() }
                return true
            case .files:
                return false
            case .counts:
                return true
            case .groups:
                return (try? groups.add(line: line.bytes, matching: pattern)) != nil
            }
        }
        do {
            var more = true
            if nextChunk < chunks.count {
                let chunk = chunks[nextChunk]
                nextChunk += 1
                more = try QueryExecutor.feed(chunk, of: store, to: scanner, found)
                if more { return }
            } else if tail {
                end = Int64(base + scanner.completeBytes)
            } else {
                _ = try scanner.finish(found)
            }
        } catch {
            // Unreadable here after all (a damaged chunk): what was sent stands, a peer goes on from there.
            failed = true
            exhausted = true
            return
        }
        exhausted = true
        let end = Int(self.end)
        switch output {
        case .lines, .tail: break
        case .counts: pending.append((.init(number: UInt64(selected), bytes: []), end))
        case .files: if selected > 0 { pending.append((.init(number: 1, bytes: []), end)) }
        case .groups:
            for (value, count) in groups.top() { pending.append((.init(number: UInt64(count), bytes: value), end)) }
        }
    }
}
