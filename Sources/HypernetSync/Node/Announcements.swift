import Dispatch
import HypernetCrypto
import HypernetModel
import Synchronization

/// What this node told each peer it holds of the fetches the peer announced with `interest` (docs/protocol.md,
/// "Have-sets"): the answer's bitfield, then the positions of the chunks that arrive here since (`got`); and
/// super-seeding ("Super-seeding"): a chunk this node did not get from a peer (it wrote it, or held it before it
/// started) is told to one asker first, at most `uploadSlots` such chunks per peer not yet asked of here, and to
/// the others once that peer is gone, or to one that asks again (it finds no holder) once `spreadWait` passed since
/// it was told to that peer, or sent to it (time to ask for it, then to pass it on). Chunks got from peers are told
/// to all at once: others hold them. Pure: no clock, no I/O; `Announcer` drives it for the sync node.
struct Announcements<Peer: Hashable> {
    private struct Interest {
        var ids: [ChunkID]
        var told: [Bool]
        /// Positions held here but not told yet (super-seeding).
        var withheld: [Int] = []
    }
    /// Per peer, its interests in the order they came (the oldest is forgotten first).
    private var interests: [Peer: [(swarm: Digest, interest: Interest)]] = [:]
    /// Where each id is in which interest, not told yet: the `got`s a chunk's arrival makes.
    private var positions: [ChunkID: [(peer: Peer, swarm: Digest, index: Int)]] = [:]
    /// Chunks got from peers since start (bounded: forgotten all at once past `maximumRemembered`).
    private var fetched: Set<ChunkID> = []
    /// The peer each chunk of this node's own was first told to, and when (or, once sent to it, when sent).
    private var given: [ChunkID: (peer: Peer, at: Double)] = [:]
    /// Per peer, the chunks given to it and not asked of here yet: its upload slots.
    private var slots: [Peer: Set<ChunkID>] = [:]
    let uploadSlots: Int
    let spreadWait: Double
    /// Interests remembered per peer, and ids across them: past either, the oldest is forgotten (its fetch gets no
    /// more `got`s, which only costs it asking later).
    static var maximumInterests: Int { 16 }
    static var maximumIds: Int { 8192 }
    static var maximumRemembered: Int { 1 << 16 }

    init(uploadSlots: Int = 16, spreadWait: Double = 5) {
        self.uploadSlots = uploadSlots
        self.spreadWait = spreadWait
    }

    /// `peer` announced a fetch (or asked again: the same swarm replaced) at `now`: the `have` bitfield to answer.
    mutating func interest(
        _ swarm: Digest, ids: [ChunkID], from peer: Peer, held: (ChunkID) -> Bool, now: Double
    ) -> [UInt8] {
        // Asked again: the peer finds no holder of some chunk (docs/protocol.md, "Have-sets").
        let previous = interests[peer]?.first { $0.swarm == swarm }?.interest
        let starving = previous != nil
        // What it was told before: it got those (from whichever peer: a fetch's list keeps the chunks that arrived)
        // or will ask. Told again without taking a slot, and still its own, so that the slots go to what it lacks.
        let toldBefore = Set(previous.map { p in p.told.indices.filter { p.told[$0] }.map { p.ids[$0] } } ?? [])
        let reserved = toldBefore.compactMap { id in given[id].flatMap { $0.peer == peer ? (id, $0) : nil } }
        end(swarm, of: peer)
        for (id, entry) in reserved { given[id] = entry }
        guard !ids.isEmpty else { return [] }
        // Only the first `maximumIds` get `got`s: past them, the have-set says all it will.
        let kept = min(ids.count, Self.maximumIds)
        var interest = Interest(ids: Array(ids.prefix(kept)), told: [])
        var bits = [UInt8](repeating: 0, count: (ids.count + 7) / 8)
        for (i, id) in ids.enumerated() {
            let isHeld = held(id)
            let tell = isHeld && (toldBefore.contains(id) || mayTell(id, to: peer, now: now, starving: starving))
            if tell { bits[i >> 3] |= 1 << (i & 7) }
            guard i < kept else { continue }
            interest.told.append(tell)
            if isHeld && !tell { interest.withheld.append(i) }
            if !tell { positions[id, default: []].append((peer, swarm, i)) }
        }
        interests[peer, default: []].append((swarm, interest))
        while let list = interests[peer],
            list.count > Self.maximumInterests
                || list.reduce(0, { $0 + $1.interest.ids.count }) > Self.maximumIds
        {
            end(list[0].swarm, of: peer)
        }
        return bits
    }

