import HypernetCrypto
import HypernetModel
import Testing

@testable import HypernetStore

/// The segmented LRU that bounds content fetched on demand, alone.
@Suite struct ContentCacheTests {
    static func id(_ n: Int) -> ChunkID { BLAKE2b.hash(Array("chunk \(n)".utf8)) }

    @Test func staysWithinItsBoundEvictingTheLeastRecentlyFetched() {
        var cache = ContentCache(bound: 300)
        var evicted: [ChunkID] = []
        for n in 0..<5 { evicted += cache.insert(Self.id(n), length: 100, at: Double(n)) }
        #expect(evicted == [Self.id(0), Self.id(1)])
        #expect(cache.bytes == 300 && cache.count == 3)
        #expect(!cache.contains(Self.id(1)) && cache.contains(Self.id(4)))
    }

    @Test func accessesWithinTheCorrelationPeriodAreOne() {
        var cache = ContentCache(bound: 300)
        _ = cache.insert(Self.id(0), length: 100, at: 10)
        cache.access(Self.id(0), at: 10.1)  // the read the fetch was for
        cache.access(Self.id(0), at: 10.5)  // the next read of the same scan shares the chunk
        var evicted: [ChunkID] = []
        for n in 1..<4 { evicted += cache.insert(Self.id(n), length: 100, at: 11) }
        #expect(evicted == [Self.id(0)], "a chunk read once is not protected")
    }

    @Test func aHitIsAnAccessOfACachedChunkOutsideTheReadThatFetchedIt() {
        var cache = ContentCache(bound: 300)
        _ = cache.insert(Self.id(0), length: 100, at: 10)
        let sameRead = cache.access(Self.id(0), at: 10.2)
        let later = cache.access(Self.id(0), at: 12)
        let restOfIt = cache.access(Self.id(0), at: 12.3)
        let notCached = cache.access(Self.id(1), at: 13)
        #expect(!sameRead, "the read the fetch was for is a miss, not a hit")
        #expect(later, "a later read of a cached chunk is a hit")
        #expect(!restOfIt, "the rest of that read counts once")
        #expect(!notCached, "a chunk not cached is no hit")
    }

    @Test func shedGivesBackTheLeastValuableFirst() {
        var cache = ContentCache(bound: 1000)
        for n in 0..<4 { _ = cache.insert(Self.id(n), length: 100, at: Double(n)) }
        cache.access(Self.id(0), at: 5)  // read twice: protected
        let first = cache.shed(150)
        #expect(first == [Self.id(1), Self.id(2)])
        #expect(cache.bytes == 200 && cache.contains(Self.id(0)) && cache.contains(Self.id(3)))
        let rest = cache.shed(1000)
        #expect(rest.count == 2 && cache.bytes == 0, "more than it holds: all of it")
    }

    @Test func oneLongScanDoesNotFlushWhatWasReadTwice() {
        var cache = ContentCache(bound: 1000)
        for n in 0..<4 {
            _ = cache.insert(Self.id(n), length: 100, at: 0)
            cache.access(Self.id(n), at: 5)  // read again later: protected
        }
        var evicted: [ChunkID] = []
        for n in 100..<130 {
            evicted += cache.insert(Self.id(n), length: 100, at: 10)
            cache.access(Self.id(n), at: 10.2)
        }
        #expect(evicted.count == 24)
        #expect((0..<4).allSatisfy { cache.contains(Self.id($0)) }, "the scan evicted protected chunks")
        #expect(cache.bytes <= 1000)
    }

    @Test func theProtectedSegmentIsBoundedToo() {
        var cache = ContentCache(bound: 1000)
        for n in 0..<12 {
            _ = cache.insert(Self.id(n), length: 100, at: Double(n))
            cache.access(Self.id(n), at: Double(n) + 2)
        }
        #expect(cache.bytes <= 1000 && cache.count == 10)
        #expect(!cache.contains(Self.id(0)) && !cache.contains(Self.id(1)))
    }

    @Test func aChunkLargerThanTheBoundIsEvictedAtOnceAndRemovedOnesLeave() {
        var cache = ContentCache(bound: 100)
        #expect(cache.insert(Self.id(0), length: 500, at: 0) == [Self.id(0)])
        #expect(cache.bytes == 0)
        _ = cache.insert(Self.id(1), length: 50, at: 0)
        cache.remove(Self.id(1))
        #expect(cache.bytes == 0 && !cache.contains(Self.id(1)))
    }
}
