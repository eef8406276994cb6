import HypernetCrypto
import HypernetStore
import Synchronization

/// The connections this node keeps (docs/protocol.md, "Peer set"): the caps on connections, one connection per
/// peer node key, at most `maxPeers` peers kept, and which addresses are worth dialing. A connection over the cap
/// waits for the peer's `hello` and is kept only if it offers a followed tree no kept peer offers (another peer,
/// whose trees all have another source, then makes room); so peer exchange keeps learning addresses without
/// making a full mesh. The links and the trees followed are its inputs; tested over `PeerLinkDouble`s.
final class PeerSet: Sendable {
    /// Connections accepted from one IP address at once (and `SyncConfiguration.maximumConnections` in all): one more
    /// is closed as soon as it is accepted.
    static let maximumConnectionsPerAddress = 16

    enum Admission: Equatable {
        /// One of the kept peers: `hello` and `peers` go to it at once.
        case kept
        /// Over the cap: it is sent `peers` only, and kept or closed on its `hello` (`offered`).
        case waiting
        /// Closed as a duplicate of the connection kept for its node key.
        case duplicate
    }

    enum Decision {
        /// Keep the link. `admitted`: it was waiting and is kept now, so it is sent `hello` (and acks); `evicting`:
        /// the kept peer it replaces, to close.
        case keep(admitted: Bool, evicting: (any PeerLink)?)
        /// Close it: the set is full and it adds no followed tree.
        case refuse
    }

    private struct Entry {
        let link: any PeerLink
        let ip: String?
        let initiator: Bool
        let dialed: String?
        /// Dialed at a configured address: never evicted.
        let configured: Bool
        var admission: Admission?
        var trees: Set<SigningPublicKey> = []
        /// Order of admission: the newest kept peer is evicted first.
        var order = 0
    }

    private struct State {
        var links: [ObjectIdentifier: Entry] = [:]
        var byNode: [SigningPublicKey: ObjectIdentifier] = [:]
        /// The trees last offered at each address (dialed or announced as `listen`), for choosing what to dial.
        var offers: [String: Set<SigningPublicKey>] = [:]
        /// The configured addresses of the peer table, as of the last `dialPlan`.
        var configured: Set<String> = []
        var order = 0

        var kept: [Entry] { links.values.filter { $0.admission == .kept } }

        func covered(except skipped: ObjectIdentifier? = nil) -> Set<SigningPublicKey> {
            links.filter { $0.key != skipped && $0.value.admission == .kept }.reduce(into: []) {
                $0.formUnion($1.value.trees)
            }
        }
    }

    let maxPeers: Int
    private let own: SigningPublicKey
    private let state = Mutex(State())

    init(own: SigningPublicKey, maxPeers: Int = SyncConfiguration.defaultMaxPeers) {
        self.own = own
        self.maxPeers = maxPeers
    }

    /// Learned addresses dialed while fewer peers are kept than this (unless a followed tree has no source):
    /// half the cap, so that peers that dial this node find room.
    var dialTarget: Int { max(1, (maxPeers + 1) / 2) }

    /// A connection is up: nil, or why it is refused (an accepted one past the connection caps).
    func opened(_ link: any PeerLink, initiator: Bool, ip: String?, dialed: String?) -> String? {
        state.withLock { s in
            if !initiator {
                if s.links.count >= SyncConfiguration.maximumConnections {
                    return "over the cap of \(SyncConfiguration.maximumConnections) connections"
                }
                if let ip, s.links.values.count(where: { $0.ip == ip }) >= Self.maximumConnectionsPerAddress {
                    return "over the cap of \(Self.maximumConnectionsPerAddress) connections from \(ip)"
                }
            }
            s.links[ObjectIdentifier(link)] = Entry(
                link: link, ip: ip, initiator: initiator, dialed: dialed,
                configured: dialed.map(s.configured.contains) ?? false)
            return nil
        }
    }

    /// `link` authenticated its node key. Two nodes that dial each other keep the connection opened by the
    /// smaller node key; the other is returned to close (`link` itself, or the one it replaces, whose place it
    /// takes).
    func authenticated(_ link: any PeerLink) -> (Admission, close: (any PeerLink)?) {
        guard let node = link.node else { return (.duplicate, link) }
        let key = ObjectIdentifier(link)
        return state.withLock { s in
            guard var entry = s.links[key] else { return (.duplicate, link) }
            var replaced: Entry?
            if let other = s.byNode[node], let existing = s.links[other], !existing.link.isEnded {
                guard initiatorKey(entry).lexicographicallyPrecedes(initiatorKey(existing)) else {
                    s.links[key]?.admission = .duplicate
                    return (.duplicate, link)
                }
                replaced = existing
                s.links[other]?.admission = .duplicate
            }
            s.byNode[node] = key
            s.order += 1
            entry.order = s.order
            entry.admission = replaced?.admission ?? (s.kept.count < maxPeers ? .kept : .waiting)
            s.links[key] = entry
            return (entry.admission!, replaced?.link)
        }
    }

