import Glibc
import HypernetModel
import HypernetScan
import HypernetStore
import HypernetVFS
import Logging

/// Runs grep and count (docs/grep.md) over documents this node holds: reads each through the store as the mount
/// does (decrypted, only what this identity can open), chunk by chunk, and hands each result to `send` as soon as
/// it is found. Its own component so that the same scan can answer a remote requester.
struct QueryExecutor: Sendable {
    /// A document to scan and the path its results name.
    struct Target: Sendable {
        var path: String
        var document: DocumentID
    }

    /// Zeros of a hole are scanned in pieces of at most this.
    static let holePiece = 1 << 20

    let store: Store
    let fileSystem: VirtualFileSystem
    let logger: Logger

    /// Scans `targets` in order. `send` returns false once the requester has gone, `cancelled` is asked between
    /// chunks: either stops the scan at once. Sends the `done` line last and returns it; nil when stopped.
    @discardableResult
    func run(
        _ query: ScanQuery, pattern: LinePattern, targets: [Target], send: (ScanLine) -> Bool,
        cancelled: () -> Bool
    ) -> ScanLine.Progress? {
        var total = ScanLine.Progress(bytes: 0, documents: 0, selected: 0)
        var groups = GroupCounts()
        var lastProgress = Self.now()
        for target in targets {
            // Not readable here (no key opens it, not a file any more): skipped without a word, even of its name.
            guard let shown = fileSystem.shownRevision(of: target.document), shown.revision.kind == .file else {
                continue
            }
            let scanner = LineScanner(pattern)
            var selected = 0
            var gone = false
            let found = { (line: ScannedLine) -> Bool in
                selected += 1
                switch query.output {
                case .lines, .tail:
                    let (text, base64) = ScanLine.text(line.bytes)
                    let match = ScanLine.Match(
                        path: target.path, line: line.number, offset: line.offset, text: text, base64: base64)
                    gone = !send(ScanLine(match: match))
                    return !gone
                case .files:
                    // One selected line is enough.
                    return false
                case .counts:
                    return true
                case .groups:
                    do { try groups.add(line: line.bytes, matching: pattern) } catch {
                        gone = !send(ScanLine(error: "\(target.path): line \(line.number): \(error)"))
                        return false
                    }
                    return true
                }
            }
            do {
                var more = true
                for chunk in try store.loadManifest(shown.metadata.content).chunks where more {
                    if cancelled() { return stopped(total) }
                    guard chunk.isHole || store.holds(chunk.id) else {
                        throw Failure(.failure, "\(target.path): not all of its content is on this node")
                    }
                    more = try Self.feed(chunk, of: store, to: scanner, found)
                    if gone { return stopped(total) }
                    total.bytes += Int(chunk.length)
                    if Self.now() - lastProgress >= 1 {
                        lastProgress = Self.now()
                        guard send(ScanLine(progress: total)) else { return stopped(total) }
                    }
                }
                if more { try scanner.finish(found) }
                if gone { return stopped(total) }
            } catch {
                logger.warning(
                    "scan: cannot read a document", metadata: ["path": "\(target.path)", "error": "\(error)"])
                let message = error is Failure ? "\(error)" : "\(target.path): \(error)"
                guard send(ScanLine(error: message)) else { return stopped(total) }
                continue
            }
            total.documents += 1
            switch query.output {
            case .lines, .groups, .tail:
                total.selected! += selected
            case .counts:
                guard send(ScanLine(file: ScanLine.FileCount(path: target.path, count: selected))) else {
                    return stopped(total)
                }
                total.selected! += selected
            case .files:
                guard selected > 0 else { break }
                guard send(ScanLine(file: ScanLine.FileCount(path: target.path))) else { return stopped(total) }
                total.selected! += 1
            }
        }
        if query.output == .groups {
            // This node's table, whole: the requester adds the tables of every node before it takes the top.
            for (value, count) in groups.top() {
                let (text, base64) = ScanLine.text(value)
                guard send(ScanLine(group: ScanLine.Group(value: text, base64: base64, count: count))) else {
                    return stopped(total)
                }
            }
        }
        _ = send(ScanLine(done: total))
        return total
    }

    /// Feeds one chunk of a document to `scanner` (a hole as zeros, in pieces); false once `found` stopped it.
    static func feed(_ chunk: ChunkReference, of store: Store, to scanner: LineScanner, _ found: (ScannedLine) -> Bool)
        throws -> Bool
    {
        guard chunk.isHole else { return try scanner.feed(try store.readChunk(chunk), found) }
        var left = Int(chunk.length)
        var more = true
        while left > 0 && more {
            let piece = min(left, holePiece)
            more = try scanner.feed([UInt8](repeating: 0, count: piece), found)
            left -= piece
        }
        return more
    }

    private func stopped(_ total: ScanLine.Progress) -> ScanLine.Progress? {
        logger.info(
            "scan stopped: the requester went away",
            metadata: ["bytes": "\(total.bytes)", "documents": "\(total.documents)"])
        return nil
    }

    private static func now() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }
}
