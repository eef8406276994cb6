import Dispatch
import Glibc
import HypernetModel
import HypernetStore
import Synchronization

/// Fetches chunks this node lacks from every connected peer at once (docs/protocol.md, "Multi-source fetch"): a
/// read of content held on demand, or a tree now held in full catching up. A `PiecePicker` chooses which peer is
/// asked for which chunk; the requests go through the shared `ChunkFetcher`, so concurrent reads of one chunk
/// wait for one fetch and every copy is checked against its id as it arrives. Each peer is told the fetch's ids
/// (`interest`) and asked only for what its have-set says it holds (`HaveSets`). When no peer holds what is left,
/// or a peer joins later, they are asked again after a pause, until every chunk arrived or the fetch timeout passed
/// (for a log run's chunks: until none arrived for a while, or the run's connection ended). While a read's requests
/// (or its `interest`) await an answer and the peers answer requests (its own or others', such as a readahead's
/// queued ahead of it), its timeout starts again, up to `ChunkFetcher.stallLimit`: a slow link delays a read, a
/// stalled one fails it.
final class DemandFetcher: Sendable {
    private let fetcher: ChunkFetcher
    private let haves: HaveSets
    private let timeout: DispatchTimeInterval
    private let window: Int
    private let reissueAfter: Double
    /// What fetches measured of each connected peer: the next fetch starts from there.
    private let meters = Mutex<[ObjectIdentifier: PeerMeter]>([:])
    /// The pause before asking the peers again when none may hold a chunk.
    static let retryPause: DispatchTimeInterval = .milliseconds(250)

    init(
        fetcher: ChunkFetcher, haves: HaveSets, timeout: DispatchTimeInterval, window: Int = 16,
        reissueAfter: Double = 5
    ) {
        self.fetcher = fetcher
        self.haves = haves
        self.timeout = timeout
        self.window = window
        self.reissueAfter = reissueAfter
    }

    /// The locations of those of `ids` that arrived from `links` (read again at each round: peers come and go)
    /// before the timeout; the rest were not sent by any peer. With `idle`, the fetch ends only once no chunk
    /// arrived for that long (a log run's chunks: however long their transfer takes), or once `going` is false.
    func fetch(
        _ ids: [ChunkID], idle: DispatchTimeInterval? = nil, while going: () -> Bool = { true },
        from links: () -> [any PeerLink]
    ) -> [ChunkLocation] {
        let start = DispatchTime.now()
        var deadline = start + (idle ?? timeout)
        let seconds = { Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9 }
        var picker = PiecePicker<ObjectIdentifier>(ids, window: window, reissueAfter: reissueAfter)
        // A fetch too large to announce asks each peer for anything until it answers "not held".
        let swarm = picker.remaining.count <= HaveSets.maximumInterest ? HaveSets.newSwarm() : nil
        if let swarm { haves.open(swarm, ids: picker.remaining) }
        var known: [ObjectIdentifier: any PeerLink] = [:]
        var found: [ChunkLocation] = []
        var asked: [ChunkID] = []
        let wake = DispatchSemaphore(value: 0)
        var retryAt = DispatchTime.now()
        var answers = fetcher.answerCount
        // A read waits for a moving queue up to the stall limit (a peer that never answers its `interest` while
        // others answer would hold it for ever).
        let longest = start + ChunkFetcher.stallLimit
        defer {
            fetcher.release(asked)
            if let swarm { haves.close(swarm) }
            let measured = known.keys.map { ($0, picker.meter(of: $0)) }
            meters.withLock { m in
                // Bounded by the connections: past them, only this fetch's peers are kept.
                m = m.count > SyncConfiguration.maximumConnections ? [:] : m
                for (key, meter) in measured { m[key] = known[key]!.isEnded ? nil : meter }
            }
        }
        while !picker.isDone && DispatchTime.now() < deadline && going() {
            let live = links().filter { $0.node != nil && !$0.isEnded }
            let keys = Set(live.map(ObjectIdentifier.init))
            for key in known.keys where !keys.contains(key) {
                picker.remove(key)
                known[key] = nil
            }
            for link in live where known[ObjectIdentifier(link)] == nil {
                let key = ObjectIdentifier(link)
                picker.add(key, meter: meters.withLock { $0[key] })
                known[key] = link
            }
            let starved = picker.isStarved && DispatchTime.now() >= retryAt
            if starved {
                // No peer may hold what is left: they may have got it since, or new ones connected.
                picker.forgetLacks()
                retryAt = DispatchTime.now() + Self.retryPause
            }
            if let swarm {
                // Until its `have` comes, a peer is asked for nothing.
                for link in live {
                    haves.tell(swarm, to: link, again: starved)
                    picker.add(ObjectIdentifier(link), holding: haves.held(swarm, at: ObjectIdentifier(link)) ?? [])
                }
            }
            // One chunk per peer in turn, least loaded first, so that even a short read spreads over the peers.
            var batches: [ObjectIdentifier: [ChunkID]] = [:]
            var order = live.map(ObjectIdentifier.init).shuffled()
            order.sort { picker.load(of: $0) < picker.load(of: $1) }
            var more = true
            while more {
                more = false
                for key in order {
                    let next = picker.next(for: key, now: seconds(), limit: 1)
                    batches[key, default: []] += next
                    more = more || !next.isEmpty
                }
            }
            for (key, batch) in batches where !batch.isEmpty {
                let again = Set(batch.filter { picker.askedCount(of: $0) > 1 })
                fetcher.request(batch, via: known[key]!, again: again, waking: wake)
                asked += batch
            }
            _ = wake.wait(timeout: min(.now() + .milliseconds(20), deadline))
            let requests = picker.outstanding.compactMap { id, key in known[key].map { (id, $0) } }
            let (arrived, unanswered) = fetcher.poll(requests)
            for location in arrived where picker.arrived(location.id, now: seconds()) {
                found.append(location)
                if let idle { deadline = .now() + idle }
            }
            for (id, link) in unanswered { picker.lacks(id, at: ObjectIdentifier(link)) }
            // A read waiting for answers (to its requests, or a peer's first `have`) while the peers answer others'.
            let heard = fetcher.answerCount
            if idle == nil, heard != answers,
                !picker.outstanding.isEmpty
                    || swarm.map({ s in live.contains { haves.held(s, at: ObjectIdentifier($0)) == nil } }) ?? false
            {
                deadline = min(longest, max(deadline, .now() + timeout))
            }
            answers = heard
        }
        return found
    }
}
