import HypernetCrypto
import HypernetModel
import Synchronization

/// What a running query reports to whoever started it, through its sink; in order for each target.
public enum QueryEvent: Sendable, Equatable {
    /// Results of target `target`; hand `credit` back to `QueryClient.consumed` once they are taken.
    case items(target: Int, [QueryResult.Item], credit: QueryCredit)
    /// Target `target` is answered in full; the answer covered its content up to byte `cursor`.
    case done(target: Int, cursor: Int64)
    /// No connected peer answered for target `target` (none holds it, may read it for the requester, or can open it).
    case unavailable(target: Int)
    /// A peer refused the query (the targets it had go elsewhere): the reason, for a log line.
    case refused(String)
    /// Every target is done or unavailable; nothing follows.
    case finished
}

/// Result bytes taken from one peer's part of a query.
public struct QueryCredit: Sendable, Equatable {
    fileprivate let part: UInt64
    fileprivate let bytes: UInt64
}

/// Runs queries on the peers that hold their documents (docs/protocol.md, "Queries"). Each target goes to exactly one
/// peer at a time, the one with the fewest targets outstanding (then the lowest `cost`, e.g. RTT); when it says
/// `unavailable` or refuses, the target goes to the next holder; when its link ends, each of its unfinished targets
/// goes to another holder from the offset its last results covered, so no result is lost or repeated. Results are
/// credited as the sink's consumer takes them, so a slow consumer holds the peers back.
public final class QueryClient: Sendable {
    public struct Request: Sendable {
        public var op: Query.Operator
        public var flags: Query.Flags
        public var pattern: String
        public var limit: UInt32
        /// A blind query's trapdoors (docs/protocol.md, "Blind queries"): then `after` and cursors count blocks.
        public var trapdoors: [UInt32]?

        public init(op: Query.Operator, flags: Query.Flags, pattern: String, limit: UInt32 = 0) {
            self.op = op
            self.flags = flags
            self.pattern = pattern
            self.limit = limit
        }

        /// A blind query for the blocks holding every one of `trapdoors`.
        public init(trapdoors: [UInt32]) {
            self.init(op: .grep, flags: [], pattern: "")
            self.trapdoors = trapdoors
        }
    }

    private struct TargetState {
        var target: Query.Target
        var holders: [any PeerLink]
        var tried: Set<ObjectIdentifier> = []
        var part: UInt64?
        var finished = false
    }

    private struct Run {
        let request: Request
        let sink: @Sendable (QueryEvent) -> Void
        var targets: [TargetState]
        var unfinished: Int
    }

    /// One query message sent to one peer: the run it belongs to and which of the run's targets it lists.
    private struct Part {
        let run: UInt64
        let link: any PeerLink
        let targets: [Int]
        /// Result bytes taken from this peer for it, in all (what `credit` says).
        var taken: UInt64 = 0
    }

    private struct State {
        var nextID: UInt64 = 1
        var runs: [UInt64: Run] = [:]
        var parts: [UInt64: Part] = [:]
    }

    private let identity: SigningKeyPair
    private let node: SigningPublicKey
    private let window: UInt32
    private let now: @Sendable () -> Int64
    private let cost: @Sendable (any PeerLink) -> Double
    private let state = Mutex(State())

    /// `node`: this node's key (the queries' origin); `now`: Unix milliseconds.
    init(
        identity: SigningKeyPair, node: SigningPublicKey, window: UInt32 = 1 << 20,
        now: @escaping @Sendable () -> Int64, cost: @escaping @Sendable (any PeerLink) -> Double = { _ in 0 }
    ) {
        self.identity = identity
        self.node = node
        self.window = window
        self.now = now
        self.cost = cost
    }

