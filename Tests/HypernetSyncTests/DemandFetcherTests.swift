import Dispatch
import Glibc
import HypernetCrypto
import HypernetModel
import Synchronization
import Testing

@testable import HypernetStore
@testable import HypernetSync

/// Content on demand over simulated peers: each link answers an `interest` with its have-set and a `want` from its
/// own holdings, through the shared `HaveSets` and `ChunkFetcher`, as the sync node's handlers would; no store or
/// socket is involved.
@Suite struct DemandFetcherTests {
    /// A peer holding `holds` (`claims`: what its have-sets say, by default the same): it answers each `interest` at
    /// once, and each asked id after `delay`, with the chunk or "not held"; `paced`, one id after another, each
    /// `delay` after the one before (a link's queue).
    final class Peer: PeerLink {
        let node: SigningPublicKey? = SigningKeyPair.generate().publicKey
        let holds: Set<ChunkID>
        let claims: Set<ChunkID>
        let delay: DispatchTimeInterval
        let paced: Bool
        let fetcher: ChunkFetcher
        let haves: HaveSets
        private let state = Mutex((wants: [[ChunkID]](), swarms: [Digest](), closed: false))
        /// Its own thread: the blocked fetches of the other tests must not delay its answers.
        private let queue = DispatchQueue(label: "peer")

        init(
            _ holds: Set<ChunkID>, claims: Set<ChunkID>? = nil, fetcher: ChunkFetcher, haves: HaveSets,
            delay: DispatchTimeInterval = .milliseconds(1), paced: Bool = false
        ) {
            self.holds = holds
            self.paced = paced
            self.claims = claims ?? holds
            self.fetcher = fetcher
            self.haves = haves
            self.delay = delay
        }
        var isEnded: Bool { state.withLock { $0.closed } }
        var wants: [[ChunkID]] { state.withLock { $0.wants } }
        /// The `interest`s with ids it was sent.
        var interests: Int { state.withLock { $0.swarms.count } }
        /// The swarm of the last `interest`.
        var swarm: Digest? { state.withLock { $0.swarms.last } }
        func close(_ reason: String) { state.withLock { $0.closed = true } }
        func send(_ message: Message) {
            switch message {
            case .interest(let swarm, let ids) where !ids.isEmpty:
                state.withLock { $0.swarms.append(swarm) }
                var set = [UInt8](repeating: 0, count: (ids.count + 7) / 8)
                for (i, id) in ids.enumerated() where claims.contains(id) { set[i >> 3] |= 1 << (i & 7) }
                let bits = set
                queue.async { [self] in
                    #expect(haves.have(swarm, bits: bits, from: self) == nil)
                }
            case .want(let ids):
                state.withLock { $0.wants.append(ids) }
                let answer: @Sendable (ChunkID) -> Void = { [self] id in
                    fetcher.answered(id, by: self, holds.contains(id) ? .held(location(id)) : .notHeld)
                }
                guard paced else {
                    queue.asyncAfter(deadline: .now() + delay) { ids.forEach(answer) }
                    return
                }
                queue.async { [delay] in
                    for id in ids {
                        _ = DispatchSemaphore(value: 0).wait(timeout: .now() + delay)
                        answer(id)
                    }
                }
            default: break
            }
        }
    }

    static func location(_ id: ChunkID) -> ChunkLocation { ChunkLocation(id: id, pack: 1, offset: 8, length: 100) }
    static func chunk(_ n: UInt8) -> ChunkID { BLAKE2b.hash([n]) }

    let fetcher = ChunkFetcher()
    let haves = HaveSets()

    @Test func asksOnlyThePeersWhoseHaveSetsHoldTheChunks() {
        let (a, b) = (Self.chunk(1), Self.chunk(2))
        let empty = Peer([], fetcher: fetcher, haves: haves)
        let holder = Peer([a, b], fetcher: fetcher, haves: haves)
        let demand = DemandFetcher(fetcher: fetcher, haves: haves, timeout: .seconds(10))
        let found = demand.fetch([a, b]) { [empty, holder] }
        #expect(Set(found.map(\.id)) == [a, b])
        #expect(empty.interests >= 1 && empty.wants.isEmpty)
        #expect(Set(holder.wants.flatMap { $0 }) == [a, b])
    }

    @Test func aHaveSetThatClaimsTooMuchCostsANotHeldAnswerAndTheOtherHolderServes() {
        let a = Self.chunk(7)
        let liar = Peer([], claims: [a], fetcher: fetcher, haves: haves)
        let holder = Peer([a], fetcher: fetcher, haves: haves, delay: .milliseconds(50))
        let demand = DemandFetcher(fetcher: fetcher, haves: haves, timeout: .seconds(10))
        #expect(demand.fetch([a]) { [liar, holder] } == [Self.location(a)])
    }

