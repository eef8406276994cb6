/// FastCDC content-defined chunking (Xia et al., "FastCDC: a Fast and Efficient Content-Defined Chunking
/// Approach for Data Deduplication", USENIX ATC 2016) with normalized chunking: a cut point is harder to
/// find before `average` bytes and easier after it, which narrows the chunk-size distribution.
///
/// The rolling "gear" hash is `hash = (hash << 1) + gear[byte]`; bit k of it depends on the last k + 1
/// bytes, so the masks test the top bits (a 64-byte window for bit 63). Boundaries depend only on the
/// bytes, so an insertion or deletion moves the boundaries near it and leaves the rest in place.
///
/// Invariant: the gear table and the mask rule define the chunk boundaries of stored data (and so which
/// chunks deduplicate); changing either changes every file's chunks. They must never change.
public struct Chunker: Sendable {
    public static let standard = Chunker(minimum: 16 << 10, average: 64 << 10, maximum: 256 << 10)

    public let minimum: Int
    public let average: Int
    public let maximum: Int
    /// Used for chunk lengths below `average`: log2(average) + 2 bits, so cuts there are rarer.
    private let smallChunkMask: UInt64
    /// Used from `average` on: log2(average) - 2 bits, so cuts there are likelier.
    private let largeChunkMask: UInt64

    /// `average` is rounded down to a power of two for the masks.
    public init(minimum: Int, average: Int, maximum: Int) {
        precondition(0 < minimum && minimum < average && average < maximum, "need 0 < minimum < average < maximum")
        let bits = Int.bitWidth - 1 - average.leadingZeroBitCount  // floor(log2(average))
        precondition(bits >= 3, "average too small")
        self.minimum = minimum
        self.average = average
        self.maximum = maximum
        smallChunkMask = Self.topBits(bits + 2)
        largeChunkMask = Self.topBits(bits - 2)
    }

    private static func topBits(_ n: Int) -> UInt64 { n == 0 ? 0 : ~0 &<< UInt64(64 - n) }

    /// `data` starts at a chunk boundary. Returns the length of the first chunk, or nil when more data is needed
    /// to decide (no cut point found, `data.count < maximum`, and `atEnd` is false). At end, the remainder is a chunk.
    /// Also nil for empty `data` at end: there is no chunk left.
    ///
    /// The answer never depends on bytes beyond the returned length, so feeding the data in pieces (calling
    /// again with more data after nil) gives the same chunks as passing it all at once. A retry rescans from
    /// `minimum`: stream in pieces of `maximum` bytes or more, not byte by byte.
    public func firstChunkLength(in data: UnsafeRawBufferPointer, atEnd: Bool) -> Int? {
        let count = data.count
        guard count >= minimum else { return atEnd && count > 0 ? count : nil }
        let bytes = data.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let end = min(count, maximum)
        let cut: Int? = gearTable.withUnsafeBufferPointer { table in
            let gear = table.baseAddress!
            var hash: UInt64 = 0
            // Byte i ends a chunk of length i + 1 when the mask's bits of the hash are zero.
            var i = minimum - 1
            let normalEnd = min(end, average - 1)
            while i < normalEnd {
                hash = (hash &<< 1) &+ gear[Int(bytes[i])]
                if hash & smallChunkMask == 0 { return i + 1 }
                i &+= 1
            }
            while i < end {
                hash = (hash &<< 1) &+ gear[Int(bytes[i])]
                if hash & largeChunkMask == 0 { return i + 1 }
                i &+= 1
            }
            return nil
        }
        if let cut { return cut }
        if count >= maximum { return maximum }
        return atEnd ? count : nil
    }
}

/// The 256 gear values: splitmix64 (Steele, Lea, Flood, "Fast Splittable Pseudorandom Number
/// Generators", OOPSLA 2014; the `next()` of Vigna's splitmix64.c) seeded with 0x6879706572_6e6574
/// ("hypernet" in ASCII), entry i being the (i+1)-th output. Pinned by ChunkerTests.
public let gearTable: [UInt64] = {
    var state: UInt64 = 0x6879_7065_726e_6574
    return (0..<256).map { _ in
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}()
