import Dispatch
import FoundationEssentials
import Glibc
import HypernetCrypto
import HypernetIndex
import HypernetModel
import HypernetScan
import HypernetStore
import HypernetSync
import HypernetVFS
import Logging
import Synchronization

/// Answers control requests for one running node: the daemon side of every CLI command that
/// needs the daemon.
final class Controller: Sendable {
    let home: Home
    /// Canonical; paths from the CLI must be inside it. nil when serving without a mount.
    let mountpoint: String?
    let keyring: Keyring
    let store: Store
    let fileSystem: VirtualFileSystem?
    /// nil when serving without a mount: such a node indexes nothing.
    let indexer: SearchIndexer?
    let node: SyncNode
    let quorum: Int
    /// `--keep-all`: nothing is released, whatever the retention policies say.
    let keepAll: Bool
    let logger: Logger
    let requestExit: @Sendable () -> Void

    init(
        home: Home, mountpoint: String?, keyring: Keyring, store: Store, fileSystem: VirtualFileSystem?,
        indexer: SearchIndexer?, node: SyncNode, quorum: Int, keepAll: Bool, logger: Logger,
        requestExit: @escaping @Sendable () -> Void
    ) {
        self.home = home
        self.mountpoint = mountpoint
        self.keyring = keyring
        self.store = store
        self.fileSystem = fileSystem
        self.indexer = indexer
        self.node = node
        self.quorum = quorum
        self.keepAll = keepAll
        self.logger = logger
        self.requestExit = requestExit
    }

    func handle(_ request: ControlRequest) -> ControlReply {
        do throws(Failure) {
            if request.command == .watch { return .stream(try watch(request)) }
            if request.command == .cat { return .stream(try content(request)) }
            if request.command == .gc { return .stream(collectGarbage(dryRun: request.dryRun == true)) }
            if request.command == .grep || request.command == .count { return try scan(request) }
            if request.command == .keep { return .stream(try keep(request)) }
            if request.command == .search, request.follow == true {
                guard let indexer else { throw Failure(.notHypernetPath, "this node serves without a mount: no index") }
                return .stream(try indexer.subscribe(request.query ?? ""))
            }
            return .success(try answer(request))
        } catch {
            return .failure(error)
        }
    }

