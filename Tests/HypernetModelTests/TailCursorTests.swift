import Testing

@testable import HypernetModel

/// The cursor of `hypernet tail`, alone: each revision's content is handed over as the cursor asks for it.
@Suite struct TailCursorTests {
    /// Advances `cursor` over `content` (a revision's whole content), reading only what it asks for, and again from 0
    /// when it says so. Returns the lines as strings and the change.
    static func step(_ cursor: inout TailCursor, _ revision: String, _ content: String) -> (
        [String], TailCursor.Change?
    ) {
        let bytes = Array(content.utf8)
        var start = cursor.start(forSize: UInt64(bytes.count))
        while true {
            if let step = cursor.advance(revision: revision, bytes: Array(bytes[Int(start)...]), from: start) {
                return (step.lines.map { String(decoding: $0, as: UTF8.self) }, step.change)
            }
            #expect(start != 0)
            start = 0
        }
    }

    @Test func appendsGiveEachCompleteLineOnceAndAPartialLineOnlyWhenComplete() {
        var c = TailCursor(document: "d")
        #expect(Self.step(&c, "r1", "one\ntw").0 == ["one"])
        #expect(c.offset == 4 && c.revision == "r1")
        #expect(Self.step(&c, "r2", "one\ntwo\nthr").0 == ["two"])
        #expect(Self.step(&c, "r3", "one\ntwo\nthr").0 == [])
        #expect(Self.step(&c, "r4", "one\ntwo\nthree\n\nfour\n").0 == ["three", "", "four"])
        #expect(c.offset == 20)
    }

    @Test func aRevisionThatReplacesSeveralGivesEveryLineTheyAdded() {
        var c = TailCursor(document: "d")
        _ = Self.step(&c, "r1", "a\n")
        // r2 and r3 were never seen: r4 holds their lines too.
        #expect(Self.step(&c, "r4", "a\nb\nc\nd\n").0 == ["b", "c", "d"])
    }

    @Test func aTruncatedFileIsReadAgainFromItsStart() {
        var c = TailCursor(document: "d")
        _ = Self.step(&c, "r1", "first\nsecond\n")
        let (lines, change) = Self.step(&c, "r2", "new\n")
        #expect(change == .truncated && lines == ["new"])
        #expect(c.offset == 4)
    }

    @Test func aRewrittenFileIsReadAgainFromItsStart() {
        var c = TailCursor(document: "d")
        _ = Self.step(&c, "r1", "first\nsecond\n")
        let (lines, change) = Self.step(&c, "r2", "FIRST\nsecond\nthird\n")
        #expect(change == .rewritten && lines == ["FIRST", "second", "third"])
        // Then appends again.
        #expect(Self.step(&c, "r3", "FIRST\nsecond\nthird\nfourth\n") == (["fourth"], nil))
    }

    @Test func aLongFileIsCheckedOnlyJustBeforeTheCursor() {
        var c = TailCursor(document: "d")
        let long = (0..<100).map { "line \($0)\n" }.joined()
        _ = Self.step(&c, "r1", long)
        #expect(c.check.count == TailCursor.checkLength)
        #expect(c.start(forSize: UInt64(long.utf8.count + 6)) == c.offset - UInt64(TailCursor.checkLength))
        #expect(Self.step(&c, "r2", long + "extra\n").0 == ["extra"])
    }

    @Test func lastLinesOfAFileReadFromItsEnd() {
        let content = Array((0..<100).map { "line \($0)\n" }.joined().utf8)
        // Too little of the end for three lines and the check: read further back.
        let tail = Array(content.suffix(20))
        #expect(
            TailCursor.last(3, document: "d", revision: "r", bytes: tail, from: UInt64(content.count - 20)) == nil)
        let start = content.count - 200
        let found = TailCursor.last(
            3, document: "d", revision: "r", bytes: Array(content[start...]), from: UInt64(start))
        #expect(found?.lines.map { String(decoding: $0, as: UTF8.self) } == ["line 97", "line 98", "line 99"])
        var cursor = found!.cursor
        #expect(cursor.offset == UInt64(content.count))
        #expect(Self.step(&cursor, "r2", String(decoding: content, as: UTF8.self) + "line 100\n").0 == ["line 100"])
        // A short file, whole; a partial last line is not counted.
        let short = TailCursor.last(5, document: "d", revision: "r", bytes: Array("a\nb\nc".utf8), from: 0)
        #expect(short?.lines.map { String(decoding: $0, as: UTF8.self) } == ["a", "b"])
        #expect(short?.cursor.offset == 4)
        #expect(TailCursor.last(0, document: "d", revision: "r", bytes: Array("a\nb\n".utf8), from: 0)?.lines == [])
    }
}
