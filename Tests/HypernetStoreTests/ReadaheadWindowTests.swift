import Testing

@testable import HypernetStore

/// The readahead window of streaming reads of content held on demand, alone.
@Suite struct ReadaheadWindowTests {
    static let mib: UInt64 = 1 << 20
    static let size: UInt64 = 1 << 30

    @Test func growsWithSequentialReadsUpToItsMaximumAndAsksInBatches() {
        var w = ReadaheadWindow()
        let kib: UInt64 = 128 << 10
        #expect(w.next(after: 0..<kib, size: Self.size) == kib..<kib + Self.mib)
        var asked: [Range<UInt64>] = []
        for n in 1..<64 {
            if let r = w.next(after: UInt64(n) * kib..<UInt64(n + 1) * kib, size: Self.size) { asked.append(r) }
        }
        #expect(w.window == ReadaheadWindow.maximum)
        // Contiguous, each past what was asked before, never one request per read.
        for (a, b) in zip(asked, asked.dropFirst()) { #expect(a.upperBound == b.lowerBound) }
        #expect(asked.count < 20)
        #expect(w.requestedTo >= 64 * kib + ReadaheadWindow.maximum / 2)
    }

    @Test func aSeekStartsAgainFromTheSmallestWindow() {
        var w = ReadaheadWindow()
        for n: UInt64 in 0..<8 { _ = w.next(after: n * Self.mib..<(n + 1) * Self.mib, size: Self.size) }
        #expect(w.window > ReadaheadWindow.initial)
        let far = 500 * Self.mib
        #expect(w.next(after: far..<far + Self.mib, size: Self.size) == far + Self.mib..<far + 2 * Self.mib)
        #expect(w.window == ReadaheadWindow.initial)
    }

    @Test func readsSlightlyOutOfOrderStaySequential() {
        var w = ReadaheadWindow()
        _ = w.next(after: 0..<Self.mib, size: Self.size)
        _ = w.next(after: 2 * Self.mib..<3 * Self.mib, size: Self.size)
        _ = w.next(after: Self.mib..<2 * Self.mib, size: Self.size)
        #expect(w.window == 4 * ReadaheadWindow.initial)
    }

    @Test func neverAsksPastTheEnd() {
        var w = ReadaheadWindow()
        #expect(w.next(after: 0..<100, size: 1000) == 100..<1000)
        #expect(w.next(after: 100..<1000, size: 1000) == nil)
    }
}