    private func answer(_ request: ControlRequest) throws(Failure) -> any Encodable & Sendable {
        switch request.command {
        case .status:
            let backlog = try stored { () throws(StoreError) in try store.backlog(quorum: quorum) }
            return StatusReport(
                node: Hex.encode(keyring.node.publicKey.bytes), identity: "\(keyring.identityToken)",
                name: keyring.name, home: home.path, mountpoint: mountpoint, pid: getpid(),
                statistics: store.statistics(), filesystem: fileSystem?.statusLines() ?? [], listen: node.listenAddress,
                quorum: quorum, pins: try stored { () throws(StoreError) in try store.pins() },
                peers: node.peerStatus(), connections: node.connections.count, maxPeers: node.connections.maximum,
                backlogRevisions: backlog.revisions, backlogBytes: backlog.bytes,
                cache: store.cacheStatus(served: node.bytesServed),
                logPosition: try stored { () throws(StoreError) in try store.lastRevisionSeq() })
        case .peerAdd:
            let address = try PeerCommands.validAddress(request.argument)
            try stored { () throws(StoreError) in try node.addPeer(address) }
            logger.info("peer added", metadata: ["address": "\(address)"])
            return Acknowledgement()
        case .peerRemove:
            let address = try PeerCommands.validAddress(request.argument)
            guard try stored({ () throws(StoreError) in try node.removePeer(address) }) else {
                throw PeerCommands.unknownPeer(address)
            }
            return Acknowledgement()
        case .peers:
            return node.peerStatus()
        case .pin, .unpin:
            let who = try PeerCommands.validPin(request.argument)
            let content = try PeerCommands.validContent(request.content)
            try stored { () throws(StoreError) in try store.setPinned(who, request.command == .pin, content: content) }
            node.pinsChanged()
            return Acknowledgement()
        case .pins:
            return try stored { () throws(StoreError) in try store.pins() }
        case .log:
            let (absolute, relative) = try paths(request)
            let name = authorNames()
            return try history(absolute, relative).map { entry in
                var entry = entry
                entry.authorName = name(entry.author)
                return entry
            }
        case .restore, .resolve:
            // Both make a new revision with REV's content: restore on the visible head, resolve on every head.
            let (absolute, relative) = try paths(request)
            let command = request.command
            guard let wanted = request.revision else { throw Failure(.usage, "\(command.rawValue) needs a revision") }
            let revision = try resolve(wanted, in: try history(absolute, relative), path: absolute)
            let made = try vfs(absolute) { () throws(VFSError) in
                command == .restore
                    ? try fileSystem!.restore(path: relative, revision: revision)
                    : try fileSystem!.resolveConflict(path: relative, revision: revision)
            }
            logger.info(
                command == .restore ? "restored" : "resolved",
                metadata: ["path": "\(relative)", "from": "\(revision)", "revision": "\(made)"])
            return RestoreReply(revision: made)
        case .conflicts:
            let (absolute, relative) = try paths(ControlRequest(command: .conflicts, path: request.path ?? mountpoint))
            let found = try vfs(absolute) { () throws(VFSError) in
                try request.path == nil ? fileSystem!.allConflicts() : fileSystem!.conflicts(path: relative)
            }
            let root = absolute.hasSuffix("/") ? String(absolute.dropLast()) : absolute
            let name = authorNames()
            return found.map { c in
                var c = c
                c.path = request.path == nil ? root + "/" + c.path : absolute
                c.authorName = name(c.author)
                return c
            }
        case .du:
            let (absolute, relative) = try paths(ControlRequest(command: .du, path: request.path ?? mountpoint))
            let root = mountpoint!
            return try vfs(absolute) { () throws(VFSError) in try fileSystem!.usage(path: relative) }.map { u in
                var u = u
                u.path = u.path.isEmpty ? root : (root == "/" ? "/" : root + "/") + u.path
                return u
            }
        case .fsck:
            var damaged: Set<ChunkID> = []
            var problems = store.check(damaged: &damaged)
            // Damaged chunks the check found are asked of the peers at once (a repair may have started during the
            // check): those a copy repaired are no problem.
            var repaired: [String] = []
            if !damaged.isEmpty {
                node.repairNow()
                let left = Set(store.damagedChunks)
                repaired = damaged.filter { !left.contains($0) }.map { "chunk \($0.hex): repaired from a peer" }
                    .sorted()
                if !repaired.isEmpty { problems = store.check() }
            }
            problems += indexer?.check() ?? []
            for problem in problems { logger.warning("fsck", metadata: ["problem": "\(problem)"]) }
            return FsckReport(problems: problems, repaired: repaired)
        case .unkeep:
            let (absolute, relative) = try paths(request)
            return try vfs(absolute) { () throws(VFSError) in try fileSystem!.keep(path: relative, false) }
        case .watch, .gc, .grep, .count, .keep, .cat:
            throw Failure(.usage, "\(request.command.rawValue) streams: it is answered by handle")
        case .search:
            guard let query = request.query else { throw Failure(.usage, "search needs a query") }
            guard let sort = SearchSort(rawValue: request.sort ?? SearchSort.relevance.rawValue) else {
                let fields = SearchSort.allCases.map(\.rawValue).joined(separator: ", ")
                throw Failure(.usage, "--sort: not one of \(fields): \(request.sort ?? "")")
            }
            let limit = request.limit ?? 20
            let offset = request.offset ?? 0
            guard limit >= 1, limit <= 10_000, offset >= 0 else {
                throw Failure(.usage, "--limit must be 1 to 10000 and --offset 0 or more")
            }
            // A node serving without a mount indexes nothing: it finds nothing.
            guard let indexer else { return [SearchResult]() }
            return try indexer.search(query, sort: sort, limit: limit, offset: offset)
        case .index:
            guard let indexer else { throw Failure(.notHypernetPath, "this node serves without a mount: no index") }
            switch request.argument {
            case "rebuild": try indexer.rebuild()
            case nil, "status": break
            case let other?: throw Failure(.usage, "index: unknown action \(other)")
            }
            return try indexer.status()
        case .stop:
            logger.info("stop requested")
            requestExit()
            return Acknowledgement()
        case .unmount:
            guard let path = request.path else { throw Failure(.usage, "unmount needs a mountpoint") }
            guard path == mountpoint else {
                throw Failure(
                    .mountpoint,
                    "not mounted by the daemon of \(home.path): \(path) (it serves \(mountpoint ?? "no mount"))")
            }
            logger.info("unmount requested")
            requestExit()
            return Acknowledgement()
        }
    }

