import Dispatch
import HypernetCrypto
import HypernetFailpoint
import HypernetModel
import HypernetStore
import Logging
import Synchronization

/// Where the acks of other nodes land: the store in the daemon, a recording double in unit tests.
protocol ReplicaBook: Sendable {
    /// `node` durably holds `revisions`: fsyncs waiting on them wake up.
    func recordReplicas(node: SigningPublicKey, revisions: [RevisionID])
    /// Whether the peer table records `node` (the node key last seen at an address).
    func knowsNode(_ node: SigningPublicKey) -> Bool
    /// Which of `revisions` are stored here.
    func held(_ revisions: [RevisionID]) -> Set<RevisionID>
}

extension Store: ReplicaBook {
    func knowsNode(_ node: SigningPublicKey) -> Bool {
        let hex = Hex.encode(node.bytes)
        return ((try? peers()) ?? []).contains { $0.node == hex }
    }

    func held(_ revisions: [RevisionID]) -> Set<RevisionID> {
        (try? existingRevisions(revisions)) ?? []
    }
}

/// Signed replica acks (docs/protocol.md, "Acks"): signs this node's own, checks, records and routes other nodes'
/// once each, back along the link each revision first came by, toward its author. Owns the links acks go to (the
/// authenticated connections), numbered in the order they authenticated, those routes, the signatures seen, and
/// which revisions it acked when: a run echoed back by a link that authenticated before that ack costs no second
/// one.
final class AckBroker: Sendable {
    /// Revisions per ack.
    static let batch = 4096
    /// Signatures and acked revisions remembered before they are all forgotten.
    static let memory = 100_000

    private struct Link {
        let link: any PeerLink
        let serial: UInt64
    }

    private struct State {
        var links: [ObjectIdentifier: Link] = [:]
        /// The last serial handed out.
        var serial: UInt64 = 0
        var seen: Set<[UInt8]> = []
        /// Revisions this node has acked, with the serial current at the time: every link numbered up to it has
        /// had its chance to pass it on (their echoes are not acked again).
        var acked: [RevisionID: UInt64] = [:]
        /// The link each received revision first came by: acks of it go back along it, toward its author.
        var routes: [RevisionID: ObjectIdentifier] = [:]
        /// Revisions made here that became durable since the last `flushOwn`.
        var durableOwn: [RevisionID] = []
    }

    private let state = Mutex(State())
    /// Acks wake fsyncs: their own queue, never behind a peer's log or chunk requests. (Internal: tests drain it.)
    let queue = DispatchQueue(label: "hypernet.sync.acks")
    private let nodeKey: SigningKeyPair
    private let book: any ReplicaBook
    private let logger: Logger

    init(nodeKey: SigningKeyPair, book: any ReplicaBook, logger: Logger) {
        self.nodeKey = nodeKey
        self.book = book
        self.logger = logger
    }

    // MARK: Links

    /// `link` has a node key: acks go to it from now on, and one made from now on reaches it.
    func linkAuthenticated(_ link: any PeerLink) {
        state.withLock { s in
            s.serial += 1
            s.links[ObjectIdentifier(link)] = Link(link: link, serial: s.serial)
        }
    }

    func linkEnded(_ link: any PeerLink) {
        let key = ObjectIdentifier(link)
        state.withLock { s in
            s.links.removeValue(forKey: key)
            // A later link may get the same identifier: it is no route for what this one brought.
            s.routes = s.routes.filter { $0.value != key }
        }
    }

    // MARK: Acks of other nodes

    /// An ack from `link` (on its event loop): a copy of one already counted (it came by another path too) ends
    /// here, without a thread hop; the rest is checked on the ack queue.
    func arrived(_ ack: Message.Ack, from link: any PeerLink) {
        if state.withLock({ $0.seen.contains(ack.signature) }) { return }
        queue.async { [self] in received(ack, from: link) }
    }

