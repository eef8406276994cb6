import HypernetCrypto
import HypernetModel
import Synchronization

/// The have-sets peers sent this node for its running fetches (docs/protocol.md, "Have-sets"): each fetch is a
/// swarm, announced with `interest` and its list of ids; each peer answers with a bitfield over that list (`have`)
/// and then the positions it gets (`got`). A fetch's picker asks a peer only for what it holds.
final class HaveSets: Sendable {
    private struct Swarm {
        var ids: [ChunkID]
        /// Per link (by identity), what it said it holds, and the link itself.
        var held: [ObjectIdentifier: Set<ChunkID>] = [:]
        /// Links sent the interest.
        var told: [ObjectIdentifier: any PeerLink] = [:]
    }
    private let swarms = Mutex<[Digest: Swarm]>([:])
    /// The ids a fetch announces at most: a larger one asks its peers without have-sets.
    static let maximumInterest = 4096

    static func newSwarm() -> Digest {
        var g = SystemRandomNumberGenerator()
        return try! Digest(bytes: (0..<Digest.byteCount).map { _ in UInt8.random(in: 0...255, using: &g) })
    }

    /// A fetch of `ids` (no repeats) starts.
    func open(_ swarm: Digest, ids: [ChunkID]) {
        swarms.withLock { $0[swarm] = Swarm(ids: ids) }
    }

    /// The fetch is over: the peers told of it are told so, and what they said is forgotten.
    func close(_ swarm: Digest) {
        let told = swarms.withLock { $0.removeValue(forKey: swarm)?.told.values.map { $0 } ?? [] }
        for link in told where !link.isEnded { link.send(.interest(swarm: swarm, ids: [])) }
    }

    /// Sends the interest to `link` unless it was sent already; `again`: sends it anyway, asking for a fresh `have`
    /// (what a peer withheld may be given now: "Super-seeding").
    func tell(_ swarm: Digest, to link: any PeerLink, again: Bool = false) {
        let ids = swarms.withLock { s -> [ChunkID]? in
            let key = ObjectIdentifier(link)
            guard let entry = s[swarm], again || entry.told[key] == nil else { return nil }
            s[swarm]!.told[key] = link
            return entry.ids
        }
        if let ids { link.send(.interest(swarm: swarm, ids: ids)) }
    }

    /// What `link` said it holds of the swarm's ids; nil before its `have`.
    func held(_ swarm: Digest, at link: ObjectIdentifier) -> Set<ChunkID>? {
        swarms.withLock { $0[swarm]?.held[link] }
    }

    /// A `have` from `link`: nil, or why it is malformed (the connection is closed). Have-sets only grow: a `have`
    /// adds to what was said before (a refresh, or a `got` that overtook it). One for a swarm over (or not this
    /// node's) is dropped: it may cross the `interest` that ended it.
    func have(_ swarm: Digest, bits: [UInt8], from link: any PeerLink) -> String? {
        swarms.withLock { s in
            guard let entry = s[swarm], entry.told[ObjectIdentifier(link)] != nil else { return nil }
            let n = entry.ids.count
            guard bits.count == (n + 7) / 8, n % 8 == 0 || bits.last! >> (n % 8) == 0 else {
                return "sent a have-set of \(bits.count) bytes for a list of \(n) chunks"
            }
            var held = entry.held[ObjectIdentifier(link)] ?? []
            for (i, id) in entry.ids.enumerated() where bits[i >> 3] & (1 << (i & 7)) != 0 { held.insert(id) }
            s[swarm]!.held[ObjectIdentifier(link)] = held
            return nil
        }
    }

    /// A `got` from `link`: nil, or why it is malformed (a position past the list).
    func got(_ swarm: Digest, indexes: [UInt32], from link: any PeerLink) -> String? {
        swarms.withLock { s in
            let key = ObjectIdentifier(link)
            guard let entry = s[swarm], entry.told[key] != nil else { return nil }
            if let bad = indexes.first(where: { Int($0) >= entry.ids.count }) {
                return "sent got for position \(bad) of a list of \(entry.ids.count) chunks"
            }
            s[swarm]!.held[key, default: []].formUnion(indexes.map { entry.ids[Int($0)] })
            return nil
        }
    }

    /// The connection ended: what it said is forgotten.
    func linkEnded(_ link: any PeerLink) {
        let key = ObjectIdentifier(link)
        swarms.withLock { s in
            for swarm in s.keys {
                s[swarm]!.held[key] = nil
                s[swarm]!.told[key] = nil
            }
        }
    }
}
