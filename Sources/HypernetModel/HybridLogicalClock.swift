/// A hybrid logical clock time: milliseconds since the Unix epoch in the high 48 bits, a logical counter in
/// the low 16. Ordered like UInt64; close to wall time, yet never goes backwards on one node and always
/// exceeds any time the node has observed (Kulkarni et al., 2014).
public struct HLCTime: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(milliseconds: UInt64, counter: UInt16) { rawValue = milliseconds << 16 | UInt64(counter) }

    public var milliseconds: UInt64 { rawValue >> 16 }
    public var counter: UInt16 { UInt16(truncatingIfNeeded: rawValue) }
    public static func < (a: HLCTime, b: HLCTime) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "\(milliseconds).\(counter)" }
}

/// The clock state; not thread-safe by itself — its owner serializes `now`/`observe`.
public struct HybridLogicalClock: Sendable {
    public private(set) var last: HLCTime

    public init(last: HLCTime = HLCTime(rawValue: 0)) { self.last = last }

    /// The next time for a local event, given the wall clock in milliseconds.
    public mutating func now(wallMilliseconds: UInt64) -> HLCTime {
        let next: HLCTime
        if wallMilliseconds > last.milliseconds {
            next = HLCTime(milliseconds: wallMilliseconds, counter: 0)
        } else {
            next = HLCTime(rawValue: last.rawValue + 1)
        }
        last = next
        return next
    }

    /// Takes a remote time into account so later local times exceed it.
    public mutating func observe(_ remote: HLCTime) {
        if remote > last { last = remote }
    }
}