    /// A garbage collection pass run now, streamed as `GarbageLine`s: its progress, then its report.
    private func collectGarbage(dryRun: Bool) -> EventReader {
        streamed { [self, store] (progress: (GarbageProgress) -> Void) throws(StoreError) in
            try store.collectGarbage(
                dryRun: dryRun, retention: self.retention(), statements: self.appliesStatements, progress: progress)
        }
    }

    /// `hypernet keep PATH`, streamed as `KeepLine`s: the pass's progress, then its summary.
    private func keep(_ request: ControlRequest) throws(Failure) -> EventReader {
        let (absolute, relative) = try paths(request)
        guard let fileSystem else { throw Failure(.notHypernetPath, "this node serves without a mount") }
        return streamed { [self] (progress: (KeepProgress) -> Void) throws(Failure) in
            try vfs(absolute) { () throws(VFSError) in try fileSystem.keep(path: relative, true, progress: progress) }
        }
    }

    /// Runs `body` on another thread, streaming its progress and then its report (or error) as `ProgressLine`s.
    private func streamed<P: Codable & Sendable, R: Codable & Sendable, E: Error>(
        _ body: @escaping @Sendable ((P) -> Void) throws(E) -> R
    ) -> EventReader {
        let reader = EventReader { _ in }
        DispatchQueue.global().async {
            func send(_ line: ProgressLine<P, R>) {
                guard let data = try? JSONEncoder().encode(line) else { return }
                reader.append(Array(data) + [UInt8(ascii: "\n")])
            }
            do throws(E) { send(ProgressLine(report: try body { send(ProgressLine(progress: $0)) })) } catch {
                send(ProgressLine(error: "\(error)"))
            }
        }
        return reader
    }

    /// Streams the content of the request's path at its revision (default: the visible head), from byte `offset`, as
    /// `ContentLine`s, each sent as it reads, at the client's pace.
    private func content(_ request: ControlRequest) throws(Failure) -> EventReader {
        let (absolute, relative) = try paths(request)
        let entries = try history(absolute, relative)
        let revision: String
        if let wanted = request.revision {
            revision = try resolve(wanted, in: entries, path: absolute)
        } else if let head = entries.first(where: { $0.isHead && $0.kind != "tombstone" }) ?? entries.first(
            where: \.isHead)
            ?? entries.first
        {
            revision = head.revision
        } else {
            throw Failure(.unknownRevision, "no revision of \(absolute)")
        }
        guard (request.offset ?? 0) >= 0 else { throw Failure(.usage, "cat: the offset must be 0 or more") }
        let start = UInt64(request.offset ?? 0)
        let reader = EventReader { _ in }
        let line = { @Sendable (l: ContentLine) in Array((jsonLine(l) + "\n").utf8) }
        reader.append(line(ContentLine(revision: revision)))
        DispatchQueue.global().async { [self] in
            var ended = false
            do throws(Failure) {
                try vfs(absolute) { () throws(VFSError) in
                    try fileSystem!.streamContent(path: relative, revision: revision, from: start) { bytes in
                        let piece = line(ContentLine(content: Data(bytes).base64EncodedString()))
                        ended = !reader.append(waitingBelow: Self.contentBuffer, piece)
                        return !ended
                    }
                }
                if !ended { reader.append(line(ContentLine(end: true))) }
            } catch {
                reader.append(line(ContentLine(error: error.message, code: error.status.rawValue)))
            }
        }
        return reader
    }

    /// How far `cat` reads ahead of its client.
    static let contentBuffer = 4 << 20

    /// The retention rules in force now (docs/design.md, "Retention decisions"); nil keeps every revision's
    /// content: without a mount (a node that cannot place documents under their policies) or with `--keep-all`.
    /// A node without a mount applies its trees' owners' release statements instead, unless `--keep-all`.
    var appliesStatements: Bool { fileSystem == nil && !keepAll }

    func retention() -> (rules: Store.RetentionRules, now: UInt64)? {
        guard let fileSystem, !keepAll else { return nil }
        let rules = fileSystem.retentionRules()
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return ({ rules[$0] }, UInt64(now.tv_sec) * 1000)
    }