    /// Records `ack` if its node authenticated to this node, and forwards it along the routes of its revisions;
    /// a revision held here without a route was made here (or came before this node started): its acks go to
    /// every link, so that this identity's other devices and the nodes near this one count the replica too. Never
    /// back to `link`; an ack of revisions not held here ends here.
    func received(_ ack: Message.Ack, from link: (any PeerLink)?) {
        // Each ack comes once per path: a copy of one already counted is dropped before its signature is checked
        // (a valid ack with these signature bytes was seen, so this one is the same or invalid).
        guard !state.withLock({ $0.seen.contains(ack.signature) }) else { return }
        guard ack.node != nodeKey.publicKey, ack.isValid else {
            if ack.node != nodeKey.publicKey {
                logger.warning(
                    "dropped an ack with a bad signature", metadata: ["peer": "\(link.map { "\($0)" } ?? "")"])
            }
            return
        }
        let fresh = state.withLock { s in
            if s.seen.count > Self.memory { s.seen.removeAll() }
            return s.seen.insert(ack.signature).inserted
        }
        guard fresh else { return }
        // A replica counts only if its node has authenticated to this node (a hostile peer could sign acks
        // with keys it made up); others are still forwarded, for nodes that know them.
        if knows(ack.node) {
            book.recordReplicas(node: ack.node, revisions: ack.revisions)
        }
        for l in routes(of: ack.revisions, except: link) { l.send(.ack(ack)) }
    }

    private func routes(of revisions: [RevisionID], except: (any PeerLink)?) -> [any PeerLink] {
        let (routed, unrouted) = state.withLock { s in
            (Set(revisions.compactMap { s.routes[$0] }), revisions.filter { s.routes[$0] == nil })
        }
        let everywhere = !unrouted.isEmpty && !book.held(unrouted).isEmpty
        return state.withLock { s in
            (everywhere ? Set(s.links.keys) : routed).compactMap { s.links[$0]?.link }.filter { $0 !== except }
        }
    }

    private func knows(_ node: SigningPublicKey) -> Bool {
        if state.withLock({ s in s.links.values.contains { $0.link.node == node } }) { return true }
        return book.knowsNode(node)
    }

    // MARK: This node's acks

    /// Acks `held`, in signed batches: to `link`, the sender of the run that holds them, which passes the ack on
    /// toward their author (`brought`: the revisions this run was first to bring, whose route is `link`); without
    /// a link (this node's own revisions), to every link. Revisions already acked since `link` authenticated are
    /// left out: a run echoed back by a relay costs no second ack.
    func ack(_ held: [RevisionID], echoedBy link: (any PeerLink)? = nil, brought: [RevisionID] = []) {
        // An ack lost on its way: the writer's fsync times out (EIO) unless another replica's ack reaches it.
        if Failpoint.hit("sync.ack") { return }
        let (unacked, links) = state.withLock { s -> ([RevisionID], [any PeerLink]) in
            let since = link.flatMap { s.links[ObjectIdentifier($0)]?.serial } ?? 0
            let unacked = held.filter { id in
                guard since > 0, let at = s.acked[id] else { return true }
                return at < since
            }
            if let link, s.links[ObjectIdentifier(link)] != nil {
                if s.routes.count > Self.memory { s.routes.removeAll() }
                for id in brought where s.routes[id] == nil { s.routes[id] = ObjectIdentifier(link) }
            }
            guard !unacked.isEmpty else { return ([], []) }
            if s.acked.count > Self.memory { s.acked.removeAll() }
            for id in unacked { s.acked[id] = s.serial }
            if let link { return (unacked, s.links[ObjectIdentifier(link)] == nil ? [] : [link]) }
            return (unacked, s.links.values.map(\.link))
        }
        guard !links.isEmpty else { return }
        for start in stride(from: 0, to: unacked.count, by: Self.batch) {
            let message = Message.ack(
                .signed(by: nodeKey, revisions: Array(unacked[start..<min(start + Self.batch, unacked.count)])))
            for l in links { l.send(message) }
        }
    }

    /// Revisions made here became durable: acked at the next `flushOwn`.
    func ownDurable(_ ids: [RevisionID]) {
        state.withLock { $0.durableOwn += ids }
    }

    /// Acks the revisions made here that became durable since the last call: peers learn that this node holds
    /// them without waiting for a relay's echo of them (which a relay hold delays).
    func flushOwn() {
        ack(
            state.withLock { s in
                defer { s.durableOwn.removeAll() }
                return s.durableOwn
            })
    }
}
