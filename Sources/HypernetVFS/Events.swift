import Dispatch
import FoundationEssentials
import Glibc
import HypernetCrypto
import HypernetModel
import HypernetStore
import Synchronization

/// One line of the event stream (`hypernet watch`, `/.hypernet/events`; docs/events.md).
public struct RevisionEvent: Sendable, Codable, Equatable {
    public var event = "revision"
    /// Where the document is in the tree ("/" the root, "/a/b.txt"); nil for a document that has no
    /// path any more (deleted before this node ever showed it).
    public var path: String?
    public var rev: String
    public var author: String
    /// HLC wall time, ISO-8601 UTC.
    public var time: String
    /// Position in this node's log (all trees): `hypernet watch --since SEQ` resumes after it.
    public var seq: Int64
    public var document: String
    public var kind: String
    public var size: UInt64
    public var parents: [String]
    /// The document has more than one head once this revision is stored (a file in conflict).
    public var conflict: Bool
}

/// One reader of the event stream: its own buffer of JSON lines, so a slow or absent reader never delays
/// another or the filesystem. A reader that falls more than `bufferLimit` bytes behind loses the oldest
/// lines and is told so by a `{"event":"overflow","lost":N}` line (resume with `--since`).
public final class EventReader: Sendable {
    public typealias Delivery = @Sendable ([UInt8]?) -> Void
    static let bufferLimit = 8 << 20

    struct Pending {
        var token: UInt
        var maximum: Int
        var deliver: Delivery
    }

    struct State {
        var buffer: [UInt8] = []
        var lost = 0
        /// Reads waiting for bytes, oldest first (two processes may read one open file at once).
        var pending: [Pending] = []
        var closed = false
        var nextToken: UInt = 1 << 63
    }

    /// Whether this reader gets an event, given who may see its document (nil: nobody knows, it is not in the tree).
    let accepts: @Sendable (RevisionEvent, Visibility?) -> Bool
    private let state = Mutex(State())
    private let onClose: @Sendable (EventReader) -> Void

    init(
        accepts: @escaping @Sendable (RevisionEvent, Visibility?) -> Bool,
        onClose: @escaping @Sendable (EventReader) -> Void
    ) {
        self.accepts = accepts
        self.onClose = onClose
    }

    /// A reader its owner feeds with `append` (another stream of lines: `hypernet search --watch`).
    public convenience init(onClose: @escaping @Sendable (EventReader) -> Void) {
        self.init(accepts: { _, _ in true }, onClose: onClose)
    }

    /// Delivers up to `maximum` bytes (whole lines when they fit) as soon as there are any, possibly at once
    /// on the calling thread; nil when the read is cancelled or the reader closed. `token` names the read for
    /// `cancelRead` (the FUSE request's address; below 2^63).
    public func read(maximum: Int, token: UInt, _ deliver: @escaping Delivery) {
        let ready: [UInt8]?? = state.withLock { s in
            if s.closed { return .some(nil) }
            if s.pending.isEmpty, let bytes = Self.take(&s, maximum: maximum) { return .some(bytes) }
            s.pending.append(Pending(token: token, maximum: maximum, deliver: deliver))
            return .none
        }
        if let ready { deliver(ready) }
    }

    /// Waits up to `timeout` for bytes; nil if none came (or the reader is closed).
    public func read(maximum: Int, timeout: Duration) -> [UInt8]? {
        let done = DispatchSemaphore(value: 0)
        let result = Mutex<[UInt8]?>(nil)
        let token = state.withLock { s in
            defer { s.nextToken += 1 }
            return s.nextToken
        }
        read(maximum: maximum, token: token) { bytes in
            result.withLock { $0 = bytes }
            done.signal()
        }
        let nanoseconds =
            Int(timeout.components.seconds) * 1_000_000_000 + Int(timeout.components.attoseconds / 1_000_000_000)
        if done.wait(timeout: .now() + .nanoseconds(nanoseconds)) == .timedOut {
            if cancelRead(token: token) { return nil }
            // Delivered meanwhile: the delivery has run or is about to.
            done.wait()
        }
        return result.withLock { $0 }
    }

    /// Ends the waiting read `token` with nil (an interrupted `read(2)`); false if it is not waiting.
    @discardableResult
    public func cancelRead(token: UInt) -> Bool {
        let cancelled = state.withLock { s -> Pending? in
            guard let i = s.pending.firstIndex(where: { $0.token == token }) else { return nil }
            return s.pending.remove(at: i)
        }
        cancelled?.deliver(nil)
        return cancelled != nil
    }

