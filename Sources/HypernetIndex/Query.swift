/// A parsed search query (docs/search.md): clauses that must all hold, each one term or several joined by `OR`.
/// Pure: no I/O, so it is unit-tested and fuzzable; `SearchPlan` compiles it to SQL with bound parameters.
public struct SearchQuery: Sendable, Equatable {
    public var clauses: [[Atom]]

    public struct Atom: Sendable, Equatable {
        public var negated: Bool
        public var term: Term

        public init(negated: Bool, term: Term) {
            self.negated = negated
            self.term = term
        }
    }

    public enum Term: Sendable, Equatable {
        /// A word of the text or the name; `prefix`: `plan*`.
        case word(String, prefix: Bool)
        /// Words that follow each other: `"quarterly plan"`.
        case phrase(String)
        case filter(Filter)
    }

    public enum Filter: Sendable, Equatable {
        /// An identity as the query gave it (a contact name, `me` or a token); resolved when the query runs.
        case owner(String)
        case author(String)
        /// Globs (`*`, `?`, `[…]`); `path` is matched against the path from the mount root, `/` first.
        case path(String)
        case name(String)
        case tag(name: String, value: String?)
        case modified(TimeRange)
        case created(TimeRange)
        case size(lower: UInt64?, upper: UInt64?)
        case kind(String)
        case conflict(Bool)
        case shared(Bool)
    }

    /// Milliseconds since the epoch, lower bound inclusive, upper bound exclusive.
    public struct TimeRange: Sendable, Equatable {
        public var lower: Int64?
        public var upper: Int64?

        public init(lower: Int64? = nil, upper: Int64? = nil) {
            self.lower = lower
            self.upper = upper
        }
    }

    /// The filter names, as written before the colon.
    public static let filterNames = [
        "owner", "author", "path", "name", "tag", "modified", "created", "size", "kind", "conflict", "shared",
    ]
    public static let kinds = ["file", "directory", "symlink", "special"]

    /// Parses `text`; `now` (ms since the epoch) anchors relative times such as `modified:<7d`.
    public init(_ text: String, now: Int64) throws(SearchSyntaxError) {
        var parser = QueryParser(text: Array(text), now: now)
        clauses = try parser.parse()
    }

    /// The words and phrases a result's text should show (for snippets): the positive text terms.
    public var highlightTerms: [(text: String, prefix: Bool)] {
        clauses.flatMap { $0 }.compactMap { atom in
            guard !atom.negated else { return nil }
            switch atom.term {
            case .word(let w, let prefix): return (w, prefix)
            case .phrase(let p): return (p, false)
            case .filter: return nil
            }
        }
    }

    public var hasText: Bool { !highlightTerms.isEmpty }
}

/// Bad syntax: the message names the offending token and its column (1-based, in characters).
public struct SearchSyntaxError: Error, Sendable, Equatable, CustomStringConvertible {
    public var column: Int
    public var message: String

    public var description: String { "column \(column): \(message)" }
}

struct QueryParser {
    let text: [Character]
    let now: Int64
    var position = 0

    init(text: [Character], now: Int64) {
        self.text = text
        self.now = now
    }

    mutating func parse() throws(SearchSyntaxError) -> [[SearchQuery.Atom]] {
        var clauses: [[SearchQuery.Atom]] = []
        // Column of an `OR` waiting for its right operand.
        var pendingOr: Int?
        while true {
            skipSpace()
            guard position < text.count else { break }
            let start = position
            if peekWord() == "OR" {
                guard !clauses.isEmpty, pendingOr == nil else {
                    throw SearchSyntaxError(column: start + 1, message: "'OR' needs a term on each side")
                }
                position += 2
                pendingOr = start + 1
                continue
            }
            let atom = try parseAtom()
            if pendingOr != nil {
                clauses[clauses.count - 1].append(atom)
                pendingOr = nil
            } else {
                clauses.append([atom])
            }
        }
        if let column = pendingOr { throw SearchSyntaxError(column: column, message: "'OR' needs a term on each side") }
        return clauses
    }

    /// The bare word at the position, if it ends at a space or the end.
    private func peekWord() -> String {
        var end = position
        while end < text.count, !text[end].isWhitespace { end += 1 }
        return String(text[position..<end])
    }

    private mutating func skipSpace() {
        while position < text.count, text[position].isWhitespace { position += 1 }
    }

