import HypernetCrypto
import Testing

@testable import HypernetStore
@testable import HypernetSync

/// The dial schedule alone: the peer table is given as rows and time as numbers, no socket is opened.
@Suite struct DialerTests {
    static func row(_ address: String, node: String? = nil) -> PeerRecord {
        PeerRecord(address: address, node: node, configured: true, lastSeen: nil, lastError: nil)
    }

    let dialer = Dialer()
    let a = "127.0.0.1:7001"
    let b = "127.0.0.1:7002"

    @Test func anAddressIsDialedOnceAtATime() {
        #expect(dialer.due([Self.row(a), Self.row(b)], open: [], connected: [], now: 0) == [a, b])
        #expect(dialer.due([Self.row(a), Self.row(b)], open: [], connected: [], now: 100).isEmpty)
    }

    @Test func failuresBackOffFromHalfASecondDoublingUpToThirtySeconds() {
        var now = 1000.0
        #expect(dialer.due([Self.row(a)], open: [], connected: [], now: now) == [a])
        for (i, delay) in [0.5, 1, 2, 4, 8, 16, 30, 30].enumerated() {
            #expect(dialer.failed(a, now: now) == (i == 0))
            #expect(dialer.due([Self.row(a)], open: [], connected: [], now: now + delay - 0.1).isEmpty)
            #expect(dialer.due([Self.row(a)], open: [], connected: [], now: now + delay) == [a])
            now += delay
        }
    }

    @Test func anAnswerStartsTheBackOffOver() {
        _ = dialer.due([Self.row(a)], open: [], connected: [], now: 0)
        for t in 0..<5 { dialer.failed(a, now: Double(t)) }
        dialer.answered(a, on: PeerLinkDouble())
        #expect(dialer.due([Self.row(a)], open: [], connected: [], now: 0) == [a])
        #expect(dialer.failed(a, now: 0))
        #expect(dialer.due([Self.row(a)], open: [], connected: [], now: 0.5) == [a])
        // An answer on a connection that has ended since (and backed off) changes nothing.
        let ended = PeerLinkDouble()
        ended.close("gone")
        dialer.failed(a, now: 0.5)
        dialer.answered(a, on: ended)
        #expect(dialer.due([Self.row(a)], open: [], connected: [], now: 1.4).isEmpty)
    }

    @Test func dialsInProgressCountAgainstTheLimitsOfTheirKind() {
        let c = "127.0.0.1:7003"
        let learned = [a, b].map {
            PeerRecord(address: $0, node: nil, configured: false, lastSeen: nil, lastError: nil)
        }
        let limits = Dialer.Limits(configured: 2, learned: 1)
        #expect(dialer.due([Self.row(c)] + learned, open: [], connected: [], now: 0, limits: limits) == [c])
        // The dial of c made a connection: it no longer counts, and one learned address is dialed.
        #expect(dialer.due(learned, open: [c], connected: [], now: 0, limits: limits) == [a])
    }

    @Test func ownOpenAndConnectedAddressesAreNotDialed() {
        let node = "ab12"
        let c = "127.0.0.1:7003"
        dialer.reachedSelf(at: a)
        let rows = [Self.row(a), Self.row(b), Self.row(c, node: node)]
        #expect(dialer.due(rows, open: [b], connected: [node], now: 0).isEmpty)
        #expect(dialer.due(rows, open: [], connected: [], now: 0) == [b, c])
    }

    @Test func anAddressLeavingThePeerTableLosesItsScheduleUnlessBeingDialed() {
        _ = dialer.due([Self.row(a), Self.row(b)], open: [], connected: [], now: 0)
        dialer.failed(a, now: 0)
        dialer.failed(a, now: 0)
        // `a` (backing off) leaves the table and comes back: dialed at once. `b` (being dialed) is kept as such.
        _ = dialer.due([], open: [], connected: [], now: 0)
        #expect(dialer.due([Self.row(a), Self.row(b)], open: [], connected: [], now: 0) == [a])
        dialer.forget(b)
        #expect(dialer.due([Self.row(b)], open: [], connected: [], now: 0) == [b])
    }

    @Test func removedAddressesAndNodesAreRefused() {
        let key = SigningKeyPair.generate().publicKey
        dialer.setRemoved([Self.row(a, node: Hex.encode(key.bytes))])
        #expect(dialer.isRemoved(address: a))
        #expect(!dialer.isRemoved(address: b))
        #expect(dialer.isRemoved(node: key))
        #expect(!dialer.isRemoved(node: SigningKeyPair.generate().publicKey))
        dialer.setRemoved([])
        #expect(!dialer.isRemoved(address: a) && !dialer.isRemoved(node: key))
    }
}
