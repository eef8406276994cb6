import HypernetCrypto
import HypernetModel
import Logging
import Synchronization

/// What a serving node holds of a query's target, as `QueryServer` sees it: the store in the daemon, a double in
/// unit tests.
protocol QueryHost: Sendable {
    /// The target's revision, if held here and a revision of that document in that tree, with the permission
    /// blocks of its chain from the revision's epoch on (empty when it has no chain).
    func held(_ target: Query.Target) -> (revision: Revision, blocks: [PermissionBlock])?
    /// Whether this node holds the key that opens `revision`'s content in `tree`.
    func canOpen(_ revision: Revision, tree: SigningPublicKey) -> Bool
    /// Runs `query`'s operator over the target's content from byte `target.after`; nil when it cannot be read.
    func scan(_ query: Query, _ target: Query.Target) -> (any QueryScan)?
    /// The blocks of `revision`'s blind index holding every trapdoor, from block `target.after`; nil without one.
    func blindScan(_ revision: Revision, _ target: Query.Target, trapdoors: [UInt32]) -> (any QueryScan)?
}

/// One target's scan, pulled by the server as credit allows, so nothing is read ahead of what may be sent.
public protocol QueryScan: AnyObject {
    /// The next results, items of at most `maximumBytes` in all counting `Item.overhead` bytes each besides their
    /// bytes (one item alone may be larger), and the offset of the content they cover up to; nil when the content is
    /// exhausted (then `end` is where it ended). An empty list with a new cursor is progress through content without results.
    func next(maximumBytes: Int) -> (items: [QueryResult.Item], cursor: Int64)?
    var end: Int64 { get }
    /// The content could not be read to its end: the target is answered `unavailable` after the results sent, and
    /// the requester resumes it elsewhere from their cursor.
    var failed: Bool { get }
}

/// Who may have a query answered for a revision: the tree's owner when the revision has no permission chain, else
/// a reader of the block of its epoch, or of a later block that passes the earlier keys on (docs/security.md,
/// "Rights"; a member added later reads what was written before). Public blocks: anyone.
enum QueryAccess {
    static func mayRead(
        _ requester: SigningPublicKey, tree: SigningPublicKey, revision: Revision, blocks: [PermissionBlock]
    ) -> Bool {
        guard revision.rights != nil else { return requester == tree }
        guard blocks.first?.epoch == revision.epoch else { return false }
        for (i, block) in blocks.enumerated() {
            // A block after the revision's epoch passes its keys on only if it and every one between seal them.
            if i > 0, block.sealedPreviousKey?.isEmpty ?? true { return false }
            if block.isPublic || block.roles(of: requester).contains(.read) { return true }
        }
        return false
    }
}

/// Serves queries from peers (docs/protocol.md, "Queries"): checks each query (signature, origin, age, limits),
/// answers each target it may (the requester's read right, this node's key) and says `unavailable` for the rest,
/// streams the results within the requester's credit window, and stops on `cancel` or when the link ends.
/// Scans run through `run` (a queue in the daemon; inline in tests), one at a time per query.
final class QueryServer: Sendable {
    static let maximumRunning = 16
    static let minimumWindow: UInt32 = 64 << 10
    static let maximumWindow: UInt32 = 16 << 20
    /// How far a query's `issued` time may be from this node's clock (milliseconds).
    static let maximumSkew: Int64 = 5 * 60 * 1000
    /// The result bytes a server puts in one `result` (unless one item alone is larger).
    static let resultBytes = 64 << 10

    private struct Key: Hashable {
        let link: ObjectIdentifier
        let id: UInt64
    }

    /// One running query. `scan` and `next` are only touched by the one pump that owns the query (`pumping`);
    /// the counters only under the server's lock.
    private final class Running: @unchecked Sendable {
        let query: Query
        let link: any PeerLink
        var next = 0
        var scan: (any QueryScan)?
        var lines: UInt32 = 0
        var pending: QueryResult?
        var sent: UInt64 = 0
        var received: UInt64 = 0
        var pumping = true
        var cancelled = false

        init(query: Query, link: any PeerLink) {
            self.query = query
            self.link = link
        }
    }

    private let host: any QueryHost
    private let now: @Sendable () -> Int64
    private let run: @Sendable (@escaping @Sendable () -> Void) -> Void
    private let logger: Logger
    private let running = Mutex<[Key: Running]>([:])

    /// `now`: Unix milliseconds.
    init(
        host: any QueryHost, now: @escaping @Sendable () -> Int64,
        run: @escaping @Sendable (@escaping @Sendable () -> Void) -> Void,
        logger: Logger = Logger(label: "hypernet.query")
    ) {
        self.host = host
        self.now = now
        self.run = run
        self.logger = logger
    }

    /// The queries running, for all links.
    var count: Int { running.withLock { $0.count } }

    func received(_ query: Query, from link: any PeerLink) {
        if let reason = refusal(query, from: link) { return link.send(.result(.refusal(query.id, reason))) }
        let key = Key(link: ObjectIdentifier(link), id: query.id)
        let entry = Running(query: query, link: link)
        let started = running.withLock { r -> String? in
            guard r[key] == nil else { return "query \(query.id) is already running" }
            guard r.keys.count(where: { $0.link == key.link }) < Self.maximumRunning else {
                return "more than \(Self.maximumRunning) queries running"
            }
            r[key] = entry
            return nil
        }
        if let started { return link.send(.result(.refusal(query.id, started))) }
        run { [self] in pump(key, entry) }
    }

