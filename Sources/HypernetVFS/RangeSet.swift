/// Sorted, disjoint, non-adjacent byte ranges: which parts of a file were written since the last commit.
struct RangeSet: Sendable, Equatable {
    private(set) var ranges: [Range<UInt64>] = []
    /// Total bytes covered, kept up to date so the per-write checkpoint test costs nothing.
    private(set) var byteCount: UInt64 = 0

    var isEmpty: Bool { ranges.isEmpty }
    var lowerBound: UInt64? { ranges.first?.lowerBound }
    var upperBound: UInt64? { ranges.last?.upperBound }

    mutating func insert(_ r: Range<UInt64>) {
        guard !r.isEmpty else { return }
        // Sequential writes extend the last range: the common case costs O(1).
        if let last = ranges.last, last.lowerBound <= r.lowerBound, r.lowerBound <= last.upperBound {
            let grown = last.lowerBound..<max(last.upperBound, r.upperBound)
            byteCount += grown.upperBound - last.upperBound
            ranges[ranges.count - 1] = grown
            return
        }
        var merged = r
        var absorbed: UInt64 = 0
        var kept: [Range<UInt64>] = []
        kept.reserveCapacity(ranges.count + 1)
        for existing in ranges {
            if existing.upperBound < merged.lowerBound || existing.lowerBound > merged.upperBound {
                kept.append(existing)
            } else {
                absorbed += existing.upperBound - existing.lowerBound
                merged = min(existing.lowerBound, merged.lowerBound)..<max(existing.upperBound, merged.upperBound)
            }
        }
        let at = kept.firstIndex { $0.lowerBound > merged.lowerBound } ?? kept.count
        kept.insert(merged, at: at)
        ranges = kept
        byteCount += (merged.upperBound - merged.lowerBound) - absorbed
    }

    /// Drops everything at or beyond `end` (truncate).
    mutating func clip(to end: UInt64) {
        ranges = ranges.compactMap { r in
            r.lowerBound >= end ? nil : r.lowerBound..<min(r.upperBound, end)
        }
        byteCount = Self.count(ranges)
    }

    /// The parts of `r` covered by the set, in order.
    func intersections(with r: Range<UInt64>) -> [Range<UInt64>] {
        ranges.compactMap { x in
            let lo = max(x.lowerBound, r.lowerBound)
            let hi = min(x.upperBound, r.upperBound)
            return lo < hi ? lo..<hi : nil
        }
    }

    mutating func removeAll() {
        ranges = []
        byteCount = 0
    }

    private static func count(_ ranges: [Range<UInt64>]) -> UInt64 {
        ranges.reduce(0) { $0 + ($1.upperBound - $1.lowerBound) }
    }
}
