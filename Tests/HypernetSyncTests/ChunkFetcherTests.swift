import Dispatch
import HypernetCrypto
import HypernetModel
import Testing

@testable import HypernetStore
@testable import HypernetSync

/// One chunk asked of two links (the end game of a multi-source fetch): the answers of both are answers, the first
/// copy wins, and "not held" from one fails the chunk only once the other answered too.
@Suite struct ChunkFetcherTests {
    let fetcher = ChunkFetcher()
    let id = BLAKE2b.hash([42])
    let location = ChunkLocation(id: BLAKE2b.hash([42]), pack: 1, offset: 8, length: 100)

    @Test func aChunkAskedOfTwoLinksFailsOnlyWhenBothLackIt() {
        let (a, b) = (PeerLinkDouble(), PeerLinkDouble())
        let wake = DispatchSemaphore(value: 0)
        fetcher.request([id], via: a, waking: wake)
        fetcher.request([id], via: b, again: [id], waking: wake)
        #expect(fetcher.isRequested(id, by: a) && fetcher.isRequested(id, by: b))
        fetcher.answered(id, by: a, .notHeld)
        #expect(!fetcher.isRequested(id, by: a))
        #expect(fetcher.poll([(id, a)]).unanswered.isEmpty, "b still may send it")
        fetcher.answered(id, by: b, .notHeld)
        #expect(fetcher.poll([(id, a), (id, b)]).unanswered.count == 2)
        fetcher.release([id, id])
    }

    @Test func theFirstCopyWinsAndTheLateAnswerIsStillAnAnswer() {
        let (a, b) = (PeerLinkDouble(), PeerLinkDouble())
        let wake = DispatchSemaphore(value: 0)
        fetcher.request([id], via: a, waking: wake)
        fetcher.request([id], via: b, again: [id], waking: wake)
        fetcher.answered(id, by: b, .held(location))
        #expect(!fetcher.claim(id, by: a))
        // a's answer comes later: asked, so not an unasked chunk (which would close a "not held" sender).
        #expect(fetcher.isRequested(id, by: a))
        fetcher.answered(id, by: a, .notHeld)
        #expect(fetcher.poll([(id, a)]).arrived == [location])
        #expect(fetcher.release([id, id]) == [id: location])
    }

    @Test func aCopyArrivingWhileAnotherIsStoredIsDroppedAndABadOneLeavesTheChunkWanted() {
        let (a, b) = (PeerLinkDouble(), PeerLinkDouble())
        let wake = DispatchSemaphore(value: 0)
        fetcher.request([id], via: a, waking: wake)
        fetcher.request([id], via: b, again: [id], waking: wake)
        #expect(fetcher.claim(id, by: a))
        #expect(!fetcher.claim(id, by: b), "a's copy is being stored: b's is a duplicate")
        fetcher.answered(id, by: b, .notHeld)
        // a's copy did not match its id: the chunk is wanted again, and the next copy may be stored.
        fetcher.answered(id, by: a, .notHeld)
        fetcher.request([id], via: b, again: [id], waking: wake)
        #expect(fetcher.claim(id, by: b))
        fetcher.answered(id, by: b, .held(location))
        #expect(fetcher.release([id, id, id]) == [id: location])
    }

    @Test func aSecondRequestWithoutAgainWaitsForTheFirstLinksAnswer() {
        let (a, b) = (PeerLinkDouble(), PeerLinkDouble())
        let wake = DispatchSemaphore(value: 0)
        fetcher.request([id], via: a, waking: wake)
        fetcher.request([id], via: b, waking: wake)
        #expect(b.sent.isEmpty)
        #expect(!fetcher.isRequested(id, by: b))
        a.close("gone")
        fetcher.sessionEnded(a)
        #expect(fetcher.poll([(id, b)]).unanswered.count == 1)
        fetcher.release([id, id])
    }
}