    private func refusal(_ query: Query, from link: any PeerLink) -> String? {
        guard query.isValid else { return "the query's signature is not its requester's" }
        guard query.origin == link.node else { return "the query was signed for another node to send" }
        let now = now()
        guard (now - Self.maximumSkew...now + Self.maximumSkew).contains(query.issued) else {
            return "the query is older than 5 minutes, or dated ahead"
        }
        guard (Self.minimumWindow...Self.maximumWindow).contains(query.window) else {
            return "window \(query.window) outside \(Self.minimumWindow)...\(Self.maximumWindow)"
        }
        return nil
    }

    /// The requester has taken `received` result bytes of query `id` in all.
    func credit(id: UInt64, received: UInt64, from link: any PeerLink) {
        let key = Key(link: ObjectIdentifier(link), id: id)
        let resume = running.withLock { r -> Running? in
            guard let entry = r[key] else { return nil }
            entry.received = max(entry.received, min(received, entry.sent))
            guard !entry.pumping else { return nil }
            entry.pumping = true
            return entry
        }
        if let resume { run { [self] in pump(key, resume) } }
    }

    func cancel(id: UInt64, from link: any PeerLink) {
        stop([Key(link: ObjectIdentifier(link), id: id)], "cancelled")
    }

    func linkEnded(_ link: any PeerLink) {
        stop(running.withLock { $0.keys.filter { $0.link == ObjectIdentifier(link) } }, "the requester's link ended")
    }

    /// Stops queries before their end: their pumps read nothing more. Logged, so that a requester's Ctrl-C shows here.
    private func stop(_ keys: [Key], _ why: String) {
        let stopped = running.withLock { r in
            keys.compactMap { key -> (query: Query, sent: UInt64)? in
                guard let entry = r.removeValue(forKey: key) else { return nil }
                entry.cancelled = true
                return (entry.query, entry.sent)
            }
        }
        for (query, sent) in stopped {
            logger.info(
                "query stopped: \(why)", metadata: ["query": "\(query.id)", "op": "\(query.op)", "sent": "\(sent)"])
        }
    }

    /// Sends what the window allows, producing each result only when the one before went out; returns when the
    /// window is full (a `credit` resumes it), the query is finished, cancelled, or its link ended.
    private func pump(_ key: Key, _ entry: Running) {
        while true {
            let result = entry.pending ?? produce(entry)
            entry.pending = result
            let sendable = running.withLock { r -> Bool in
                guard let result, !entry.cancelled, !entry.link.isEnded else {
                    r.removeValue(forKey: key)
                    return false
                }
                // Only `data` results count: the requester credits what its consumer takes, and a `done` or an
                // `unavailable` (one per target, so bounded by the query) gives it nothing to take.
                let size = result.status == .data ? UInt64(result.byteCount) : 0
                // One result larger than the window goes out alone, when nothing else is unacknowledged.
                guard entry.sent - entry.received + size <= entry.query.window || entry.sent == entry.received else {
                    entry.pumping = false
                    return false
                }
                entry.sent += size
                return true
            }
            guard sendable, let result else { return }
            entry.pending = nil
            entry.link.send(.result(result))
        }
    }

    /// The target's scan: a blind query needs its index, not the key that opens it ("Blind queries").
    private func open(_ query: Query, _ target: Query.Target, _ revision: Revision) -> (any QueryScan)? {
        if let trapdoors = query.trapdoors { return host.blindScan(revision, target, trapdoors: trapdoors) }
        return host.canOpen(revision, tree: target.tree) ? host.scan(query, target) : nil
    }

    /// The next result of `entry`: from its open scan, else the next target's first; nil when all are answered.
    private func produce(_ entry: Running) -> QueryResult? {
        let query = entry.query
        while entry.next < query.targets.count {
            let index = UInt32(entry.next)
            if entry.scan == nil {
                let target = query.targets[entry.next]
                guard let held = host.held(target),
                    QueryAccess.mayRead(
                        query.requester, tree: target.tree, revision: held.revision, blocks: held.blocks),
                    let scan = open(query, target, held.revision)
                else {
                    entry.next += 1
                    return QueryResult(id: query.id, status: .unavailable, index: index)
                }
                entry.scan = scan
                entry.lines = 0
            }
            let scan = entry.scan!
            let budget = query.op != .tail && query.limit > 0 ? query.limit - entry.lines : UInt32.max
            let room = min(Self.resultBytes, Int(query.window)) - QueryResult.headerByteCount
            if budget > 0, var piece = scan.next(maximumBytes: room) {
                if piece.items.count > budget { piece.items.removeLast(piece.items.count - Int(budget)) }
                entry.lines += UInt32(piece.items.count)
                guard piece.items.isEmpty else {
                    return QueryResult(
                        id: query.id, status: .data, index: index, cursor: piece.cursor, items: piece.items)
                }
                continue
            }
            entry.scan = nil
            entry.next += 1
            guard !scan.failed else { return QueryResult(id: query.id, status: .unavailable, index: index) }
            return QueryResult(id: query.id, status: .done, index: index, cursor: scan.end)
        }
        return nil
    }
}
