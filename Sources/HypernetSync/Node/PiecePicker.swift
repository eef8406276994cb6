import HypernetModel

/// Chooses which peer is asked for which chunk when a node fetches many chunks from several peers at once
/// (docs/protocol.md, "Multi-source fetch"): rarest first, then in the order asked for (near the read position
/// first); per peer, at most its window of requests in flight (`PeerMeter`: `window` until measured); a request
/// unanswered for `reissueAfter` seconds, or lost
/// with its peer, asked of another peer; and the end game: once every chunk still missing has been asked for and
/// at most `endGame` are left (of a fetch of more), a peer with a free slot is also asked for chunks in flight
/// elsewhere, and the first copy wins. Outside the end game and re-issue, no chunk is asked of two peers (a short
/// read has no end game: its few chunks would all be asked twice). Pure: no clock (time is passed in), no I/O.
struct PiecePicker<Peer: Hashable> {
    private struct Request {
        var peer: Peer
        var since: Double
    }
    let window: Int
    let reissueAfter: Double
    let endGame: Int
    /// Chunks not arrived yet, in the order asked for.
    private var missing: [ChunkID]
    private var position: [ChunkID: Int] = [:]
    private var arrivedSet: Set<ChunkID> = []
    private var peers: [Peer] = []
    /// A peer's have-set when it sent one; a peer without one may hold any chunk until it answers "not held".
    private var holdings: [Peer: Set<ChunkID>] = [:]
    private var lacking: [ChunkID: Set<Peer>] = [:]
    private var requests: [ChunkID: [Request]] = [:]
    private var inFlight: [Peer: Int] = [:]
    private var meters: [Peer: PeerMeter] = [:]

    init(_ ids: [ChunkID], window: Int = 16, reissueAfter: Double = 5, endGame: Int = 8) {
        var seen: Set<ChunkID> = []
        missing = ids.filter { seen.insert($0).inserted }
        for (i, id) in missing.enumerated() { position[id] = i }
        self.window = window
        self.reissueAfter = reissueAfter
        self.endGame = endGame
    }

    var isDone: Bool { arrivedSet.count == missing.count }
    /// The chunks not arrived yet.
    var remaining: [ChunkID] { missing.filter { !arrivedSet.contains($0) } }
    /// How many peers are asked for `id` now (more than one: the end game, or a re-issue).
    func askedCount(of id: ChunkID) -> Int { requests[id]?.count ?? 0 }
    /// Requests in flight at `peer`.
    func load(of peer: Peer) -> Int { inFlight[peer, default: 0] }
    /// What `peer`'s answers measured (kept across fetches by the caller).
    func meter(of peer: Peer) -> PeerMeter { meters[peer] ?? PeerMeter() }
    /// How many requests `peer` may have in flight now.
    func window(of peer: Peer) -> Int { meter(of: peer).window(initial: window) }
    /// The requests in flight, as (chunk, peer) pairs.
    var outstanding: [(ChunkID, Peer)] { requests.flatMap { id, r in r.map { (id, $0.peer) } } }

    /// A peer to ask; `holding`: its have-set, if it sent one (replacing the one before); `meter`: what earlier
    /// fetches measured of it.
    mutating func add(_ peer: Peer, holding: Set<ChunkID>? = nil, meter: PeerMeter? = nil) {
        if !peers.contains(peer) { peers.append(peer) }
        if let holding { holdings[peer] = holding }
        if let meter, meters[peer] == nil { meters[peer] = meter }
    }

    /// The peer is gone: what it was asked for goes to the others.
    mutating func remove(_ peer: Peer) {
        peers.removeAll { $0 == peer }
        holdings[peer] = nil
        inFlight[peer] = nil
        meters[peer] = nil
        for (id, r) in requests { requests[id] = r.filter { $0.peer != peer } }
        for id in lacking.keys { lacking[id]!.remove(peer) }
    }

    /// `peer` answered "not held" (or its copy did not match the id): it is not asked for `id` again.
    mutating func lacks(_ id: ChunkID, at peer: Peer) {
        drop(id, at: peer)
        lacking[id, default: []].insert(peer)
    }

    /// The chunk arrived at `now` (from whichever peer: the one asked first is credited): the other requests of it
    /// are over (their answers are dropped). False if it was not wanted or had arrived already.
    @discardableResult
    mutating func arrived(_ id: ChunkID, now: Double) -> Bool {
        guard position[id] != nil, arrivedSet.insert(id).inserted else { return false }
        let asked = requests.removeValue(forKey: id) ?? []
        if let first = asked.first, peers.contains(first.peer) {
            meters[first.peer, default: PeerMeter()].answered(sentAt: first.since, now: now)
        }
        for r in asked {
            inFlight[r.peer, default: 1] -= 1
            if inFlight[r.peer] == 0 { meters[r.peer]?.idle() }
        }
        lacking[id] = nil
        return true
    }

    /// Forgets every "not held" answer: the peers may have got the chunks since (asked again after a pause).
    mutating func forgetLacks() { lacking.removeAll() }

    /// Whether a chunk is missing that no current peer may hold and nobody is asked for.
    var isStarved: Bool {
        remaining.contains { id in requests[id, default: []].isEmpty && !peers.contains { mayHold($0, id) } }
    }

    /// The chunks to ask `peer` for now, at most `limit`, filling its free slots: rarest first (fewest peers that
    /// may hold it), then in the order asked for. A chunk in flight elsewhere is chosen only once its request is
    /// older than `reissueAfter`, or in the end game.
    mutating func next(for peer: Peer, now: Double, limit: Int = .max) -> [ChunkID] {
        let free = min(limit, window(of: peer) - inFlight[peer, default: 0])
        guard free > 0, peers.contains(peer) else { return [] }
        let open = remaining
        let inEndGame =
            missing.count > endGame && open.count <= endGame
            && open.allSatisfy { !requests[$0, default: []].isEmpty }
        var candidates: [(rarity: Int, position: Int, id: ChunkID)] = []
        for id in open where mayHold(peer, id) {
            let asked = requests[id, default: []]
            guard !asked.contains(where: { $0.peer == peer }) else { continue }
            let stale = asked.allSatisfy { now - $0.since >= reissueAfter }
            guard asked.isEmpty || stale || inEndGame else { continue }
            candidates.append((peers.count(where: { mayHold($0, id) }), position[id]!, id))
        }
        candidates.sort { ($0.rarity, $0.position) < ($1.rarity, $1.position) }
        let chosen = candidates.prefix(free).map(\.id)
        for id in chosen { requests[id, default: []].append(Request(peer: peer, since: now)) }
        inFlight[peer, default: 0] += chosen.count
        return chosen
    }

    private func mayHold(_ peer: Peer, _ id: ChunkID) -> Bool {
        !(lacking[id]?.contains(peer) ?? false) && (holdings[peer]?.contains(id) ?? true)
    }

    private mutating func drop(_ id: ChunkID, at peer: Peer) {
        guard let r = requests[id], r.contains(where: { $0.peer == peer }) else { return }
        requests[id] = r.filter { $0.peer != peer }
        inFlight[peer, default: 1] -= 1
        if inFlight[peer] == 0 { meters[peer]?.idle() }
    }
}
