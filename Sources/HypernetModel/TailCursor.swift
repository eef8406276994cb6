/// Where `hypernet tail` is in one file (docs/cli.md, "tail"): the document, the revision last read, and the end of
/// the last complete line printed, with the bytes just before it so that a later revision can be told to extend
/// what was printed (an append) or not (a rewrite). A pure value: the caller reads the content it asks for.
///
/// Each line is printed once: only complete lines (ending in a newline) are printed and passed; a partial last line
/// waits until a revision completes it. A revision that replaces several (the tail missed some, or the writer made
/// several appends at once) gives every line they added, in order. A file shorter than the cursor was truncated,
/// one whose bytes before the cursor changed was rewritten: both are read again from their start, as GNU tail does
/// after "file truncated".
public struct TailCursor: Codable, Equatable, Sendable {
    public var document: String
    public var revision: String
    /// The end of the last complete line passed.
    public var offset: UInt64
    /// Up to `checkLength` bytes just before `offset`.
    public var check: [UInt8]

    static let checkLength = 64

    public enum Change: String, Sendable {
        case truncated, rewritten
    }

    public init(document: String, revision: String = "", offset: UInt64 = 0, check: [UInt8] = []) {
        self.document = document
        self.revision = revision
        self.offset = offset
        self.check = check
    }

    /// Where to read a revision of `size` bytes from: just before the cursor (the bytes to check), or 0 when the file
    /// is now shorter than the cursor.
    public func start(forSize size: UInt64) -> UInt64 {
        size < offset ? 0 : offset - UInt64(check.count)
    }

    /// Takes `bytes`, the content of `revision` from `start` to its end. Returns the complete lines past the cursor
    /// (without their newlines) and, if the file did not extend what was printed, whether it was truncated or
    /// rewritten (its lines are then those from its start). nil: the bytes before the cursor changed and `start` is
    /// not 0: read the revision again from 0.
    public mutating func advance(revision: String, bytes: [UInt8], from start: UInt64) -> (
        lines: [ArraySlice<UInt8>], change: Change?
    )? {
        let known = start <= offset ? Int(offset - start) : -1
        let extends =
            known >= check.count && bytes.count >= known && bytes[known - check.count..<known].elementsEqual(check)
        var change: Change?
        var from = known
        if !extends {
            guard start == 0 else { return nil }
            change = UInt64(bytes.count) < offset ? .truncated : .rewritten
            offset = 0
            check = []
            from = 0
        }
        self.revision = revision
        guard let newline = bytes[from...].lastIndex(of: UInt8(ascii: "\n")) else { return ([], change) }
        let lines = bytes[from...newline].split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
            .dropLast()
        offset = start + UInt64(newline + 1)
        check = Array((check + bytes[from...newline]).suffix(Self.checkLength))
        return (Array(lines), change)
    }

    /// The cursor after the last `count` complete lines of `revision`, and those lines, given `bytes`, its content from
    /// `start` to its end (the last part of a long file). nil: `bytes` holds fewer than `count` complete lines and
    /// `start` is not 0: read from further back.
    public static func last(
        _ count: Int, document: String, revision: String, bytes: [UInt8], from start: UInt64
    ) -> (cursor: TailCursor, lines: [ArraySlice<UInt8>])? {
        let end = (bytes.lastIndex(of: UInt8(ascii: "\n")) ?? -1) + 1
        // The line before the first one printed must end inside `bytes`, unless `bytes` starts the file.
        var lineStart = end
        var found = 0
        while found < count {
            guard lineStart > 0 else {
                guard start == 0 else { return nil }
                break
            }
            let previous = bytes[..<(lineStart - 1)].lastIndex(of: UInt8(ascii: "\n"))
            if previous == nil, start != 0 { return nil }
            lineStart = (previous ?? -1) + 1
            found += 1
        }
        var cursor = TailCursor(document: document, revision: revision, offset: start + UInt64(lineStart))
        cursor.check = Array(bytes[..<lineStart].suffix(checkLength))
        guard cursor.check.count == checkLength || start == 0 else { return nil }
        let checked = Array(bytes[lineStart - cursor.check.count..<end])
        guard let step = cursor.advance(revision: revision, bytes: checked, from: cursor.start(forSize: .max)) else {
            return nil
        }
        return (cursor, step.lines)
    }
}