    private func initiatorKey(_ entry: Entry) -> [UInt8] {
        (entry.initiator ? own : entry.link.node!).bytes
    }

    /// The peer's `hello` offers `trees` (announcing `listen`): remembered for dialing, and a waiting link is
    /// kept if there is room, or if it offers a tree of `followed` that no kept peer offers and a kept peer
    /// whose followed trees all have another source can make room (the newest such, never one dialed at a
    /// configured address).
    func offered(_ trees: [SigningPublicKey], listen: String, by link: any PeerLink, followed: Set<SigningPublicKey>)
        -> Decision
    {
        let key = ObjectIdentifier(link)
        return state.withLock { s in
            guard let entry = s.links[key] else { return .refuse }
            let offered = Set(trees)
            s.links[key]?.trees = offered
            for address in [entry.dialed, listen].compactMap({ $0 }) where !address.isEmpty {
                s.offers[address] = offered
            }
            guard entry.admission == .waiting else { return .keep(admitted: false, evicting: nil) }
            var evicted: (any PeerLink)?
            if s.kept.count >= maxPeers {
                guard !offered.intersection(followed).subtracting(s.covered()).isEmpty else { return .refuse }
                let spare = s.links.filter { k, e in
                    e.admission == .kept && !e.configured
                        && e.trees.intersection(followed).isSubset(of: s.covered(except: k))
                }
                guard let victim = spare.max(by: { $0.value.order < $1.value.order })?.key else { return .refuse }
                s.links[victim]?.admission = nil
                evicted = s.links[victim]?.link
            }
            s.links[key]?.admission = .kept
            return .keep(admitted: true, evicting: evicted)
        }
    }

    func ended(_ link: any PeerLink) {
        let key = ObjectIdentifier(link)
        state.withLock { s in
            s.links.removeValue(forKey: key)
            if let node = link.node, s.byNode[node] == key { s.byNode.removeValue(forKey: node) }
        }
    }

    func isKept(_ link: any PeerLink) -> Bool {
        state.withLock { $0.links[ObjectIdentifier(link)]?.admission == .kept }
    }

    func isWaiting(_ link: any PeerLink) -> Bool {
        state.withLock { $0.links[ObjectIdentifier(link)]?.admission == .waiting }
    }

    var keptCount: Int { state.withLock { $0.kept.count } }

    /// The node keys (hex) of the connected peers, kept or not: dialing them would make a duplicate.
    var connectedNodes: Set<String> {
        state.withLock { Set($0.byNode.keys.map { Hex.encode($0.bytes) }) }
    }

    /// Which of `records` to dial, best first, and how many dials may be in progress for each kind: configured
    /// addresses up to the cap; learned ones up to `dialTarget`, or up to the cap while a tree of `followed` has
    /// no kept source (those known to offer it first, then those not yet seen; none known to offer nothing new).
    func dialPlan(_ records: [PeerRecord], followed: Set<SigningPublicKey>)
        -> (records: [PeerRecord], limits: Dialer.Limits)
    {
        state.withLock { s in
            let known = Set(records.map(\.address))
            s.offers = s.offers.filter { known.contains($0.key) }
            s.configured = Set(records.filter(\.configured).map(\.address))
            let kept = s.kept.count
            let uncovered = followed.subtracting(s.covered())
            func rank(_ r: PeerRecord) -> Int? {
                if r.configured { return 0 }
                guard let trees = s.offers[r.address] else { return 2 }
                if !trees.isDisjoint(with: uncovered) { return 1 }
                return kept < dialTarget ? 3 : nil
            }
            let ranked = records.compactMap { r in rank(r).map { ($0, r) } }
            // Dialed connections not kept yet (in the handshake, or waiting) will be, most likely.
            let settling = s.links.values.count { $0.initiator && ($0.admission == nil || $0.admission == .waiting) }
            let learned = uncovered.isEmpty ? dialTarget : maxPeers
            return (
                ranked.enumerated().sorted { ($0.element.0, $0.offset) < ($1.element.0, $1.offset) }.map(\.element.1),
                Dialer.Limits(
                    configured: max(0, maxPeers - kept - settling), learned: max(0, learned - kept - settling))
            )
        }
    }
}
