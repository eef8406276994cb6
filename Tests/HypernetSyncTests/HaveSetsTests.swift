import HypernetCrypto
import HypernetModel
import Testing

@testable import HypernetSync

/// Have-sets on both sides (docs/protocol.md, "Have-sets"): what a fetching node accepts from its peers
/// (`HaveSets`), and what a serving node tells them (`Announcements`). No socket.
@Suite struct HaveSetsTests {
    static func chunks(_ n: Int) -> [ChunkID] { (0..<n).map { BLAKE2b.hash([UInt8($0 & 0xff), UInt8($0 >> 8)]) } }

    /// A fetch of `c` announced to one peer.
    static func announced(_ c: [ChunkID]) -> (HaveSets, Digest, PeerLinkDouble) {
        let haves = HaveSets()
        let swarm = HaveSets.newSwarm()
        let peer = PeerLinkDouble()
        haves.open(swarm, ids: c)
        haves.tell(swarm, to: peer)
        return (haves, swarm, peer)
    }

    @Test func aHaveAndItsGotsMakeThePeersHoldings() {
        let c = Self.chunks(10)
        let (haves, swarm, peer) = Self.announced(c)
        #expect(peer.take() == [.interest(swarm: swarm, ids: c)])
        haves.tell(swarm, to: peer)
        #expect(peer.take().isEmpty, "told once")
        #expect(haves.held(swarm, at: ObjectIdentifier(peer)) == nil)
        #expect(haves.have(swarm, bits: [0b0000_0101, 0b10], from: peer) == nil)
        #expect(haves.held(swarm, at: ObjectIdentifier(peer)) == [c[0], c[2], c[9]])
        #expect(haves.got(swarm, indexes: [3], from: peer) == nil)
        #expect(haves.held(swarm, at: ObjectIdentifier(peer)) == [c[0], c[2], c[3], c[9]])
        haves.close(swarm)
        #expect(peer.take() == [.interest(swarm: swarm, ids: [])])
    }

    @Test func aMalformedHaveOrGotIsAnErrorAndChangesNothing() {
        let (haves, swarm, peer) = Self.announced(Self.chunks(10))
        // Ten ids take two bytes; bits past the tenth must be zero; positions stop at 9.
        #expect(haves.have(swarm, bits: [0xff], from: peer) != nil)
        #expect(haves.have(swarm, bits: [0xff, 0xff, 0], from: peer) != nil)
        #expect(haves.have(swarm, bits: [0, 0b100], from: peer) != nil)
        #expect(haves.got(swarm, indexes: [10], from: peer) != nil)
        #expect(haves.held(swarm, at: ObjectIdentifier(peer)) == nil)
    }

    @Test func aHaveForASwarmOverOrNeverToldIsDropped() {
        let haves = HaveSets()
        let peer = PeerLinkDouble()
        let swarm = HaveSets.newSwarm()
        #expect(haves.have(swarm, bits: [1], from: peer) == nil)
        #expect(haves.got(swarm, indexes: [40], from: peer) == nil)
        haves.open(swarm, ids: Self.chunks(3))
        // Not told to this peer: its answer is not one.
        #expect(haves.have(swarm, bits: [1], from: peer) == nil)
        #expect(haves.held(swarm, at: ObjectIdentifier(peer)) == nil)
    }

    @Test func theAnswerHoldsWhatIsHereAndGotsFollowArrivals() {
        let c = Self.chunks(10)
        var table = Announcements<Int>()
        let swarm = HaveSets.newSwarm()
        let bits = table.interest(swarm, ids: c, from: 1, held: { $0 == c[1] || $0 == c[8] }, now: 0)
        #expect(bits == [0b10, 0b1])
        let gots = table.arrived([c[8], c[4], c[4]], now: 0)
        #expect(gots == [1: [swarm: [4]]], "told once, and never what the answer said")
        table.end(swarm, of: 1)
        #expect(table.arrived([c[5]], now: 0).isEmpty)
    }

    @Test func aPeerWithTooManyInterestsLosesItsOldest() {
        let c = Self.chunks(20)
        var table = Announcements<Int>()
        let swarms = (0...Announcements<Int>.maximumInterests).map { _ in HaveSets.newSwarm() }
        for s in swarms { _ = table.interest(s, ids: c, from: 1, held: { _ in false }, now: 0) }
        let gots = table.arrived([c[0]], now: 0)
        #expect(gots[1]?.count == Announcements<Int>.maximumInterests)
        #expect(gots[1]?[swarms[0]] == nil)
        // A peer's ids in all are bounded too: one list past the bound takes only its first ids.
        let big = Self.chunks(Announcements<Int>.maximumIds + 5)
        var other = Announcements<Int>()
        let s = HaveSets.newSwarm()
        #expect(other.interest(s, ids: big, from: 2, held: { _ in false }, now: 0).count == (big.count + 7) / 8)
        #expect(other.arrived([big.last!], now: 0).isEmpty && other.arrived([big[0]], now: 0) == [2: [s: [0]]])
    }
}