    public func close() {
        let pending = state.withLock { s in
            s.closed = true
            s.buffer = []
            defer { s.pending = [] }
            return s.pending
        }
        for p in pending { p.deliver(nil) }
        onClose(self)
    }

    public func append(_ line: [UInt8]) {
        let delivery: (Delivery, [UInt8])? = state.withLock { s in
            guard !s.closed else { return nil }
            if s.buffer.count + line.count > Self.bufferLimit {
                s.lost += 1
            } else {
                s.buffer.append(contentsOf: line)
            }
            guard let pending = s.pending.first, let bytes = Self.take(&s, maximum: pending.maximum) else { return nil }
            s.pending.removeFirst()
            return (pending.deliver, bytes)
        }
        if let (deliver, bytes) = delivery { deliver(bytes) }
    }

    /// Appends `line` once fewer than `limit` bytes wait to be read, for a producer that must lose nothing (`cat`):
    /// it goes at the reader's pace. False once the reader is closed (the client hung up): the producer stops.
    public func append(waitingBelow limit: Int, _ line: [UInt8]) -> Bool {
        while true {
            guard let room = state.withLock({ s -> Bool? in s.closed ? nil : s.buffer.count < limit }) else {
                return false
            }
            if room {
                append(line)
                return true
            }
            usleep(2_000)
        }
    }

    /// The next bytes to hand out: whole lines up to `maximum` (a longer line in pieces), lost lines announced first.
    private static func take(_ s: inout State, maximum: Int) -> [UInt8]? {
        if s.lost > 0 {
            let notice = Array("{\"event\":\"overflow\",\"lost\":\(s.lost)}\n".utf8)
            if notice.count <= maximum {
                s.lost = 0
                return notice
            }
        }
        guard !s.buffer.isEmpty, maximum > 0 else { return nil }
        var end = min(maximum, s.buffer.count)
        if end < s.buffer.count, let newline = s.buffer[..<end].lastIndex(of: UInt8(ascii: "\n")) { end = newline + 1 }
        defer { s.buffer.removeFirst(end) }
        return Array(s.buffer[..<end])
    }
}

/// Turns this node's log into events for the readers: the revisions of its identity's tree, and those of other
/// identities' trees it holds that this identity can read (a revision whose metadata does not open with a key it
/// holds is no event: not even its document's existence is told), under `/@NAME/`. Revisions are published in log
/// order, each once, after they show in the tree; a revision whose document has no path yet (its directory's listing has not
/// arrived) waits for it, then goes out with its last known path or none: after `pathWait` once the log has
/// had no new entry for `quietPeriod` (the listing comes later in the same log, behind a backlog that may take
/// longer than `pathWait` to store), and after `pathWaitLimit` in any case.
final class EventHub: Sendable {
    static let pathWait: Duration = .seconds(2)
    static let quietPeriod: Duration = .milliseconds(500)
    static let pathWaitLimit: Duration = .seconds(30)
    static let pageSize = 512
    /// Paths of documents seen, for their deletions (a tombstone's document has no path any more).
    static let knownPathLimit = 100_000

    struct Waiting {
        var event: RevisionEvent
        var document: DocumentID
        /// The document's node, for the identity's own tree; nil until its row exists.
        var inode: UInt64?
        /// Another identity's tree, where the path comes from `/@NAME/`'s listings instead.
        var foreignTree: SigningPublicKey?
        var since: ContinuousClock.Instant
    }

    struct State {
        var readers: [ObjectIdentifier: EventReader] = [:]
        /// The last log entry published; nil until the first publish.
        var cursor: Int64?
        var waiting: [Waiting] = []
        /// When the log last had new entries to publish.
        var lastEntries: ContinuousClock.Instant = .now
        /// By document id (hex), with who could see the document there.
        var knownPaths: [String: (path: String, visibility: Visibility)] = [:]
    }

    let state = Mutex(State())
    /// Publishing runs here, so lines leave in log order and never on a filesystem or replication thread.
    let queue = DispatchQueue(label: "hypernet.events")
}

extension VirtualFileSystem {
    /// A reader of every event from now on (`/.hypernet/events` opened by `caller`).
    func openEvents(for caller: Caller) -> EventReader {
        openEvents(paths: [""], since: nil, caller: caller)
    }