    private mutating func parseAtom() throws(SearchSyntaxError) -> SearchQuery.Atom {
        let start = position
        var negated = false
        if text[position] == "-" {
            negated = true
            position += 1
            guard position < text.count, !text[position].isWhitespace else {
                throw SearchSyntaxError(column: start + 1, message: "'-' must be followed by a term (no space)")
            }
        }
        let termStart = position
        let c = text[position]
        if c == "(" || c == ")" {
            throw SearchSyntaxError(column: position + 1, message: "'\(c)': parentheses are not supported")
        }
        if c == "\"" {
            let phrase = try quoted()
            try endOfTerm()
            let words = phrase.split(whereSeparator: \.isWhitespace)
            guard !words.isEmpty else { throw SearchSyntaxError(column: termStart + 1, message: "empty phrase \"\"") }
            return .init(negated: negated, term: .phrase(words.joined(separator: " ")))
        }
        var word = ""
        while position < text.count, !text[position].isWhitespace, text[position] != ":", text[position] != "\"" {
            word.append(text[position])
            position += 1
        }
        if position < text.count, text[position] == ":" {
            position += 1
            return .init(negated: negated, term: .filter(try filter(word, column: termStart + 1)))
        }
        if position < text.count, text[position] == "\"" {
            throw SearchSyntaxError(column: position + 1, message: "'\"' inside a word (a phrase starts with it)")
        }
        if word == "OR" {
            throw SearchSyntaxError(column: termStart + 1, message: "'OR' needs a term on each side")
        }
        let prefix = word.hasSuffix("*")
        let stem = prefix ? String(word.dropLast()) : word
        if let star = stem.firstIndex(of: "*") {
            let column = termStart + 1 + stem.distance(from: stem.startIndex, to: star)
            throw SearchSyntaxError(column: column, message: "'\(word)': '*' is allowed only at the end of a word")
        }
        guard !stem.isEmpty else {
            throw SearchSyntaxError(column: termStart + 1, message: "'*' needs a word before it")
        }
        return .init(negated: negated, term: .word(stem, prefix: prefix))
    }

    /// A double-quoted string at the position (`""` inside stands for one quote); the position after it.
    private mutating func quoted() throws(SearchSyntaxError) -> String {
        let start = position
        position += 1
        var value = ""
        while position < text.count {
            if text[position] == "\"" {
                if position + 1 < text.count, text[position + 1] == "\"" {
                    value.append("\"")
                    position += 2
                    continue
                }
                position += 1
                return value
            }
            value.append(text[position])
            position += 1
        }
        throw SearchSyntaxError(column: start + 1, message: "unterminated quote")
    }

    private func endOfTerm() throws(SearchSyntaxError) {
        guard position < text.count, !text[position].isWhitespace else { return }
        throw SearchSyntaxError(column: position + 1, message: "a space must follow a quoted term")
    }

    private mutating func filter(_ name: String, column: Int) throws(SearchSyntaxError) -> SearchQuery.Filter {
        let key = name.lowercased()
        guard SearchQuery.filterNames.contains(key) else {
            throw SearchSyntaxError(
                column: column,
                message: "unknown filter '\(name):' (filters: "
                    + SearchQuery.filterNames.map { $0 + ":" }.joined(separator: " ")
                    + "; quote a word with a colon to search it as text)")
        }
        let valueColumn = position + 1
        let value: String
        if position < text.count, text[position] == "\"" {
            value = try quoted()
            try endOfTerm()
        } else {
            var v = ""
            while position < text.count, !text[position].isWhitespace {
                v.append(text[position])
                position += 1
            }
            value = v
        }
        func bad(_ message: String) -> SearchSyntaxError {
            SearchSyntaxError(column: valueColumn, message: "'\(key):\(value)': \(message)")
        }
        guard !value.isEmpty else { throw SearchSyntaxError(column: column, message: "'\(key):' needs a value") }
        switch key {
        case "owner": return .owner(value)
        case "author": return .author(value)
        case "path": return .path(value.hasPrefix("/") ? value : "/" + value)
        case "name": return .name(value)
        case "tag":
            let parts = value.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            var tag = String(parts[0])
            if tag.hasPrefix("user.") { tag.removeFirst(5) }
            guard !tag.isEmpty else { throw bad("needs a tag name") }
            return .tag(name: tag, value: parts.count > 1 ? String(parts[1]) : nil)
        case "modified", "created":
            guard let range = timeRange(value) else {
                throw bad("expected [<|<=|>|>=]DATE (YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]Z) or an age such as 7d")
            }
            return key == "modified" ? .modified(range) : .created(range)
        case "size":
            let (op, rest) = Self.comparison(value)
            guard let bytes = Self.bytes(rest) else {
                throw bad("expected [<|<=|>|>=]SIZE with SIZE a number of bytes, or with K, M, G or T (powers of 1024)")
            }
            switch op {
            case "<": return .size(lower: nil, upper: bytes)
            case "<=": return .size(lower: nil, upper: bytes &+ 1)
            case ">": return .size(lower: bytes &+ 1, upper: nil)
            case ">=": return .size(lower: bytes, upper: nil)
            default: return .size(lower: bytes, upper: bytes &+ 1)
            }
        case "kind":
            let kind = value.lowercased() == "dir" ? "directory" : value.lowercased()
            guard SearchQuery.kinds.contains(kind) else {
                throw bad("expected one of file, dir (directory), symlink, special")
            }
            return .kind(kind)
        default:
            let flag: Bool
            switch value.lowercased() {
            case "yes", "true": flag = true
            case "no", "false": flag = false
            default: throw bad("expected yes or no")
            }
            return key == "conflict" ? .conflict(flag) : .shared(flag)
        }
    }

