import Glibc

/// A line `LineScanner` selected.
public struct ScannedLine: Sendable, Equatable {
    /// 1 for the document's first line.
    public var number: Int
    /// Where the line starts in the document (bytes fed before it).
    public var offset: Int
    /// Without its newline; any bytes (invalid UTF-8, NUL, a CR before the newline) as they are.
    public var bytes: [UInt8]

    public init(number: Int, offset: Int, bytes: [UInt8]) {
        self.number = number
        self.offset = offset
        self.bytes = bytes
    }
}

/// Selects the lines of one document that a pattern matches (or, inverted, does not), fed its bytes in pieces of
/// any size: a line split between pieces is matched once whole. Whole buffers of lines go to PCRE2 at once (a
/// match's line is found afterwards), which is what makes scanning run at memory speed.
public final class LineScanner {
    public let pattern: LinePattern
    /// Complete lines seen so far.
    public private(set) var lines = 0
    public private(set) var bytesScanned = 0
    /// The bytes of the complete lines seen so far: where the first line without its newline yet starts.
    public var completeBytes: Int { bytesScanned - carry.count }
    /// The start of a line whose newline has not arrived yet.
    private var carry: [UInt8] = []
    private let data: MatchData

    public init(_ pattern: LinePattern) {
        self.pattern = pattern
        data = MatchData(pattern)
    }

    /// Scans the document's next bytes, calling `found` for each selected line they complete; false (and nothing
    /// more scanned) once `found` returns false.
    @discardableResult
    public func feed(_ bytes: UnsafeRawBufferPointer, _ found: (ScannedLine) -> Bool) throws(ScanError) -> Bool {
        defer { bytesScanned += bytes.count }
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return true }
        var start = 0
        if !carry.isEmpty {
            guard let newline = memchr(base, 0x0A, bytes.count) else {
                carry += bytes
                return true
            }
            start = newline - UnsafeMutableRawPointer(mutating: base) + 1
            carry += UnsafeRawBufferPointer(rebasing: bytes[..<start])
            let line = carry
            carry = []
            let offset = bytesScanned - (line.count - start)
            guard try line.scanning({ (region) throws(ScanError) in try scan(region, at: offset, found) })
            else { return false }
        }
        var end = bytes.count
        while end > start && bytes[end - 1] != 0x0A { end -= 1 }
        carry += UnsafeRawBufferPointer(rebasing: bytes[end...])
        guard end > start else { return true }
        return try scan(UnsafeRawBufferPointer(rebasing: bytes[start..<end]), at: bytesScanned + start, found)
    }

    @discardableResult
    public func feed(_ bytes: [UInt8], _ found: (ScannedLine) -> Bool) throws(ScanError) -> Bool {
        try bytes.scanning { (buffer) throws(ScanError) in try feed(buffer, found) }
    }

    /// Ends the document: its last line, if it has no newline, is matched now.
    @discardableResult
    public func finish(_ found: (ScannedLine) -> Bool) throws(ScanError) -> Bool {
        guard !carry.isEmpty else { return true }
        let line = carry + [0x0A]
        carry = []
        return try line.scanning { (region) throws(ScanError) in
            try scan(region, at: bytesScanned - (line.count - 1), found)
        }
    }

    /// Scans `region`, whole lines (it ends with a newline) starting at document offset `offset`.
    private func scan(
        _ region: UnsafeRawBufferPointer, at offset: Int, _ found: (ScannedLine) -> Bool
    ) throws(ScanError) -> Bool {
        let count = region.count
        // Without the last newline, so that `$` (and an empty pattern) match the last line and not after it.
        let subject = UnsafeRawBufferPointer(rebasing: region[..<(count - 1)])
        var lineStart = 0
        while lineStart < count {
            let candidate: Int
            if pattern.linewise {
                candidate = lineStart
            } else if let (start, _) = try data.find(in: subject, from: lineStart) {
                candidate = start
            } else {
                candidate = count
            }
            // Lines wholly before the match's line do not match.
            while lineStart < count {
                let lineEnd = Self.newline(in: region, from: lineStart)
                if lineEnd >= candidate {
                    lines += 1
                    let line = UnsafeRawBufferPointer(rebasing: region[lineStart..<lineEnd])
                    // A match may run over newlines (`\n`, `[[:space:]]`): then the line alone decides.
                    let matched = try data.find(in: line, from: 0) != nil
                    if matched != pattern.invert {
                        guard found(ScannedLine(number: lines, offset: offset + lineStart, bytes: Array(line)))
                        else { return false }
                    }
                    lineStart = lineEnd + 1
                    break
                }
                lines += 1
                if pattern.invert {
                    let line = Array(region[lineStart..<lineEnd])
                    guard found(ScannedLine(number: lines, offset: offset + lineStart, bytes: line)) else {
                        return false
                    }
                }
                lineStart = lineEnd + 1
            }
        }
        return true
    }

    /// The offset of the first newline at or after `start` (the region ends with one).
    private static func newline(in region: UnsafeRawBufferPointer, from start: Int) -> Int {
        memchr(region.baseAddress! + start, 0x0A, region.count - start)!
            - UnsafeMutableRawPointer(
                mutating: region.baseAddress!)
    }
}