    /// A reader of the events of `paths` (relative to the mount root, "" for everything, a directory for all
    /// below it), from now on, or first those after log position `since` that are already stored. With a `caller`
    /// (a local user reading the mount), only the events of documents it could read where they are (search
    /// permission on every directory above, read permission on the document); without one (the control socket,
    /// which only the store's owner can open), all.
    public func openEvents(paths: [String], since: Int64?, caller: Caller? = nil) -> EventReader {
        let prefixes = paths.map { $0.isEmpty ? "/" : "/" + $0 }
        let hub = events
        let reader = EventReader(
            accepts: { event, visibility in
                if let caller, !(visibility?.allows(caller, read: true) ?? caller.ownsStore) { return false }
                guard let path = event.path else { return prefixes.contains("/") }
                return prefixes.contains { $0 == "/" || path == $0 || path.hasPrefix($0 + "/") }
            },
            onClose: { reader in _ = hub.state.withLock { $0.readers.removeValue(forKey: ObjectIdentifier(reader)) } })
        hub.queue.sync {
            startEvents()
            if let since { replayEvents(after: since, to: reader) }
            hub.state.withLock { $0.readers[ObjectIdentifier(reader)] = reader }
        }
        return reader
    }

    /// New revisions are in the store (made here, or received and shown): publish them.
    public func publishEvents() {
        events.queue.async { [self] in publishPending() }
    }

    private var ownTree: SigningPublicKey { store.keyring.identity.publicKey }

    /// Sets the cursor on first use: the stream starts at the present, not at the beginning of the log.
    private func startEvents() {
        guard events.state.withLock({ $0.cursor }) == nil else { return }
        let last: Int64
        do { last = try store.lastRevisionSeq() } catch {
            logger.error("events: cannot read the log position: \(error)")
            last = 0
        }
        events.state.withLock { $0.cursor = last }
    }

    private func publishPending() {
        let hub = events
        let idle = hub.state.withLock { s in
            // Nobody listens: no work per revision; the next reader starts from the present (`startEvents`).
            guard s.readers.isEmpty && s.waiting.isEmpty else { return false }
            s.cursor = nil
            return true
        }
        if idle { return }
        while true {
            let cursor = hub.state.withLock { $0.cursor ?? 0 }
            let entries: [StoredRevision]
            do { entries = try store.storedRevisions(after: cursor, limit: EventHub.pageSize) } catch {
                logger.error("events: cannot read the log: \(error)")
                return
            }
            let made = entries.compactMap(event(for:))
            hub.state.withLock { s in
                s.cursor = entries.last?.seq ?? cursor
                if !entries.isEmpty { s.lastEntries = .now }
                s.waiting.append(contentsOf: made)
            }
            if entries.count < EventHub.pageSize { break }
        }
        deliver(takeResolved(), to: hub.state.withLock { Array($0.readers.values) })
        // Revisions waiting for their path are retried, if nothing else comes first.
        if hub.state.withLock({ !$0.waiting.isEmpty }) {
            hub.queue.asyncAfter(deadline: .now() + .milliseconds(200)) { [self] in publishPending() }
        }
    }

    /// Events (from the front of the waiting list) whose path is known or whose wait is over, keeping the
    /// order of each document's revisions: one still waiting holds back the later ones of its document.
    private func takeResolved() -> [(RevisionEvent, Visibility?)] {
        let (taken, lastEntries) = events.state.withLock { s in
            defer { s.waiting = [] }
            return (s.waiting, s.lastEntries)
        }
        var waiting = taken
        let now = ContinuousClock.now
        func waitedEnough(_ w: EventHub.Waiting) -> Bool {
            now - w.since >= EventHub.pathWaitLimit
                || (now - w.since >= EventHub.pathWait && now - lastEntries >= EventHub.quietPeriod)
        }
        var ready: [(event: RevisionEvent, visibility: Visibility?)] = []
        var held = Set<String>()
        var keep: [EventHub.Waiting] = []
        // A document received before its directory's listing has no row yet: look again.
        for i in waiting.indices where waiting[i].inode == nil && waiting[i].foreignTree == nil {
            waiting[i].inode = try? store.document(waiting[i].document)?.inode
        }
        var locations = state.withLock { s in waiting.map { w in w.inode.flatMap { Self.location(of: $0, in: s) } } }
        for i in waiting.indices {
            if let tree = waiting[i].foreignTree { locations[i] = foreignLocation(of: waiting[i].document, in: tree) }
        }
        for (i, w) in waiting.enumerated() {
            var event = w.event
            let document = event.document
            if !held.contains(document), let location = locations[i] {
                event.path = location.path
                ready.append((event, location.visibility))
            } else if !held.contains(document), waitedEnough(w) {
                ready.append((event, nil))
            } else {
                held.insert(document)
                keep.append(w)
            }
        }
        waiting = keep
        events.state.withLock { s in
            s.waiting = waiting + s.waiting
            for i in ready.indices {
                // Deletions: the document's last known path, and who could see it there.
                guard let path = ready[i].event.path, let visibility = ready[i].visibility else {
                    let known = s.knownPaths[ready[i].event.document]
                    (ready[i].event.path, ready[i].visibility) = (known?.path, known?.visibility)
                    continue
                }
                if s.knownPaths.count >= EventHub.knownPathLimit { s.knownPaths.removeAll(keepingCapacity: true) }
                s.knownPaths[ready[i].event.document] = (path, visibility)
            }
        }
        return ready.map { ($0.event, $0.visibility) }
    }

