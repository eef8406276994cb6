/// Sorted, disjoint, non-adjacent byte ranges: which parts of a file were written since the last commit.
struct RangeSet: Sendable, Equatable {
    private(set) var ranges: [Range<UInt64>] = []

    var isEmpty: Bool { ranges.isEmpty }
    var lowerBound: UInt64? { ranges.first?.lowerBound }
    var upperBound: UInt64? { ranges.last?.upperBound }
    var byteCount: UInt64 { ranges.reduce(0) { $0 + ($1.upperBound - $1.lowerBound) } }

    mutating func insert(_ r: Range<UInt64>) {
        guard !r.isEmpty else { return }
        var merged = r
        var kept: [Range<UInt64>] = []
        kept.reserveCapacity(ranges.count + 1)
        for existing in ranges {
            if existing.upperBound < merged.lowerBound || existing.lowerBound > merged.upperBound {
                kept.append(existing)
            } else {
                merged = min(existing.lowerBound, merged.lowerBound)..<max(existing.upperBound, merged.upperBound)
            }
        }
        let at = kept.firstIndex { $0.lowerBound > merged.lowerBound } ?? kept.count
        kept.insert(merged, at: at)
        ranges = kept
    }

    /// Drops everything at or beyond `end` (truncate).
    mutating func clip(to end: UInt64) {
        ranges = ranges.compactMap { r in
            r.lowerBound >= end ? nil : r.lowerBound..<min(r.upperBound, end)
        }
    }

    /// The parts of `r` covered by the set, in order.
    func intersections(with r: Range<UInt64>) -> [Range<UInt64>] {
        ranges.compactMap { x in
            let lo = max(x.lowerBound, r.lowerBound)
            let hi = min(x.upperBound, r.upperBound)
            return lo < hi ? lo..<hi : nil
        }
    }

    mutating func removeAll() { ranges = [] }
}