    /// The operator in front of a filter value (`=` when there is none) and the rest.
    private static func comparison(_ value: String) -> (String, String) {
        for op in ["<=", ">=", "<", ">", "="] where value.hasPrefix(op) {
            return (op, String(value.dropFirst(op.count)))
        }
        return ("=", value)
    }

    static func bytes(_ text: String) -> UInt64? {
        let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        var digits = text
        var scale: UInt64 = 1
        if let last = digits.last?.uppercased().first, let unit = units[last] {
            scale = unit
            digits.removeLast()
        }
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let n = UInt64(digits) else { return nil }
        let (product, overflow) = n.multipliedReportingOverflow(by: scale)
        return overflow ? nil : product
    }

    /// A date bound, or an age (`7d`: seven days before now) whose comparison reads as an age: `<7d` is newer.
    private func timeRange(_ value: String) -> SearchQuery.TimeRange? {
        let (op, rest) = Self.comparison(value)
        if let age = Self.age(rest) {
            let instant = now - age
            switch op {
            case "<", "<=": return .init(lower: instant, upper: nil)
            case ">", ">=": return .init(lower: nil, upper: instant)
            default: return nil
            }
        }
        guard let (start, length) = Self.instant(rest) else { return nil }
        switch op {
        case "<": return .init(lower: nil, upper: start)
        case "<=": return .init(lower: nil, upper: start + length)
        case ">": return .init(lower: start + length, upper: nil)
        case ">=": return .init(lower: start, upper: nil)
        default: return .init(lower: start, upper: start + length)
        }
    }

    /// `7d`, `12h`, `30m`, `2w`, `45s`, in milliseconds.
    static func age(_ text: String) -> Int64? {
        let units: [Character: Int64] = ["s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000]
        guard let unit = text.last.flatMap({ units[$0] }) else { return nil }
        let digits = text.dropLast()
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let n = Int64(digits), n <= 1_000_000 else { return nil }
        return n * unit
    }

    /// `YYYY-MM-DD` (that UTC day) or `YYYY-MM-DDTHH:MM[:SS]Z` (that minute or second): its start (ms) and length.
    static func instant(_ text: String) -> (Int64, Int64)? {
        let chars = Array(text)
        func number(_ range: Range<Int>) -> Int64? {
            guard range.upperBound <= chars.count, chars[range].allSatisfy({ $0.isASCII && $0.isNumber }) else {
                return nil
            }
            return Int64(String(chars[range]))
        }
        guard chars.count >= 10, chars[4] == "-", chars[7] == "-", let year = number(0..<4),
            let month = number(5..<7), let day = number(8..<10), (1...12).contains(month),
            (1...daysIn(month: month, year: year)).contains(day)
        else { return nil }
        var ms = daysFromCivil(year: year, month: month, day: day) * 86_400_000
        if chars.count == 10 { return (ms, 86_400_000) }
        guard chars.count == 17 || chars.count == 20, chars[10] == "T", chars[13] == ":", chars.last == "Z",
            let hour = number(11..<13), let minute = number(14..<16), hour < 24, minute < 60
        else { return nil }
        ms += (hour * 60 + minute) * 60_000
        if chars.count == 17 { return (ms, 60_000) }
        guard chars[16] == ":", let second = number(17..<19), second < 60 else { return nil }
        return (ms + second * 1000, 1000)
    }

    private static func daysIn(month: Int64, year: Int64) -> Int64 {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
    static func daysFromCivil(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }
}