    /// grep and count: the documents below the request's paths scanned on the connection's thread, results streamed
    /// as they are found. A bad pattern fails before anything is read; a path that cannot be searched is an error
    /// line (as grep goes on with the other files).
    private func scan(_ request: ControlRequest) throws(Failure) -> ControlReply {
        if let query = request.scan, query.output == .tail { return try tailScan(request, query) }
        guard let query = request.scan, let wanted = request.paths, !wanted.isEmpty else {
            throw Failure(.usage, "\(request.command.rawValue) needs a pattern and a path")
        }
        let pattern = try query.compiled()
        var targets: [QueryExecutor.Target] = []
        var problems: [String] = []
        for path in wanted {
            do throws(Failure) {
                let (absolute, relative) = try paths(ControlRequest(command: request.command, path: path))
                let root = mountpoint! == "/" ? "" : mountpoint!
                targets += try vfs(absolute) { () throws(VFSError) in try fileSystem!.files(below: relative) }.map {
                    QueryExecutor.Target(path: root + "/" + $0.path, document: $0.document)
                }
            } catch {
                if error.status == .notHypernetPath && fileSystem == nil { throw error }
                problems.append(error.message)
            }
        }
        let executor = QueryExecutor(store: store, fileSystem: fileSystem!, logger: logger)
        let (local, remote) = split(targets)
        return .lines { [self, local, remote, problems] stream in
            func send(_ line: ScanLine) -> Bool { stream.send(Array((jsonLine(line) + "\n").utf8)) }
            for problem in problems where !send(ScanLine(error: problem)) { return }
            // The `done` line goes last, after what peers answered for the documents whose content is not here.
            var done: ScanLine.Progress?
            executor.run(
                query, pattern: pattern, targets: local,
                send: { line in
                    guard line.done == nil else {
                        done = line.done
                        return true
                    }
                    return send(line)
                }, cancelled: { stream.isCancelled })
            guard var total = done else { return }
            guard remoteScan(query, remote, stream: stream, send: send, total: &total) else { return }
            _ = send(ScanLine(done: total))
        }
    }

    /// `tail -f` of one revision of a file (docs/grep.md, "hypernet tail"): when its content is not held here, a peer
    /// that holds it scans it from byte `request.offset` and sends only the complete lines after it that the pattern
    /// selects; `done` names the cursor to go on from. Content held here: `done` without a cursor (tail reads it).
    private func tailScan(_ request: ControlRequest, _ query: ScanQuery) throws(Failure) -> ControlReply {
        _ = try query.compiled()
        guard let text = request.revision, let id = RevisionID(hex: text), let offset = request.offset, offset >= 0
        else { throw Failure(.usage, "tail needs a revision and an offset of 0 or more") }
        let (absolute, relative) = try paths(request)
        let document = try vfs(absolute) { () throws(VFSError) in try fileSystem!.files(below: relative) }.first?
            .document
        guard let (revision, tree) = try? store.sealedRevision(id), revision.document == document,
            revision.kind == .file, let (_, metadata) = try? store.revision(id, readingXattrs: false),
            let chunks = try? store.loadManifest(metadata.content).chunks
        else { throw Failure(.unknownRevision, "unknown revision \(text) of \(absolute)") }
        let held = chunks.allSatisfy { $0.isHole || store.holds($0.id) }
        let target = Query.Target(tree: tree, document: revision.document, revision: id, after: Int64(offset))
        return .lines { [self] stream in
            func send(_ line: ScanLine) -> Bool { stream.send(Array((jsonLine(line) + "\n").utf8)) }
            var total = ScanLine.Progress(bytes: 0, documents: 0, selected: 0)
            if !held {
                guard remoteScan(query, [(absolute, target)], stream: stream, send: send, total: &total) else { return }
            }
            _ = send(ScanLine(done: total))
        }
    }

    /// The targets whose content this node holds, and the others, each with the revision the mount shows and its
    /// tree, to be scanned by peers (docs/protocol.md, "Queries").
    private func split(_ targets: [QueryExecutor.Target]) -> ([QueryExecutor.Target], [(String, Query.Target)]) {
        var local: [QueryExecutor.Target] = []
        var remote: [(String, Query.Target)] = []
        for t in targets {
            guard let shown = fileSystem?.shownRevision(of: t.document), shown.revision.kind == .file,
                let chunks = try? store.loadManifest(shown.metadata.content).chunks,
                !chunks.allSatisfy({ $0.isHole || store.holds($0.id) }),
                let (_, tree) = try? store.sealedRevision(shown.id)
            else {
                local.append(t)
                continue
            }
            remote.append((t.path, Query.Target(tree: tree, document: t.document, revision: shown.id)))
        }
        return (local, remote)
    }

