import HypernetScan
import Testing

/// GNU grep's semantics (C locale) on bytes; the expectations are what `LC_ALL=C grep -a` prints.
@Suite struct LineScannerTests {
    /// The numbers of the lines `pattern` selects in `text`, fed in pieces of `piece` bytes.
    func selected(
        _ pattern: String, _ syntax: LinePattern.Syntax = .basic, ignoreCase: Bool = false, wholeWord: Bool = false,
        invert: Bool = false, in text: [UInt8], piece: Int = Int.max
    ) throws -> [Int] {
        let scanner = LineScanner(
            try LinePattern(
                pattern: pattern, syntax: syntax, ignoreCase: ignoreCase, wholeWord: wholeWord, invert: invert))
        var numbers: [Int] = []
        var lines: [[UInt8]] = []
        var offset = 0
        while offset < text.count {
            let end = min(text.count, offset + min(piece, text.count))
            try scanner.feed(Array(text[offset..<end])) {
                numbers.append($0.number)
                lines.append($0.bytes)
                return true
            }
            offset = end
        }
        try scanner.finish {
            numbers.append($0.number)
            lines.append($0.bytes)
            return true
        }
        // The lines handed out are the document's own, at the offsets given.
        let all = text.split(separator: 0x0A, omittingEmptySubsequences: false)
        for (number, line) in zip(numbers, lines) { #expect(Array(all[number - 1]) == line) }
        return numbers
    }

    func selected(_ pattern: String, _ syntax: LinePattern.Syntax = .basic, in text: String) throws -> [Int] {
        try selected(pattern, syntax, in: Array(text.utf8))
    }

    @Test func basicAndExtendedOperators() throws {
        let text = "abc\na+c\nac\nabbc\n(a)\na|b\nx{2}\nxx\n"
        #expect(try selected("ab*c", in: text) == [1, 3, 4])
        #expect(try selected("a+c", in: text) == [2], "+ is literal in a BRE")
        #expect(try selected("ab\\+c", in: text) == [1, 4])
        #expect(try selected("ab+c", .extended, in: text) == [1, 4])
        #expect(try selected("a\\+c", .extended, in: text) == [2])
        #expect(try selected("(a)", in: text) == [5])
        #expect(try selected("^\\(a\\)c$", in: text) == [3])
        #expect(try selected("^(a)c$", .extended, in: text) == [3])
        #expect(try selected("a|b", in: text) == [6])
        #expect(try selected("a\\|x", in: text) == [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(try selected("x{2}", in: text) == [7])
        #expect(try selected("x\\{2\\}", in: text) == [8])
        #expect(try selected("x{2}", .extended, in: text) == [8])
        #expect(try selected("b{,1}c", .extended, in: text) == [1, 2, 3, 4])
        #expect(try selected("a{1", .extended, in: text) == [], "an invalid interval is literal")
        #expect(try selected("*a", in: "*a\na\n") == [1], "a leading * is literal in a BRE")
        #expect(try selected("*a", .extended, in: "*a\na\n") == [1, 2], "and ignored in an ERE")
        #expect(try selected("a^b$c", in: "a^b$c\nabc\n") == [1], "^ and $ inside a BRE are literal")
        #expect(try selected("a*+a", .extended, in: "a\nb\n") == [1], "*+ is two quantifiers, not a possessive one")
        #expect(try selected("\\(ab\\)\\1", in: "abab\nab\n") == [1])
        #expect(try selected("(a)(b)\\2", .extended, in: "abb\nab\n") == [1])
        #expect(try selected("a\\.c", in: "abc\na.c\n") == [2])
        #expect(try selected("\\d", in: "d\n1\n") == [1], "GNU grep reads \\d as d")
    }

    @Test func fixedStrings() throws {
        let text = "a.c\nabc\n[x]*\n(?i)A\n\\E\n"
        #expect(try selected("a.c", .fixed, in: text) == [1])
        #expect(try selected("[x]*", .fixed, in: text) == [3])
        #expect(try selected("(?i)a", .fixed, in: text) == [])
        #expect(try selected("\\E", .fixed, in: text) == [5])
        #expect(try selected("a.c\nabc", .fixed, in: text) == [1, 2], "one pattern per line")
    }

    @Test func brackets() throws {
        let text = "a]b\na\\b\naxb\nA1\n-\n"
        #expect(try selected("a[]x]b", in: text) == [1, 3])
        #expect(try selected("a[\\]b", in: text) == [2], "a backslash is literal in a bracket")
        #expect(try selected("[[:upper:]][[:digit:]]", in: text) == [4])
        #expect(try selected("^[^a]$", in: text) == [5])
        #expect(try selected("[a-]$", in: text) == [5])
        #expect(throws: PatternError.self) { try LinePattern(pattern: "[[:nope:]]") }
        #expect(throws: PatternError.self) { try LinePattern(pattern: "a[b") }
    }

    @Test func ignoreCaseWholeWordInvert() throws {
        let text = Array("Error here\nerrors\nan ERROR\nno\nerror_x error\n".utf8)
        #expect(try selected("error", ignoreCase: true, in: text) == [1, 2, 3, 5])
        #expect(try selected("error", ignoreCase: true, wholeWord: true, in: text) == [1, 3, 5])
        #expect(try selected("error", wholeWord: true, in: text) == [5], "the second occurrence is a word")
        #expect(try selected("error", ignoreCase: true, invert: true, in: text) == [4])
        #expect(try selected("e.*r", .extended, wholeWord: true, in: text) == [5])
        #expect(try selected("\\<an\\>", in: text) == [3])
        #expect(try selected("r\\b", in: text) == [1, 5])
    }

    @Test func emptyLinesCRLFAndNoTrailingNewline() throws {
        #expect(try selected("^$", in: "a\n\nb\n\n") == [2, 4])
        #expect(try selected("", in: "a\n\nb") == [1, 2, 3], "the empty pattern matches every line")
        #expect(try selected("x", invert: true, in: Array("a\n\nx".utf8)) == [1, 2])
        #expect(try selected("a$", in: "a\r\nb a\n") == [2], "the CR is part of the line")
        #expect(try selected("a\r$", in: "a\r\nb a\n") == [1])
        #expect(try selected("b$", in: "ab") == [1], "a last line without newline")
        #expect(try selected("x", in: "") == [])
    }

    @Test func matchesNeverSpanLines() throws {
        let text = "a\nb\na b\n"
        #expect(try selected("a[[:space:]]*b", in: text) == [3])
        #expect(try selected("a[^c]b", in: text) == [3])
        #expect(try selected("a\\sb", in: text) == [3])
        #expect(try selected("a\\Wb", in: text) == [3])
        #expect(try selected("\\`b", in: text) == [2], "\\` anchors at the line's start")
        #expect(try selected("a\\'", in: text) == [1])
    }

    @Test func bytesNotStrings() throws {
        let text: [UInt8] = [0xFF, 0x41, 0x0A, 0x00, 0x42, 0x0A, 0xC3, 0x28, 0x0A, 0x43, 0x0A]
        #expect(try selected("A", in: text) == [1])
        #expect(try selected("B", in: text) == [2], "a NUL byte is just a byte")
        #expect(try selected("^.(", in: text) == [3], "one invalid UTF-8 byte is one character")
        #expect(try selected("^..$", in: text) == [1, 2, 3])
        let pattern = try LinePattern(pattern: [0xFF], syntax: .fixed)
        #expect(try pattern.matches([0x41, 0xFF]))
    }

    @Test func linesSplitAcrossPieces() throws {
        var text: [UInt8] = []
        var expected: [Int] = []
        for number in 1...500 {
            let line = number % 7 == 0 ? "line \(number) ERROR disk\(number)" : "line \(number) ok"
            if number % 7 == 0 { expected.append(number) }
            text += Array(line.utf8) + (number % 11 == 0 ? [0x0D, 0x0A] : [0x0A])
        }
        for piece in [1, 2, 3, 7, 64, 1000, Int.max] {
            #expect(try selected("ERROR disk[0-9]*", in: text, piece: piece) == expected, "pieces of \(piece)")
            let inverted = try selected("ERROR", invert: true, in: text, piece: piece)
            #expect(inverted.count == 500 - expected.count)
        }
        // Offsets are the lines' places in the document.
        let scanner = LineScanner(try LinePattern(pattern: "line 3 ok"))
        var found: [ScannedLine] = []
        try scanner.feed(Array(text.prefix(13))) { _ in true }
        try scanner.feed(Array(text.dropFirst(13))) {
            found.append($0)
            return true
        }
        #expect(found == [ScannedLine(number: 3, offset: 20, bytes: Array("line 3 ok".utf8))])
        #expect(scanner.bytesScanned == text.count && scanner.lines == 500)
    }

    @Test func stopsWhenToldTo() throws {
        let scanner = LineScanner(try LinePattern(pattern: "x"))
        var seen = 0
        let more = try scanner.feed(Array("x\nx\nx\n".utf8)) { _ in
            seen += 1
            return false
        }
        #expect(!more && seen == 1)
    }

    @Test func badPatternsSayWhy() throws {
        for (pattern, syntax, message) in [
            ("a\\", LinePattern.Syntax.basic, "Trailing backslash"), ("\\(a", .basic, "Unmatched ( or \\("),
            ("(a", .extended, "Unmatched ( or \\("), ("a\\)", .basic, "Unmatched ) or \\)"),
            ("\\(a\\)\\2", .basic, "Invalid back reference"), ("a\\{2,1\\}", .basic, "Invalid content of \\{\\}"),
            ("a{1,99999}", .extended, "Regular expression too big"), ("[b-a]", .basic, "Invalid range end"),
        ] {
            #expect {
                try LinePattern(pattern: pattern, syntax: syntax)
            } throws: { error in
                (error as? PatternError)?.message.contains(message) == true
            }
        }
        #expect(try LinePattern(pattern: "a)", syntax: .extended).matches(Array("a)".utf8)))
    }

    /// `tail` goes on from the end of the last complete line: a last line without its newline is not counted.
    @Test func completeBytesEndAtTheLastNewline() throws {
        let scanner = LineScanner(try LinePattern(pattern: "x"))
        #expect(scanner.completeBytes == 0)
        try scanner.feed(Array("ab\ncd".utf8)) { _ in true }
        #expect(scanner.completeBytes == 3)
        try scanner.feed(Array("ef".utf8)) { _ in true }
        #expect(scanner.completeBytes == 3)
        try scanner.feed(Array("\ngh\n".utf8)) { _ in true }
        #expect(scanner.completeBytes == 11)
    }
}