    /// The fetch `swarm` of `peer` is over: what it was given and did not ask for is free for others.
    mutating func end(_ swarm: Digest, of peer: Peer) {
        guard let at = interests[peer]?.firstIndex(where: { $0.swarm == swarm }) else { return }
        let gone = interests[peer]!.remove(at: at).interest
        for id in Set(gone.ids) {
            positions[id]?.removeAll { $0.peer == peer && $0.swarm == swarm }
            if positions[id]?.isEmpty == true { positions[id] = nil }
            if slots[peer]?.remove(id) != nil { given[id] = nil }
        }
        if interests[peer]?.isEmpty == true { interests[peer] = nil }
    }

    /// The connection to `peer` ended: what it was given goes to others at once.
    mutating func ended(_ peer: Peer) {
        for (swarm, _) in interests[peer] ?? [] { end(swarm, of: peer) }
        given = given.filter { $0.value.peer != peer }
        slots[peer] = nil
    }

    /// Chunks got from a peer at `now` (others hold them too): the `got`s to send, per peer and swarm.
    mutating func arrived(_ ids: some Sequence<ChunkID>, now: Double) -> [Peer: [Digest: [UInt32]]] {
        var out: [Peer: [Digest: [UInt32]]] = [:]
        for id in ids {
            if fetched.count >= Self.maximumRemembered { fetched.removeAll() }
            fetched.insert(id)
            out.merge(reveal(id, now: now)) { a, b in a.merging(b, uniquingKeysWith: +) }
        }
        return out
    }

    /// `peer` asked for chunk `id` and was sent it at `now`: its slot is free, and more may be told to it.
    mutating func served(_ id: ChunkID, to peer: Peer, now: Double) -> [Peer: [Digest: [UInt32]]] {
        guard slots[peer]?.remove(id) != nil else { return [:] }
        given[id] = (peer, now)
        var out: [Digest: [UInt32]] = [:]
        for (at, entry) in (interests[peer] ?? []).enumerated() {
            for index in entry.interest.withheld where mayTell(entry.interest.ids[index], to: peer, now: now) {
                tell(index, of: at, for: peer)
                out[entry.swarm, default: []].append(UInt32(index))
            }
        }
        return out.isEmpty ? [:] : [peer: out]
    }

    /// The held chunk `id`, to every peer that wants it and may be told now.
    private mutating func reveal(_ id: ChunkID, now: Double) -> [Peer: [Digest: [UInt32]]] {
        var out: [Peer: [Digest: [UInt32]]] = [:]
        for (peer, swarm, index) in positions[id] ?? [] where mayTell(id, to: peer, now: now) {
            guard let at = interests[peer]?.firstIndex(where: { $0.swarm == swarm }) else { continue }
            tell(index, of: at, for: peer)
            out[peer, default: [:]][swarm, default: []].append(UInt32(index))
        }
        return out
    }

    /// Frees the slots of `peer` whose chunk it did not ask for within `spreadWait` of being told it: it got the chunk
    /// from another peer (this node is not told) or its fetch moved on, and a slot held for good would keep every later
    /// fetch of it from being told this node's own chunks. Whether a slot is free now.
    private mutating func freeStaleSlots(of peer: Peer, now: Double) -> Bool {
        slots[peer] = slots[peer]?.filter { id in given[id].map { now - $0.at < spreadWait } ?? false }
        return slots[peer, default: []].count < uploadSlots
    }

    private mutating func tell(_ index: Int, of at: Int, for peer: Peer) {
        let id = interests[peer]![at].interest.ids[index]
        interests[peer]![at].interest.told[index] = true
        interests[peer]![at].interest.withheld.removeAll { $0 == index }
        let swarm = interests[peer]![at].swarm
        positions[id]?.removeAll { $0.peer == peer && $0.swarm == swarm && $0.index == index }
        if positions[id]?.isEmpty == true { positions[id] = nil }
    }