    @Test func aPeerThatGetsAChunkDuringTheFetchSaysSoAndIsAsked() {
        let a = Self.chunk(8)
        let later = Peer([a], claims: [], fetcher: fetcher, haves: haves)
        let demand = DemandFetcher(fetcher: fetcher, haves: haves, timeout: .seconds(10))
        let haves = haves
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(100)) {
            #expect(haves.got(later.swarm!, indexes: [0], from: later) == nil)
        }
        #expect(demand.fetch([a]) { [later] } == [Self.location(a)])
        #expect(later.wants == [[a]])
    }

    @Test func manyChunksComeFromEveryPeerThatHoldsThem() {
        let ids = (0..<64).map { Self.chunk(UInt8(100 + $0)) }
        let peers = (0..<3).map { _ in Peer(Set(ids), fetcher: fetcher, haves: haves) }
        // No re-issue after a timeout: on a loaded machine (the whole unit suite on 2 cores) a request can wait past
        // the default 5 s, and its re-issue is another test's subject.
        let demand = DemandFetcher(fetcher: fetcher, haves: haves, timeout: .seconds(10), window: 4, reissueAfter: 3600)
        let found = demand.fetch(ids) { peers }
        #expect(Set(found.map(\.id)) == Set(ids))
        for p in peers { #expect(!p.wants.isEmpty) }
        // No chunk asked twice: every peer answered, so there was no end game beyond the last few.
        #expect(peers.flatMap { $0.wants.flatMap { $0 } }.count <= ids.count + 3 * 4)
    }

    @Test func aPeerThatVanishesMidFetchHasItsRequestsReissued() {
        let ids = (0..<16).map { Self.chunk(UInt8(200 + $0)) }
        let gone = Peer(Set(ids), fetcher: fetcher, haves: haves, delay: .seconds(3600))
        let holder = Peer(Set(ids), fetcher: fetcher, haves: haves)
        let demand = DemandFetcher(fetcher: fetcher, haves: haves, timeout: .seconds(10), window: 4)
        let fetcher = fetcher
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(200)) {
            gone.close("killed")
            fetcher.sessionEnded(gone)
        }
        let found = demand.fetch(ids) { [gone, holder] }
        #expect(Set(found.map(\.id)) == Set(ids))
        #expect(!gone.wants.isEmpty)
    }

    @Test func concurrentReadsOfOneChunkWaitForOneFetch() {
        let a = Self.chunk(3)
        let slow = Peer([a], fetcher: fetcher, haves: haves, delay: .milliseconds(300))
        let demand = DemandFetcher(fetcher: fetcher, haves: haves, timeout: .seconds(10))
        let results = Mutex<[[ChunkLocation]]>([])
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            let found = demand.fetch([a]) { [slow] }
            results.withLock { $0.append(found) }
        }
        #expect(results.withLock { $0 } == Array(repeating: [Self.location(a)], count: 4))
        #expect(slow.wants == [[a]])
    }

    @Test func givesUpAfterTheTimeoutWhenNoPeerSendsIt() {
        let a = Self.chunk(4)
        let empty = Peer([], fetcher: fetcher, haves: haves)
        let demand = DemandFetcher(fetcher: fetcher, haves: haves, timeout: .milliseconds(600))
        let start = DispatchTime.now()
        let found = demand.fetch([a]) { [empty] }
        #expect(found.isEmpty)
        #expect(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds >= 600_000_000)
        // Told again while the timeout ran: a peer may get the chunk meanwhile.
        #expect(empty.interests > 1 && empty.wants.isEmpty)
    }

    /// The regression: a read of content held on demand failed with EIO on a slow link, its chunk queued at the peer
    /// behind a readahead's for longer than the fetch timeout although the queue moved.
    @Test func aReadQueuedBehindAReadaheadOutlastsTheTimeoutWhileThePeerAnswers() {
        let ids = (0..<10).map { Self.chunk(UInt8(60 + $0)) }
        let link = Peer(Set(ids), fetcher: fetcher, haves: haves, delay: .milliseconds(80), paced: true)
        let demand = DemandFetcher(fetcher: fetcher, haves: haves, timeout: .milliseconds(300))
        let readahead = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            _ = demand.fetch(Array(ids.dropLast())) { [link] }
            readahead.signal()
        }
        usleep(50_000)
        // Nine answers of 80 ms ahead of it: about 800 ms, past the 300 ms timeout.
        let found = demand.fetch([ids.last!]) { [link] }
        readahead.wait()
        #expect(found.map(\.id) == [ids.last!])
    }

    @Test func withIdleTheFetchOutlastsTheTimeoutWhileChunksArriveAndEndsWhenNotGoing() {
        let ids = (0..<20).map { Self.chunk(UInt8(30 + $0)) }
        let slow = Peer(Set(ids), fetcher: fetcher, haves: haves, delay: .milliseconds(150))
        // 16 requests in flight at most: two answers of 150 ms each, past the 100 ms timeout.
        let demand = DemandFetcher(fetcher: fetcher, haves: haves, timeout: .milliseconds(100))
        let found = demand.fetch(ids, idle: .seconds(5)) { [slow] }
        #expect(Set(found.map(\.id)) == Set(ids))
        let other = Self.chunk(29)
        let start = DispatchTime.now()
        #expect(demand.fetch([other], idle: .seconds(5), while: { false }, from: { [slow] }).isEmpty)
        #expect(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds < 1_000_000_000)
    }

    @Test func aPeerThatConnectsDuringTheWaitIsAsked() {
        let a = Self.chunk(5)
        let holder = Peer([a], fetcher: fetcher, haves: haves)
        let start = DispatchTime.now()
        let demand = DemandFetcher(fetcher: fetcher, haves: haves, timeout: .seconds(10))
        let found = demand.fetch([a]) {
            DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds > 400_000_000 ? [holder] : []
        }
        #expect(found == [Self.location(a)])
    }

    @Test func aClosedOrUnauthenticatedLinkIsNotAsked() {
        let a = Self.chunk(6)
        let closed = Peer([a], fetcher: fetcher, haves: haves)
        closed.close("gone")
        let demand = DemandFetcher(fetcher: fetcher, haves: haves, timeout: .milliseconds(300))
        #expect(demand.fetch([a]) { [closed] }.isEmpty)
        #expect(closed.wants.isEmpty)
    }
}
