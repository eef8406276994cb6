/// `hypernet count --by REGEX`: occurrences per captured value. Each node maps its documents' lines into a table
/// (`add`), the requester reduces the tables (`merge`) and shows the largest (`top`).
public struct GroupCounts: Sendable, Equatable {
    /// The captured value (the groups joined by a tab; the whole match for a pattern without groups) and how
    /// often it occurred.
    public private(set) var counts: [[UInt8]: Int] = [:]

    public init() {}

    public init(counts: [[UInt8]: Int]) {
        self.counts = counts
    }

    /// Counts every non-empty, non-overlapping match of `pattern` in `line` (as `grep -o` finds them).
    public mutating func add(line: [UInt8], matching pattern: LinePattern) throws(ScanError) {
        let data = MatchData(pattern)
        try line.scanning { (bytes) throws(ScanError) in
            var offset = 0
            while offset <= bytes.count, let (start, end) = try data.find(in: bytes, from: offset) {
                guard end > start else {
                    offset = end + 1
                    continue
                }
                var key: [UInt8] = []
                if pattern.groups == 0 {
                    key = Array(bytes[start..<end])
                } else {
                    for number in 1...pattern.groups {
                        if number > 1 { key.append(0x09) }
                        if let (from, to) = data.group(number) { key += bytes[from..<to] }
                    }
                }
                counts[key, default: 0] += 1
                offset = end
            }
        }
    }

    /// Adds another node's (or document's) table to this one.
    public mutating func merge(_ other: GroupCounts) {
        counts.merge(other.counts, uniquingKeysWith: +)
    }

    /// The `limit` most frequent values (all without one), most frequent first, ties in byte order.
    public func top(_ limit: Int? = nil) -> [(value: [UInt8], count: Int)] {
        let sorted = counts.map { (value: $0.key, count: $0.value) }.sorted {
            $0.count != $1.count ? $0.count > $1.count : $0.value.lexicographicallyPrecedes($1.value)
        }
        return limit.map { Array(sorted.prefix($0)) } ?? sorted
    }
}
