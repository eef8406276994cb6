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
}

extension Store: ReplicaBook {
    func knowsNode(_ node: SigningPublicKey) -> Bool {
        let hex = Hex.encode(node.bytes)
        return ((try? peers()) ?? []).contains { $0.node == hex }
    }
}

/// Signed replica acks (docs/protocol.md, "Acks"): signs this node's own, checks, records and floods other nodes'
/// once each. Owns the links acks go to (the authenticated connections), numbered in the order they
/// authenticated, the signatures seen, and which revisions it acked when: a run echoed back by a link that was
/// sent the ack already costs no second one.
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
        /// Revisions this node has acked, with the serial current at the time: every link numbered up to it was
        /// sent that ack.
        var acked: [RevisionID: UInt64] = [:]
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
        state.withLock { _ = $0.links.removeValue(forKey: ObjectIdentifier(link)) }
    }

    // MARK: Acks of other nodes

    /// An ack from `link` (on its event loop): a copy of one already counted (it came by another path too) ends
    /// here, without a thread hop; the rest is checked on the ack queue.
    func arrived(_ ack: Message.Ack, from link: any PeerLink) {
        if state.withLock({ $0.seen.contains(ack.signature) }) { return }
        queue.async { [self] in received(ack, from: link) }
    }

    /// Records `ack` if its node authenticated to this node, and forwards it to every link but `link`.
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
        for l in links(except: link) { l.send(.ack(ack)) }
    }

    private func knows(_ node: SigningPublicKey) -> Bool {
        if state.withLock({ s in s.links.values.contains { $0.link.node == node } }) { return true }
        return book.knowsNode(node)
    }

    private func links(except: (any PeerLink)? = nil) -> [any PeerLink] {
        state.withLock { s in s.links.values.map(\.link).filter { $0 !== except } }
    }

    // MARK: This node's acks

    /// Acks `held` to every link, in signed batches, leaving out the revisions already acked to all of them and to
    /// `link` (the sender of the run that holds them): a run echoed back by a relay costs no second ack.
    func ack(_ held: [RevisionID], echoedBy link: (any PeerLink)? = nil) {
        // An ack lost on its way: the writer's fsync times out (EIO) unless another replica's ack reaches it.
        if Failpoint.hit("sync.ack") { return }
        let (unacked, links) = state.withLock { s -> ([RevisionID], [any PeerLink]) in
            let since = link.flatMap { s.links[ObjectIdentifier($0)]?.serial } ?? 0
            let unacked = held.filter { id in
                guard since > 0, let at = s.acked[id] else { return true }
                return at < since
            }
            guard !unacked.isEmpty else { return ([], []) }
            if s.acked.count > Self.memory { s.acked.removeAll() }
            for id in unacked { s.acked[id] = s.serial }
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