    /// Runs `query` on the peers for `targets` and streams what they answer, crediting each result once written, so a
    /// slow reader slows the peers; false when the requester went away (the query is cancelled).
    private func remoteScan(
        _ query: ScanQuery, _ targets: [(String, Query.Target)], stream: ControlStream, send: (ScanLine) -> Bool,
        total: inout ScanLine.Progress
    ) -> Bool {
        guard !targets.isEmpty else { return true }
        var flags: Query.Flags = query.syntax == .fixed ? [.fixed] : query.syntax == .extended ? [.extended] : []
        if query.ignoreCase { flags.insert(.ignoreCase) }
        if query.wholeWord { flags.insert(.word) }
        if query.invert { flags.insert(.invert) }
        if query.output == .counts { flags.insert(.countOnly) }
        if query.output == .files { flags.insert(.namesOnly) }
        let blindWord = Self.blindWord(query)
        var blind: [(String, Query.Target)] = []
        let events = QueryEvents()
        let op: Query.Operator = query.output == .groups ? .count : query.output == .tail ? .tail : .grep
        let handle = node.query(
            .init(op: op, flags: flags, pattern: query.pattern),
            targets: targets.map(\.1), sink: { events.append($0) })
        while true {
            guard let event = events.next(), !stream.isCancelled else {
                if stream.isCancelled {
                    node.cancelQuery(handle)
                    return false
                }
                continue
            }
            switch event {
            case .items(let t, let items, let credit):
                let path = targets[t].0
                for item in items {
                    let line: ScanLine
                    switch query.output {
                    case .lines, .tail:
                        let (text, base64) = ScanLine.text(item.bytes)
                        line = ScanLine(
                            match: .init(
                                path: path, line: Int(item.number), offset: Int(item.offset), text: text,
                                base64: base64))
                    case .counts: line = ScanLine(file: .init(path: path, count: Int(item.number)))
                    case .files: line = ScanLine(file: .init(path: path))
                    case .groups:
                        let (text, base64) = ScanLine.text(item.bytes)
                        line = ScanLine(group: .init(value: text, base64: base64, count: Int(item.number)))
                    }
                    guard send(line) else {
                        node.cancelQuery(handle)
                        return false
                    }
                    total.selected = (total.selected ?? 0) + (query.output == .counts ? Int(item.number) : 1)
                }
                node.consumed(credit)
            case .done(_, let cursor):
                total.documents += 1
                total.cursor = Int(cursor)
            case .unavailable(let t):
                // A whole word may still be found by the nodes holding the document's blind index.
                if blindWord != nil {
                    blind.append(targets[t])
                    continue
                }
                guard send(ScanLine(error: "\(targets[t].0): no connected peer may read it here")) else {
                    node.cancelQuery(handle)
                    return false
                }
            case .refused(let reason):
                logger.warning("a peer refused a query", metadata: ["reason": "\(reason)"])
            case .finished:
                guard let blindWord, !blind.isEmpty else { return true }
                return blindScan(query, word: blindWord, blind, stream: stream, send: send, total: &total)
            }
        }
    }

    /// A reader of the events below the request's paths (all of them given, checked first).
    private func watch(_ request: ControlRequest) throws(Failure) -> EventReader {
        var relative: [String] = []
        for path in request.paths ?? [] {
            relative.append(try paths(ControlRequest(command: .watch, path: path)).1)
        }
        guard !relative.isEmpty else { throw Failure(.usage, "watch needs a path") }
        if let since = request.since, since < 0 { throw Failure(.usage, "--since must be 0 or more") }
        return fileSystem!.openEvents(paths: relative, since: request.since)
    }

    private func stored<T>(_ body: () throws(StoreError) -> T) throws(Failure) -> T {
        do { return try body() } catch { throw Failure(.store, "\(error)") }
    }

    /// The request's absolute path and the same path relative to the mount root ("" for the root).
    private func paths(_ request: ControlRequest) throws(Failure) -> (String, String) {
        guard let mountpoint, fileSystem != nil else {
            throw Failure(.notHypernetPath, "this node serves without a mount (hypernet serve)")
        }
        guard let path = request.path, path.hasPrefix("/") else {
            throw Failure(.usage, "\(request.command.rawValue) needs an absolute path")
        }
        let trimmed = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        if trimmed == mountpoint { return (path, "") }
        let prefix = mountpoint == "/" ? "/" : mountpoint + "/"
        guard trimmed.hasPrefix(prefix) else { throw Failure(.notHypernetPath, "not a Hypernet path: \(path)") }
        return (path, String(trimmed.dropFirst(prefix.count)))
    }

