import Dispatch
import HypernetCrypto
import HypernetModel
import Synchronization

/// What this node told each peer it holds of the fetches the peer announced with `interest` (docs/protocol.md,
/// "Have-sets"): the answer's bitfield, then the positions of the chunks that arrive here since (`got`). Pure: no
/// clock, no I/O; `Announcer` drives it for the sync node.
struct Announcements<Peer: Hashable> {
    private struct Interest {
        var ids: [ChunkID]
        var told: [Bool]
    }
    /// Per peer, its interests in the order they came (the oldest is forgotten first).
    private var interests: [Peer: [(swarm: Digest, interest: Interest)]] = [:]
    /// Where each id is in which interest: the `got`s a chunk's arrival makes.
    private var positions: [ChunkID: [(peer: Peer, swarm: Digest, index: Int)]] = [:]
    /// Interests remembered per peer, and ids across them: past either, the oldest is forgotten (its fetch gets no
    /// more `got`s, which only costs it asking later).
    static var maximumInterests: Int { 16 }
    static var maximumIds: Int { 8192 }

    /// `peer` announced a fetch (or asked again: the same swarm replaced): the `have` bitfield to answer.
    mutating func interest(_ swarm: Digest, ids: [ChunkID], from peer: Peer, held: (ChunkID) -> Bool) -> [UInt8] {
        end(swarm, of: peer)
        guard !ids.isEmpty else { return [] }
        var told = ids.map(held)
        var bits = [UInt8](repeating: 0, count: (ids.count + 7) / 8)
        for (i, t) in told.enumerated() where t { bits[i >> 3] |= 1 << (i & 7) }
        // Only the first `maximumIds` get `got`s: past them, the have-set says all it will.
        let kept = min(ids.count, Self.maximumIds)
        told.removeLast(ids.count - kept)
        interests[peer, default: []].append((swarm, Interest(ids: Array(ids.prefix(kept)), told: told)))
        for (i, id) in ids.prefix(kept).enumerated() where !told[i] {
            positions[id, default: []].append((peer, swarm, i))
        }
        while let list = interests[peer],
            list.count > Self.maximumInterests
                || list.reduce(0, { $0 + $1.interest.ids.count }) > Self.maximumIds
        {
            end(list[0].swarm, of: peer)
        }
        return bits
    }

    /// The fetch `swarm` of `peer` is over.
    mutating func end(_ swarm: Digest, of peer: Peer) {
        guard let at = interests[peer]?.firstIndex(where: { $0.swarm == swarm }) else { return }
        let gone = interests[peer]!.remove(at: at).interest
        for id in Set(gone.ids) {
            positions[id]?.removeAll { $0.peer == peer && $0.swarm == swarm }
            if positions[id]?.isEmpty == true { positions[id] = nil }
        }
        if interests[peer]?.isEmpty == true { interests[peer] = nil }
    }

    /// The connection to `peer` ended.
    mutating func ended(_ peer: Peer) {
        for (swarm, _) in interests[peer] ?? [] { end(swarm, of: peer) }
    }

    /// Chunks now held here: the `got`s to send, per peer and swarm.
    mutating func arrived(_ ids: some Sequence<ChunkID>) -> [Peer: [Digest: [UInt32]]] {
        var out: [Peer: [Digest: [UInt32]]] = [:]
        for id in ids {
            for (peer, swarm, index) in positions.removeValue(forKey: id) ?? [] {
                guard let at = interests[peer]?.firstIndex(where: { $0.swarm == swarm }) else { continue }
                interests[peer]![at].interest.told[index] = true
                out[peer, default: [:]][swarm, default: []].append(UInt32(index))
            }
        }
        return out
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
    static let batchDelay: DispatchTimeInterval = .milliseconds(10)

    /// `link` sent `interest`: answered with a `have` of what `held` says is here (none for an empty list).
    func interest(_ swarm: Digest, ids: [ChunkID], from link: any PeerLink, held: (ChunkID) -> Bool) {
        let key = ObjectIdentifier(link)
        // Looked up before the lock: the store's catalog may be read.
        let here = Set(ids.filter(held))
        let bits = state.withLock { s in
            s.links[key] = link
            s.pending[key]?[swarm] = nil
            return s.table.interest(swarm, ids: ids, from: key, held: { here.contains($0) })
        }
        if !ids.isEmpty { link.send(.have(swarm: swarm, bits: bits)) }
    }

    /// Chunks stored here: the peers that announced them learn it.
    func arrived(_ ids: [ChunkID]) {
        let schedule = state.withLock { s -> Bool in
            for (key, swarms) in s.table.arrived(ids) {
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
