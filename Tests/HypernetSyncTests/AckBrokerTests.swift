import HypernetCrypto
import HypernetModel
import Logging
import Synchronization
import Testing

@testable import HypernetSync

/// The ack broker alone: links and the replica book are doubles, nothing touches a socket or a store.
@Suite struct AckBrokerTests {
    /// Records replicas; knows the nodes it is given.
    final class Book: ReplicaBook {
        let known: Set<SigningPublicKey>
        let stored: Set<RevisionID>
        private let recorded = Mutex<[(SigningPublicKey, [RevisionID])]>([])
        init(known: Set<SigningPublicKey> = [], stored: Set<RevisionID> = []) {
            self.known = known
            self.stored = stored
        }
        var replicas: [(SigningPublicKey, [RevisionID])] { recorded.withLock { $0 } }
        func recordReplicas(node: SigningPublicKey, revisions: [RevisionID]) {
            recorded.withLock { $0.append((node, revisions)) }
        }
        func knowsNode(_ node: SigningPublicKey) -> Bool { known.contains(node) }
        func held(_ revisions: [RevisionID]) -> Set<RevisionID> { stored.intersection(revisions) }
    }

    let key = SigningKeyPair.generate()
    let book: Book
    let broker: AckBroker

    init(known: Set<SigningPublicKey> = [], stored: Set<RevisionID> = []) {
        book = Book(known: known, stored: stored)
        broker = AckBroker(nodeKey: key, book: book, logger: Logger(label: "test"))
    }

    static func revisions(_ n: Int) -> [RevisionID] { (0..<n).map { BLAKE2b.hash(Array("r\($0)".utf8)) } }

    @Test func ownRevisionsAreAckedInSignedBatchesToEveryLink() {
        let links = [PeerLinkDouble(), PeerLinkDouble()]
        for l in links { broker.linkAuthenticated(l) }
        let ids = Self.revisions(AckBroker.batch + 1)
        broker.ownDurable(Array(ids.prefix(10)))
        broker.ownDurable(Array(ids.dropFirst(10)))
        broker.flushOwn()
        for l in links {
            let acks = l.takeAcks()
            #expect(acks.map(\.revisions.count) == [AckBroker.batch, 1])
            #expect(acks.flatMap(\.revisions) == ids)
            #expect(acks.allSatisfy { $0.node == key.publicKey && $0.isValid })
        }
        // Flushed once: the next tick has nothing to ack.
        broker.flushOwn()
        #expect(links.allSatisfy { $0.sent.isEmpty })
    }

