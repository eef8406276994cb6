import HypernetCrypto
import Testing

@testable import HypernetStore
@testable import HypernetSync

/// The peer set alone (docs/protocol.md, "Peer set"): links are doubles, the peer table is given as rows.
@Suite struct PeerSetTests {
    let own = SigningKeyPair.generate().publicKey
    let t = SigningKeyPair.generate().publicKey
    let u = SigningKeyPair.generate().publicKey

    static func row(_ address: String, configured: Bool = false) -> PeerRecord {
        PeerRecord(address: address, node: nil, configured: configured, lastSeen: nil, lastError: nil)
    }

    /// A link accepted from a peer, authenticated, whose `hello` offered `trees`.
    func accepted(
        _ set: PeerSet, offering trees: [SigningPublicKey], followed: Set<SigningPublicKey>? = nil
    ) -> (PeerLinkDouble, PeerSet.Admission, PeerSet.Decision) {
        let link = PeerLinkDouble()
        #expect(set.opened(link, initiator: false, ip: "127.0.0.1", dialed: nil) == nil)
        let (admission, close) = set.authenticated(link)
        #expect(close == nil)
        return (link, admission, set.offered(trees, listen: "", by: link, followed: followed ?? [t]))
    }

    func isRefused(_ decision: PeerSet.Decision) -> Bool {
        if case .refuse = decision { return true }
        return false
    }

    @Test func peersPastTheCapWaitAndAreRefusedWhenTheyAddNoFollowedTree() {
        let set = PeerSet(own: own, maxPeers: 2)
        let (a, first, _) = accepted(set, offering: [t])
        let (_, second, _) = accepted(set, offering: [t])
        let (c, third, decision) = accepted(set, offering: [t, u])
        #expect([first, second, third] == [.kept, .kept, .waiting])
        #expect(isRefused(decision))
        #expect(set.keptCount == 2 && set.isKept(a) && !set.isKept(c))
        // A peer that leaves makes room for the next.
        set.ended(a)
        let (_, fourth, _) = accepted(set, offering: [t])
        #expect(fourth == .kept && set.keptCount == 2)
    }

    @Test func aPeerOfferingAnUncoveredTreeReplacesTheNewestPeerWhoseTreesHaveAnotherSource() {
        let set = PeerSet(own: own, maxPeers: 2)
        let (a, _, _) = accepted(set, offering: [t], followed: [t, u])
        let (b, _, _) = accepted(set, offering: [t], followed: [t, u])
        let (c, admission, decision) = accepted(set, offering: [u], followed: [t, u])
        #expect(admission == .waiting)
        guard case .keep(admitted: true, let evicting) = decision else {
            Issue.record("\(decision)")
            return
        }
        #expect(evicting === b)
        #expect(set.isKept(a) && set.isKept(c) && !set.isKept(b))
        // Now a is the only source of t and c of u: nobody makes room for a third source of either.
        let (_, _, again) = accepted(set, offering: [t, u], followed: [t, u])
        #expect(isRefused(again))
    }

    @Test func aPeerDialedAtAConfiguredAddressIsNeverEvicted() {
        let set = PeerSet(own: own, maxPeers: 1)
        let address = "127.0.0.1:7001"
        _ = set.dialPlan([Self.row(address, configured: true)], followed: [t, u])
        let dialed = PeerLinkDouble()
        #expect(set.opened(dialed, initiator: true, ip: "127.0.0.1", dialed: address) == nil)
        #expect(set.authenticated(dialed).0 == .kept)
        _ = set.offered([t], listen: address, by: dialed, followed: [t, u])
        let (_, admission, decision) = accepted(set, offering: [u], followed: [t, u])
        #expect(admission == .waiting && isRefused(decision) && set.isKept(dialed))
    }

    @Test func ofTwoConnectionsBetweenTheSameNodesTheOneOpenedByTheSmallerKeyIsKept() {
        let set = PeerSet(own: own, maxPeers: 4)
        let peer = SigningKeyPair.generate().publicKey
        let dialed = PeerLinkDouble(node: peer)
        let accepted = PeerLinkDouble(node: peer)
        #expect(set.opened(dialed, initiator: true, ip: nil, dialed: "127.0.0.1:7001") == nil)
        #expect(set.opened(accepted, initiator: false, ip: nil, dialed: nil) == nil)
        #expect(set.authenticated(dialed).0 == .kept)
        let (admission, close) = set.authenticated(accepted)
        // The accepted one was opened by the peer: kept if the peer's key is the smaller.
        if peer.bytes.lexicographicallyPrecedes(own.bytes) {
            #expect(admission == .kept && close === dialed)
        } else {
            #expect(admission == .duplicate && close === accepted)
        }
        #expect(set.keptCount == 1 && set.connectedNodes == [Hex.encode(peer.bytes)])
    }

    @Test func learnedAddressesAreDialedUpToHalfTheCapConfiguredOnesUpToTheCap() {
        let set = PeerSet(own: own, maxPeers: 4)
        let rows = [Self.row("127.0.0.1:7001"), Self.row("127.0.0.1:7002", configured: true)]
        let plan = set.dialPlan(rows, followed: [])
        #expect(plan.records.map(\.address) == ["127.0.0.1:7002", "127.0.0.1:7001"])
        #expect(plan.limits == Dialer.Limits(configured: 4, learned: 2))
        for _ in 0..<3 { _ = accepted(set, offering: [t]) }
        #expect(set.dialPlan(rows, followed: [t]).limits == Dialer.Limits(configured: 1, learned: 0))
    }

    @Test func whileAFollowedTreeHasNoSourceAddressesKnownToOfferItAreDialedFirstUpToTheCap() {
        let set = PeerSet(own: own, maxPeers: 4)
        let offersT = "127.0.0.1:7001"
        let offersU = "127.0.0.1:7002"
        let unknown = "127.0.0.1:7003"
        for (address, tree) in [(offersT, t), (offersU, u)] {
            let link = PeerLinkDouble()
            _ = set.opened(link, initiator: false, ip: nil, dialed: nil)
            _ = set.authenticated(link)
            _ = set.offered([tree], listen: address, by: link, followed: [t])
            set.ended(link)
        }
        for _ in 0..<2 { _ = accepted(set, offering: [t]) }
        let rows = [Self.row(offersT), Self.row(unknown), Self.row(offersU)]
        let plan = set.dialPlan(rows, followed: [t, u])
        // Two peers kept, u has no source: dial up to the cap, never the address known to offer only t.
        #expect(plan.records.map(\.address) == [offersU, unknown])
        #expect(plan.limits == Dialer.Limits(configured: 2, learned: 2))
        // Once u is covered, two kept peers are enough: learned addresses wait.
        _ = accepted(set, offering: [u], followed: [t, u])
        #expect(set.dialPlan(rows, followed: [t, u]).limits.learned == 0)
    }
}