    /// The path of a node shown in the tree, walking up to the root, and who may see it there; nil if a parent is
    /// not linked. The node itself may be unlinked (just deleted: its tombstone's path is where it was).
    static func location(of inode: UInt64, in s: State) -> (path: String, visibility: Visibility)? {
        guard let node = s.nodes[inode] else { return nil }
        var parts: [String] = []
        var directories: [Permission] = []
        var current = inode
        while current != rootInode {
            guard let node = s.nodes[current], node.linked || current == inode else { return nil }
            parts.append(node.name)
            current = node.parent
            guard let parent = s.nodes[current] else { return nil }
            directories.append(Permission(parent.record.metadata))
        }
        let visibility = Visibility(directories: directories.reversed(), document: Permission(node.record.metadata))
        return ("/" + parts.reversed().joined(separator: "/"), visibility)
    }

    /// Sends `reader` the events of log entries after `since` that were published already (up to the cursor;
    /// those still waiting for a path reach it live).
    private func replayEvents(after since: Int64, to reader: EventReader) {
        let (cursor, waiting) = events.state.withLock { s in (s.cursor ?? 0, Set(s.waiting.map(\.event.seq))) }
        var position = since
        while position < cursor {
            let entries: [StoredRevision]
            do { entries = try store.storedRevisions(after: position, limit: EventHub.pageSize) } catch {
                logger.error("events: cannot read the log: \(error)")
                return
            }
            let replayed = entries.filter { $0.seq <= cursor && !waiting.contains($0.seq) }.compactMap(event(for:))
            var locations = state.withLock { s in replayed.map { $0.inode.flatMap { Self.location(of: $0, in: s) } } }
            for i in replayed.indices {
                guard let tree = replayed[i].foreignTree else { continue }
                locations[i] = foreignLocation(of: replayed[i].document, in: tree)
            }
            let known = events.state.withLock { s in
                zip(replayed, locations).map { made, location in location ?? s.knownPaths[made.event.document] }
            }
            let resolved = zip(replayed, known).map { made, location in
                var e = made.event
                e.path = location?.path
                return (e, location?.visibility)
            }
            deliver(resolved, to: [reader])
            guard let last = entries.last?.seq, entries.count == EventHub.pageSize else { return }
            position = last
        }
    }

    private func deliver(_ list: [(RevisionEvent, Visibility?)], to readers: [EventReader]) {
        guard !readers.isEmpty else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        for (event, visibility) in list {
            guard let data = try? encoder.encode(event) else { continue }
            let line = Array(data) + [UInt8(ascii: "\n")]
            for reader in readers where reader.accepts(event, visibility) { reader.append(line) }
        }
    }

    /// The event for one stored revision (its path filled in later), with what to find the path from; nil for a
    /// revision this identity cannot read.
    private func event(for entry: StoredRevision) -> EventHub.Waiting? {
        let foreign = entry.tree != ownTree
        do {
            let (r, metadata) = try store.revision(entry.id)
            let heads = try store.heads(of: r.document)
            let event = RevisionEvent(
                path: nil, rev: entry.id.hex, author: store.authorName(r.author),
                time: ISO8601.format(milliseconds: r.time.milliseconds), seq: entry.seq,
                document: r.document.description,
                kind: "\(r.kind)", size: r.kind == .symlink ? UInt64(metadata.symlinkTarget.count) : metadata.size,
                parents: r.parents.map(\.hex), conflict: r.kind != .directory && heads.count > 1)
            let inode = foreign ? nil : try store.document(r.document)?.inode
            return EventHub.Waiting(
                event: event, document: r.document, inode: inode, foreignTree: foreign ? entry.tree : nil, since: .now)
        } catch {
            // Another identity's document this one has no key for: no event at all.
            if foreign, case .rights = error { return nil }
            logger.error("events: a logged revision does not open: \(error)", metadata: ["seq": "\(entry.seq)"])
            return nil
        }
    }
}