    @Test func aRunIsAckedToItsSenderAndAnEchoFromALinkOlderThanTheAckCostsNoSecondOne() {
        let early = PeerLinkDouble()
        let other = PeerLinkDouble()
        for l in [early, other] { broker.linkAuthenticated(l) }
        let ids = Self.revisions(2)
        broker.ack(ids, echoedBy: early, brought: ids)
        #expect(early.takeAcks().map(\.revisions) == [ids])
        #expect(other.sent.isEmpty)
        broker.ack(ids, echoedBy: other)
        #expect(other.sent.isEmpty)
        // A link that authenticated after the ack: its echo acks again, to it (it may lead to nodes that missed it).
        let late = PeerLinkDouble()
        broker.linkAuthenticated(late)
        broker.ack([ids[0]], echoedBy: late)
        #expect(late.takeAcks().map(\.revisions) == [[ids[0]]])
        #expect(early.sent.isEmpty && other.sent.isEmpty)
        // Without a sender, held revisions are acked again, to every link.
        broker.ack([ids[1]])
        for l in [early, other, late] { #expect(l.takeAcks().map(\.revisions) == [[ids[1]]]) }
    }

    /// Gives `ids` the route `link`, as a run that first brought them would, and forgets the ack that sent.
    func route(_ ids: [RevisionID], via link: PeerLinkDouble) {
        broker.ack(ids, echoedBy: link, brought: ids)
        _ = link.takeAcks()
    }

    @Test func anAckIsRecordedOnceAndForwardedAlongTheRouteOfItsRevisionsOnly() {
        let acker = SigningKeyPair.generate()
        let from = PeerLinkDouble(node: acker.publicKey)
        let upstream = PeerLinkDouble()
        let aside = PeerLinkDouble()
        for l in [from, upstream, aside] { broker.linkAuthenticated(l) }
        route(Self.revisions(3), via: upstream)
        let ack = Message.Ack.signed(by: acker, revisions: Self.revisions(3))
        broker.received(ack, from: from)
        broker.received(ack, from: aside)
        #expect(book.replicas.map(\.0) == [acker.publicKey])
        #expect(book.replicas.first?.1 == ack.revisions)
        #expect(upstream.takeAcks() == [ack])
        #expect(from.sent.isEmpty && aside.sent.isEmpty)
        // A revision not held here has no route: its ack ends here, counted.
        broker.received(.signed(by: acker, revisions: [BLAKE2b.hash(Array("elsewhere".utf8))]), from: from)
        #expect(book.replicas.count == 2)
        #expect([from, upstream, aside].allSatisfy { $0.sent.isEmpty })
    }

    @Test func anAckOfARevisionMadeHereGoesOnToEveryOtherLink() {
        let own = BLAKE2b.hash(Array("own".utf8))
        let author = AckBrokerTests(stored: [own])
        let acker = SigningKeyPair.generate()
        let links = [PeerLinkDouble(node: acker.publicKey), PeerLinkDouble(), PeerLinkDouble()]
        for l in links { author.broker.linkAuthenticated(l) }
        let ack = Message.Ack.signed(by: acker, revisions: [own])
        author.broker.received(ack, from: links[0])
        #expect(author.book.replicas.map(\.0) == [acker.publicKey])
        #expect(links[0].sent.isEmpty)
        for l in links.dropFirst() { #expect(l.takeAcks() == [ack]) }
    }

    @Test func aConnectedNodeCountsAndSoDoesOneInThePeerTable() {
        let connected = SigningKeyPair.generate()
        let stranger = SigningKeyPair.generate()
        let inTable = AckBrokerTests(known: [stranger.publicKey])
        // The acking node itself is connected here (its key signs for it), not in the table.
        let direct = PeerLinkDouble(node: connected.publicKey)
        broker.linkAuthenticated(direct)
        broker.received(.signed(by: connected, revisions: Self.revisions(1)), from: direct)
        #expect(book.replicas.map(\.0) == [connected.publicKey])
        inTable.broker.received(.signed(by: stranger, revisions: Self.revisions(1)), from: nil)
        #expect(inTable.book.replicas.map(\.0) == [stranger.publicKey])
    }

    @Test func anAckFromAnUnknownNodeIsForwardedButNotCounted() {
        let from = PeerLinkDouble()
        let other = PeerLinkDouble()
        for l in [from, other] { broker.linkAuthenticated(l) }
        route(Self.revisions(1), via: other)
        let ack = Message.Ack.signed(by: .generate(), revisions: Self.revisions(1))
        broker.received(ack, from: from)
        #expect(book.replicas.isEmpty)
        #expect(other.takeAcks() == [ack])
    }

    @Test func forgedAndOwnAcksEndHere() {
        let from = PeerLinkDouble()
        let other = PeerLinkDouble()
        for l in [from, other] { broker.linkAuthenticated(l) }
        route(Self.revisions(1), via: other)
        let acker = SigningKeyPair.generate()
        var forged = Message.Ack.signed(by: acker, revisions: Self.revisions(1))
        forged.revisions = Self.revisions(2)
        broker.received(forged, from: from)
        broker.received(.signed(by: key, revisions: Self.revisions(1)), from: from)
        #expect(book.replicas.isEmpty)
        #expect(other.sent.isEmpty)
        // The forgery's signature was not remembered: the genuine ack with it still counts.
        broker.received(.signed(by: acker, revisions: Self.revisions(1)), from: from)
        #expect(other.takeAcks().count == 1)
    }

    @Test func anEndedLinkIsSentNothing() {
        let gone = PeerLinkDouble()
        let stays = PeerLinkDouble()
        for l in [gone, stays] { broker.linkAuthenticated(l) }
        route(Self.revisions(1), via: gone)
        broker.linkEnded(gone)
        broker.ack(Self.revisions(2))
        broker.received(.signed(by: .generate(), revisions: Self.revisions(1)), from: nil)
        #expect(gone.sent.isEmpty)
        #expect(stays.takeAcks().count == 1)
    }

    @Test func arrivalIsCheckedOffTheCallersThread() {
        let from = PeerLinkDouble()
        let other = PeerLinkDouble()
        for l in [from, other] { broker.linkAuthenticated(l) }
        route(Self.revisions(1), via: other)
        let ack = Message.Ack.signed(by: .generate(), revisions: Self.revisions(1))
        broker.arrived(ack, from: from)
        broker.queue.sync {}
        broker.arrived(ack, from: from)
        broker.queue.sync {}
        #expect(other.takeAcks() == [ack])
    }
}