    /// Starts a query of `targets`, `holders[i]` being the links that may hold `targets[i]`; returns its handle.
    @discardableResult
    func start(
        _ request: Request, targets: [Query.Target], holders: [[any PeerLink]],
        sink: @escaping @Sendable (QueryEvent) -> Void
    ) -> UInt64 {
        precondition(targets.count == holders.count)
        let (run, sends, events) = state.withLock { s in
            let run = s.nextID
            s.nextID += 1
            s.runs[run] = Run(
                request: request, sink: sink,
                targets: zip(targets, holders).map { TargetState(target: $0, holders: $1) }, unfinished: targets.count)
            var sends: [(any PeerLink, Message)] = []
            var events: [QueryEvent] = []
            assign(Array(targets.indices), of: run, &s, &sends, &events)
            return (run, sends, events)
        }
        deliver(sends, events, sink)
        return run
    }

    /// The consumer took results: the peer may send that many bytes more.
    func consumed(_ credit: QueryCredit) {
        let send = state.withLock { s -> (any PeerLink, Message)? in
            guard var part = s.parts[credit.part] else { return nil }
            part.taken += credit.bytes
            s.parts[credit.part] = part
            return (part.link, .credit(id: credit.part, received: part.taken))
        }
        if let (link, message) = send { link.send(message) }
    }

    /// Stops a query: its peers are told to stop; nothing more is reported.
    func cancel(_ run: UInt64) {
        let sends = state.withLock { s -> [(any PeerLink, Message)] in
            s.runs[run] = nil
            let parts = s.parts.filter { $0.value.run == run }
            for id in parts.keys { s.parts[id] = nil }
            return parts.map { ($0.value.link, .cancel(id: $0.key)) }
        }
        for (link, message) in sends { link.send(message) }
    }

    func received(_ result: QueryResult, from link: any PeerLink) {
        var sink: (@Sendable (QueryEvent) -> Void)?
        let (sends, events) = state.withLock { s -> ([(any PeerLink, Message)], [QueryEvent]) in
            var sends: [(any PeerLink, Message)] = []
            var events: [QueryEvent] = []
            guard let part = s.parts[result.id], part.link === link, let run = s.runs[part.run] else { return ([], []) }
            sink = run.sink
            if result.status == .refused {
                events.append(.refused(String(decoding: result.items.first?.bytes ?? [], as: UTF8.self)))
                s.parts[result.id] = nil
                let open = part.targets.filter { s.runs[part.run]!.targets[$0].part == result.id }
                for t in open { s.runs[part.run]!.targets[t].tried.insert(ObjectIdentifier(link)) }
                assign(open, of: part.run, &s, &sends, &events)
                return (sends, events)
            }
            guard Int(result.index) < part.targets.count else { return ([], []) }
            let t = part.targets[Int(result.index)]
            guard s.runs[part.run]!.targets[t].part == result.id else { return ([], []) }
            switch result.status {
            case .data:
                // Credit counts every result, even one repeating what an earlier peer sent.
                let credit = QueryCredit(part: result.id, bytes: UInt64(result.byteCount))
                if result.cursor > s.runs[part.run]!.targets[t].target.after {
                    s.runs[part.run]!.targets[t].target.after = result.cursor
                    events.append(.items(target: t, result.items, credit: credit))
                } else {
                    s.parts[result.id]!.taken += credit.bytes
                    sends.append((link, .credit(id: result.id, received: s.parts[result.id]!.taken)))
                }
            case .done:
                finish(t, of: part.run, .done(target: t, cursor: result.cursor), &s, &events)
            case .unavailable, .refused:
                s.runs[part.run]!.targets[t].tried.insert(ObjectIdentifier(link))
                assign([t], of: part.run, &s, &sends, &events)
            }
            if part.targets.allSatisfy({ s.runs[part.run]?.targets[$0].part != result.id }) { s.parts[result.id] = nil }
            return (sends, events)
        }
        if let sink { deliver(sends, events, sink) }
    }