    /// Whether held chunk `id` may be told to `peer` now; telling a chunk of this node's own takes a slot.
    /// Given to another peer, it is told only to one `starving` (asking again) once `spreadWait` passed: a peer
    /// asking first may well get it from the one it was given to.
    private mutating func mayTell(_ id: ChunkID, to peer: Peer, now: Double, starving: Bool = false) -> Bool {
        if fetched.contains(id) { return true }
        if let g = given[id] { return g.peer == peer || (starving && now - g.at >= spreadWait) }
        guard slots[peer, default: []].count < uploadSlots || freeStaleSlots(of: peer, now: now) else { return false }
        if given.count >= Self.maximumRemembered { given.removeAll() }
        given[id] = (peer, now)
        slots[peer, default: []].insert(id)
        return true
    }
}
/// `Announcements` for the sync node's connections: answers `interest`s, and sends the `got`s of chunks that
/// arrive here batched (what arrives within `batchDelay` goes in one message per swarm).
final class Announcer: Sendable {
    private struct State {
        var table = Announcements<ObjectIdentifier>()
        var links: [ObjectIdentifier: any PeerLink] = [:]
        var pending: [ObjectIdentifier: [Digest: [UInt32]]] = [:]
        var flushing = false
    }
    private let state = Mutex(State())
    private let queue = DispatchQueue(label: "hypernet.sync.have")
    static let batchDelay: DispatchTimeInterval = .milliseconds(5)

    private static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    /// `link` sent `interest`: answered with a `have` of what `held` says is here (none for an empty list).
    func interest(_ swarm: Digest, ids: [ChunkID], from link: any PeerLink, held: (ChunkID) -> Bool) {
        let key = ObjectIdentifier(link)
        // Looked up before the lock: the store's catalog may be read.
        let here = Set(ids.filter(held))
        let bits = state.withLock { s in
            s.links[key] = link
            s.pending[key]?[swarm] = nil
            return s.table.interest(swarm, ids: ids, from: key, held: { here.contains($0) }, now: Self.now())
        }
        if !ids.isEmpty { link.send(.have(swarm: swarm, bits: bits)) }
    }

    /// Chunks got from a peer and stored here: the peers that announced them learn it.
    func arrived(_ ids: [ChunkID]) {
        queueGots { $0.arrived(ids, now: Self.now()) }
    }

    /// `link` was sent chunk `id` it asked for: its upload slot is free, and more may be told to it.
    func served(_ id: ChunkID, to link: any PeerLink) {
        queueGots { $0.served(id, to: ObjectIdentifier(link), now: Self.now()) }
    }

    private func queueGots(_ change: (inout Announcements<ObjectIdentifier>) -> [ObjectIdentifier: [Digest: [UInt32]]])
    {
        let schedule = state.withLock { s -> Bool in
            for (key, swarms) in change(&s.table) {
                for (swarm, indexes) in swarms { s.pending[key, default: [:]][swarm, default: []] += indexes }
            }
            guard !s.pending.isEmpty, !s.flushing else { return false }
            s.flushing = true
            return true
        }
        if schedule { queue.asyncAfter(deadline: .now() + Self.batchDelay) { [self] in flush() } }
    }

    private func flush() {
        let sends = state.withLock { s in
            defer {
                s.pending = [:]
                s.flushing = false
            }
            return s.pending.compactMap { key, swarms in s.links[key].map { ($0, swarms) } }
        }
        for (link, swarms) in sends where !link.isEnded {
            // At most `maximumIds` positions per swarm: one message each.
            for (swarm, indexes) in swarms { link.send(.got(swarm: swarm, indexes: indexes)) }
        }
    }

    func linkEnded(_ link: any PeerLink) {
        let key = ObjectIdentifier(link)
        state.withLock { s in
            s.table.ended(key)
            s.links[key] = nil
            s.pending[key] = nil
        }
    }
}