    /// Names authors as `log` and `conflicts` show them: "me" for this identity, else a contact's name (read
    /// now: `contact add` changes the file without the daemon), else nil. A contact named "me" keeps its
    /// token, so that "me" is never ambiguous.
    private func authorNames() -> @Sendable (String) -> String? {
        let own = "\(keyring.identityToken)"
        var named: [String: String] = [:]
        do {
            for contact in try Contacts.load(home).list where contact.name != "me" {
                named["\(contact.identity)"] = contact.name
            }
        } catch {
            logger.warning("cannot read the contacts; authors shown by identity", metadata: ["error": "\(error)"])
        }
        return { [named] author in author == own ? "me" : named[author] }
    }

    private func history(_ absolute: String, _ relative: String) throws(Failure) -> [HistoryEntry] {
        try vfs(absolute) { () throws(VFSError) in try fileSystem!.history(path: relative) }
    }

    /// The one revision of `entries` whose id starts with `prefix`.
    private func resolve(_ prefix: String, in entries: [HistoryEntry], path: String) throws(Failure) -> String {
        let wanted = prefix.lowercased()
        guard !wanted.isEmpty else { throw Failure(.unknownRevision, "empty revision for \(path)") }
        let matches = Set(entries.map(\.revision).filter { $0.hasPrefix(wanted) })
        guard let match = matches.first else {
            throw Failure(.unknownRevision, "unknown revision \(prefix) of \(path) (see: hypernet log \(path))")
        }
        guard matches.count == 1 else {
            throw Failure(.unknownRevision, "ambiguous revision \(prefix) of \(path): \(matches.count) revisions match")
        }
        // Its content is what `cat` and `restore` want.
        if entries.contains(where: { $0.revision == match && $0.isReleased }) {
            throw Failure(
                .failure, "revision \(match.prefix(12)) of \(path): its content was released by the retention policy")
        }
        return match
    }

    private func vfs<T>(_ path: String, _ body: () throws(VFSError) -> T) throws(Failure) -> T {
        do {
            return try body()
        } catch {
            switch error.errno {
            case ENOENT: throw Failure(.failure, "no such file or directory: \(path)")
            case EIO: throw Failure(.store, "\(path): input/output error (see \(home.logPath))")
            default: throw Failure(.failure, "\(path): \(error)")
            }
        }
    }
}

/// Checks for the peer and pin commands, shared by the daemon and the CLI (which writes the store itself
/// when no daemon runs).
public enum PeerCommands {
    public static func validAddress(_ value: String?) throws(Failure) -> String {
        guard let value, let colon = value.lastIndex(of: ":"), colon != value.startIndex,
            let port = Int(value[value.index(after: colon)...]), (1...65535).contains(port)
        else { throw Failure(.usage, "not a HOST:PORT address: \(value ?? "")") }
        return value
    }

    public static func unknownPeer(_ address: String) -> Failure {
        Failure(.failure, "not in the peer table: \(address)")
    }

    public static func validPin(_ value: String?) throws(Failure) -> String {
        guard let value, value == "*" || IdentityToken(value) != nil else {
            throw Failure(.usage, "not an identity token or '*': \(value ?? "")")
        }
        return value
    }

    /// A pin's content mode: `all` when not given.
    public static func validContent(_ value: String?) throws(Failure) -> ContentMode {
        guard let value else { return .all }
        guard let mode = ContentMode(rawValue: value) else {
            throw Failure(.usage, "--content must be all or on-demand, not \(value.debugDescription)")
        }
        return mode
    }
}

/// A query's events, handed from the sync node's threads to the control connection's thread that writes them.
final class QueryEvents: Sendable {
    private let events = Mutex<[QueryEvent]>([])
    private let arrived = DispatchSemaphore(value: 0)

    func append(_ event: QueryEvent) {
        events.withLock { $0.append(event) }
        arrived.signal()
    }

    /// The next event, or nil after 250 ms without one (to look whether the requester went away).
    func next() -> QueryEvent? {
        guard arrived.wait(timeout: .now() + .milliseconds(250)) == .success else { return nil }
        return events.withLock { $0.removeFirst() }
    }
}