    /// `link` ended: its unfinished targets go to other holders, from where their results stopped.
    func linkEnded(_ link: any PeerLink) {
        var work: [(sink: @Sendable (QueryEvent) -> Void, sends: [(any PeerLink, Message)], events: [QueryEvent])] = []
        state.withLock { s in
            for (id, part) in s.parts where part.link === link {
                s.parts[id] = nil
                guard let run = s.runs[part.run] else { continue }
                let open = part.targets.filter { run.targets[$0].part == id }
                for t in open { s.runs[part.run]!.targets[t].tried.insert(ObjectIdentifier(link)) }
                var sends: [(any PeerLink, Message)] = []
                var events: [QueryEvent] = []
                assign(open, of: part.run, &s, &sends, &events)
                work.append((run.sink, sends, events))
            }
        }
        for w in work { deliver(w.sends, w.events, w.sink) }
    }

    /// Targets outstanding at `link` over all runs.
    private func load(_ link: any PeerLink, _ s: State) -> Int {
        s.parts.values.reduce(0) { n, part in
            guard part.link === link, let run = s.runs[part.run] else { return n }
            return n + part.targets.count(where: { !run.targets[$0].finished && run.targets[$0].part != nil })
        }
    }

    /// Sends each of `targets` (indexes into run `run`) to the least loaded holder not yet tried, one query per peer;
    /// a target no holder is left for is unavailable.
    private func assign(
        _ targets: [Int], of run: UInt64, _ s: inout State, _ sends: inout [(any PeerLink, Message)],
        _ events: inout [QueryEvent]
    ) {
        guard let r = s.runs[run] else { return }
        var loads: [ObjectIdentifier: Int] = [:]
        var chosen: [ObjectIdentifier: (link: any PeerLink, targets: [Int])] = [:]
        for t in targets {
            let candidates = r.targets[t].holders.filter {
                $0.node != nil && !$0.isEnded && !r.targets[t].tried.contains(ObjectIdentifier($0))
            }
            for c in candidates where loads[ObjectIdentifier(c)] == nil { loads[ObjectIdentifier(c)] = load(c, s) }
            guard
                let link = candidates.min(by: {
                    (loads[ObjectIdentifier($0)]!, cost($0)) < (loads[ObjectIdentifier($1)]!, cost($1))
                })
            else {
                s.runs[run]!.targets[t].part = nil
                finish(t, of: run, .unavailable(target: t), &s, &events)
                continue
            }
            loads[ObjectIdentifier(link)]! += 1
            chosen[ObjectIdentifier(link), default: (link: link, targets: [])].targets.append(t)
        }
        // One query names at most `Query.maximumTargets` documents: a peer given more would refuse it.
        let parts = chosen.values.flatMap { link, list in
            stride(from: 0, to: list.count, by: Query.maximumTargets).map {
                (link: link, targets: Array(list[$0..<min($0 + Query.maximumTargets, list.count)]))
            }
        }
        for (link, list) in parts {
            let id = s.nextID
            s.nextID += 1
            s.parts[id] = Part(run: run, link: link, targets: list)
            for t in list { s.runs[run]!.targets[t].part = id }
            let query = Query.signed(
                by: identity, id: id, origin: node, issued: now(), op: r.request.op, flags: r.request.flags,
                pattern: r.request.pattern, window: window, limit: r.request.limit,
                targets: list.map { s.runs[run]!.targets[$0].target }, trapdoors: r.request.trapdoors)
            sends.append((link, .query(query)))
        }
    }

    private func finish(_ t: Int, of run: UInt64, _ event: QueryEvent, _ s: inout State, _ events: inout [QueryEvent]) {
        guard s.runs[run]?.targets[t].finished == false else { return }
        s.runs[run]!.targets[t].finished = true
        s.runs[run]!.unfinished -= 1
        events.append(event)
        if s.runs[run]!.unfinished == 0 {
            s.runs[run] = nil
            events.append(.finished)
        }
    }

    private func deliver(
        _ sends: [(any PeerLink, Message)], _ events: [QueryEvent], _ sink: @Sendable (QueryEvent) -> Void
    ) {
        for (link, message) in sends { link.send(message) }
        for e in events { sink(e) }
    }
}
