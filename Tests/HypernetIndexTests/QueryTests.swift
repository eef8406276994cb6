import HypernetIndex
import Testing

@Suite struct QueryTests {
    /// 2026-11-10T00:00:00Z.
    static let now: Int64 = 1_794_268_800_000
    static let day: Int64 = 86_400_000

    func parse(_ text: String) throws -> [[SearchQuery.Atom]] {
        try SearchQuery(text, now: Self.now).clauses
    }

    func atom(_ term: SearchQuery.Term, negated: Bool = false) -> SearchQuery.Atom {
        .init(negated: negated, term: term)
    }

    @Test func wordsPhrasesPrefixesNegationAndOr() throws {
        #expect(
            try parse(#""quarterly  plan" plan* -draft a OR b"#) == [
                [atom(.phrase("quarterly plan"))], [atom(.word("plan", prefix: true))],
                [atom(.word("draft", prefix: false), negated: true)],
                [atom(.word("a", prefix: false)), atom(.word("b", prefix: false))],
            ])
        #expect(try parse(#""say ""hi""""#) == [[atom(.phrase(#"say "hi""#))]])
        #expect(try parse("").isEmpty)
        #expect(try parse("or").count == 1, "only upper-case OR is the operator")
    }

    @Test func filters() throws {
        #expect(
            try parse(#"owner:alice author:me path:docs/* name:"My *.txt" tag:user.color=red tag:todo"#) == [
                [atom(.filter(.owner("alice")))], [atom(.filter(.author("me")))], [atom(.filter(.path("/docs/*")))],
                [atom(.filter(.name("My *.txt")))], [atom(.filter(.tag(name: "color", value: "red")))],
                [atom(.filter(.tag(name: "todo", value: nil)))],
            ])
        #expect(
            try parse("kind:dir kind:FILE conflict:yes shared:no -size:>1M size:<=10") == [
                [atom(.filter(.kind("directory")))], [atom(.filter(.kind("file")))], [atom(.filter(.conflict(true)))],
                [atom(.filter(.shared(false)))],
                [atom(.filter(.size(lower: (1 << 20) + 1, upper: nil)), negated: true)],
                [atom(.filter(.size(lower: nil, upper: 11)))],
            ])
    }

    @Test func times() throws {
        let nov1: Int64 = 1_793_491_200_000
        #expect(try parse("modified:>2026-11-01") == [[atom(.filter(.modified(.init(lower: nov1 + Self.day))))]])
        #expect(try parse("modified:>=2026-11-01") == [[atom(.filter(.modified(.init(lower: nov1))))]])
        #expect(
            try parse("created:2026-11-01") == [[atom(.filter(.created(.init(lower: nov1, upper: nov1 + Self.day))))]])
        #expect(
            try parse("modified:<2026-11-01T10:30Z") == [
                [atom(.filter(.modified(.init(upper: nov1 + 630 * 60_000))))]
            ])
        #expect(try parse("modified:<7d") == [[atom(.filter(.modified(.init(lower: Self.now - 7 * Self.day))))]])
        #expect(try parse("modified:>2h") == [[atom(.filter(.modified(.init(upper: Self.now - 7_200_000))))]])
    }

    /// Every syntax error names its column (1-based) and the token.
    @Test(arguments: [
        (#"plan "quarterly"#, 6, "unterminated quote"),
        ("a OR", 3, "'OR' needs a term on each side"),
        ("OR a", 1, "'OR' needs a term on each side"),
        ("a OR OR b", 6, "'OR' needs a term on each side"),
        ("a - b", 3, "'-' must be followed by a term"),
        ("(a b)", 1, "parentheses are not supported"),
        ("x pl*n", 5, "'*' is allowed only at the end of a word"),
        ("*", 1, "'*' needs a word before it"),
        ("colour:red", 1, "unknown filter 'colour:'"),
        ("a owner:", 3, "'owner:' needs a value"),
        ("size:>lots", 6, "'size:>lots': expected"),
        ("size:99999999999999999999", 6, "'size:99999999999999999999': expected"),
        ("modified:2026-02-30", 10, "'modified:2026-02-30': expected"),
        ("modified:=7d", 10, "'modified:=7d': expected"),
        ("kind:pipe", 6, "'kind:pipe': expected one of"),
        ("conflict:maybe", 10, "'conflict:maybe': expected yes or no"),
        ("tag:=x", 5, "'tag:=x': needs a tag name"),
        (#""a"b"#, 4, "a space must follow a quoted term"),
        (#"ab"c""#, 3, "'\"' inside a word"),
        (#""  ""#, 1, "empty phrase"),
    ])
    func syntaxErrors(query: String, column: Int, message: String) {
        #expect {
            _ = try SearchQuery(query, now: Self.now)
        } throws: { error in
            guard let e = error as? SearchSyntaxError else { return false }
            return e.column == column && e.message.contains(message)
        }
    }

    @Test func userTextOnlyTravelsAsBoundParameters() throws {
        let query = try SearchQuery(#"name:x';DROP "a""b" OR "c""d" -e owner:bob kind:file"#, now: Self.now)
        let plan = SearchPlan(query, sort: .relevance, limit: 10, offset: 0) { $0 == "bob" ? "hn1bob" : nil }
        #expect(!plan.sql.contains("DROP"))
        #expect(!plan.sql.contains("bob"))
        #expect(plan.sql.contains("fulltext MATCH ?"))
        // The filters are conditions of the statement that matches, before ORDER BY and LIMIT.
        let match = plan.sql.range(of: "MATCH ?")!
        let order = plan.sql.range(of: "ORDER BY")!
        #expect(plan.sql.range(of: "d.kind = ?")!.lowerBound > match.upperBound)
        #expect(plan.sql.range(of: "d.kind = ?")!.upperBound < order.lowerBound)
    }

    @Test func snippets() {
        let text = String(repeating: "filler ", count: 40) + "the Quarterly plan is here\nand more " + "x "
        let snippet = Snippet.make(text, terms: [("quarterly plan", false)], width: 40)!
        #expect(snippet.hasPrefix("…") && snippet.contains("Quarterly plan"))
        #expect(Snippet.make("planning ahead", terms: [("plan", false)]) == nil)
        #expect(Snippet.make("planning ahead", terms: [("plan", true)]) == "planning ahead")
    }

    @Test func textDetection() {
        #expect(TextExtractor.text(Array("héllo\n".utf8)) == "héllo\n")
        #expect(TextExtractor.text([0x68, 0x00, 0x69]) == nil, "a NUL byte is binary")
        #expect(TextExtractor.text([0x63, 0x61, 0x66, 0xE9]) == "café", "not UTF-8, no controls: ISO-8859-1")
        #expect(TextExtractor.text([0x61, 0x01, 0xE9]) == nil, "controls and not UTF-8: binary")
        #expect(TextExtractor.text([0xFF, 0xFE, 0x68, 0x00, 0x69, 0x00]) == "hi", "UTF-16 with a byte-order mark")
        // A limit that cuts "é" (C3 A9) keeps the text before it.
        #expect(TextExtractor.text([0x61, 0x62, 0xC3], truncated: true) == "ab")
        // Binary is decided by the first bytes, so the indexer reads no further.
        #expect(TextExtractor.isBinary([0x61, 0x00]) && !TextExtractor.isBinary([0xFF, 0xFE, 0x61, 0x00]))
        // Where an append resumes: after the last line feed of UTF-8 text; nowhere for other encodings.
        #expect(TextExtractor.lineEnd(Array("a\nb\nc".utf8)[...]) == 4)
        #expect(TextExtractor.lineEnd(Array("abc".utf8)[...]) == 0)
        #expect(TextExtractor.lineEnd(Array("x\nabc\n".utf8)[2...]) == 4, "counted from the slice's start")
        #expect(TextExtractor.lineEnd([0x63, 0x61, 0x66, 0xE9, 0x0A][...]) == nil, "ISO-8859-1")
        #expect(TextExtractor.lineEnd([0xFF, 0xFE, 0x0A, 0x00][...]) == nil, "UTF-16")
        #expect(TextExtractor.lineEnd([0x61, 0x00, 0x0A][...]) == nil, "NUL")
        #expect(!TextExtractor.isBinary(Array(repeating: 0x61, count: TextExtractor.sniffLength) + [0]))
    }
}
