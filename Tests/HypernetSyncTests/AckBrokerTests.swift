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
        private let recorded = Mutex<[(SigningPublicKey, [RevisionID])]>([])
        init(known: Set<SigningPublicKey> = []) { self.known = known }
        var replicas: [(SigningPublicKey, [RevisionID])] { recorded.withLock { $0 } }
        func recordReplicas(node: SigningPublicKey, revisions: [RevisionID]) {
            recorded.withLock { $0.append((node, revisions)) }
        }
        func knowsNode(_ node: SigningPublicKey) -> Bool { known.contains(node) }
    }

    let key = SigningKeyPair.generate()
    let book: Book
    let broker: AckBroker

    init(known: Set<SigningPublicKey> = []) {
        book = Book(known: known)
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

    @Test func anEchoFromALinkThatWasSentTheAckCostsNoSecondOne() {
        let early = PeerLinkDouble()
        broker.linkAuthenticated(early)
        let ids = Self.revisions(2)
        broker.ack(ids)
        #expect(early.takeAcks().map(\.revisions) == [ids])
        broker.ack(ids, echoedBy: early)
        #expect(early.sent.isEmpty)
        // A link that authenticated after the ack was never sent it: its echo acks again, to everyone.
        let late = PeerLinkDouble()
        broker.linkAuthenticated(late)
        broker.ack([ids[0]], echoedBy: late)
        #expect(early.takeAcks().map(\.revisions) == [[ids[0]]])
        #expect(late.takeAcks().map(\.revisions) == [[ids[0]]])
        // Without a sender, held revisions are acked again (how acks lost while nodes were apart reach them).
        broker.ack([ids[1]])
        #expect(early.takeAcks().map(\.revisions) == [[ids[1]]])
    }

    @Test func anAckIsRecordedOnceAndForwardedToEveryOtherLink() {
        let acker = SigningKeyPair.generate()
        let from = PeerLinkDouble(node: acker.publicKey)
        let others = [PeerLinkDouble(), PeerLinkDouble()]
        for l in [from] + others { broker.linkAuthenticated(l) }
        let ack = Message.Ack.signed(by: acker, revisions: Self.revisions(3))
        broker.received(ack, from: from)
        broker.received(ack, from: others[0])
        #expect(book.replicas.map(\.0) == [acker.publicKey])
        #expect(book.replicas.first?.1 == ack.revisions)
        #expect(from.sent.isEmpty)
        for l in others { #expect(l.takeAcks() == [ack]) }
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
        let ack = Message.Ack.signed(by: .generate(), revisions: Self.revisions(1))
        broker.received(ack, from: from)
        #expect(book.replicas.isEmpty)
        #expect(other.takeAcks() == [ack])
    }

    @Test func forgedAndOwnAcksEndHere() {
        let from = PeerLinkDouble()
        let other = PeerLinkDouble()
        for l in [from, other] { broker.linkAuthenticated(l) }
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
        broker.linkEnded(gone)
        broker.ack(Self.revisions(1))
        broker.received(.signed(by: .generate(), revisions: Self.revisions(1)), from: nil)
        #expect(gone.sent.isEmpty)
        #expect(stays.takeAcks().count == 2)
    }

    @Test func arrivalIsCheckedOffTheCallersThread() {
        let from = PeerLinkDouble()
        let other = PeerLinkDouble()
        for l in [from, other] { broker.linkAuthenticated(l) }
        let ack = Message.Ack.signed(by: .generate(), revisions: Self.revisions(1))
        broker.arrived(ack, from: from)
        broker.queue.sync {}
        broker.arrived(ack, from: from)
        broker.queue.sync {}
        #expect(other.takeAcks() == [ack])
    }
}
