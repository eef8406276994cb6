/// GNU grep's pattern dialects (POSIX BRE and ERE with GNU's extensions, in the C locale) rewritten as PCRE2
/// patterns with the same meaning per line (docs/grep.md, "Pattern syntax"). PCRE2 sees only what this emits,
/// so none of its own syntax (`(?`, `\d`, verbs) is reachable from a grep pattern.
struct Translation {
    /// The PCRE2 pattern.
    private(set) var output: [UInt8] = []
    /// Capturing groups opened so far (in every piece: back-references are renumbered by `groupBase`).
    private(set) var groups = 0
    /// A `` \` `` or `\'` anchors at the line's start or end: such a pattern is matched line by line.
    private(set) var anchorsSubject = false

    private let extended: Bool
    private var input: [UInt8] = []
    private var index = 0
    /// Where in `output` the item a quantifier would repeat starts; nil where nothing can be repeated.
    private var atomStart: Int?
    /// The last thing emitted was a quantifier: another one must repeat the whole (PCRE2 would read `a*+`
    /// as possessive and `a+?` as lazy).
    private var quantified = false
    /// The open groups (output offset, number in this piece), and the numbers of the groups this piece has closed.
    private var openGroups: [(offset: Int, number: Int)] = []
    private var closedGroups: Set<Int> = []
    private var groupBase = 0

    init(extended: Bool) {
        self.extended = extended
    }

    /// Appends one pattern (one line of a grep pattern list) as a non-capturing alternative.
    mutating func append(_ piece: [UInt8]) throws(PatternError) {
        if !output.isEmpty { output += Array("|".utf8) }
        output += Array("(?:".utf8)
        input = piece
        index = 0
        atomStart = nil
        quantified = false
        openGroups = []
        closedGroups = []
        groupBase = groups
        while index < input.count { try step() }
        if !openGroups.isEmpty { throw PatternError("Unmatched ( or \\(") }
        output += Array(")".utf8)
    }

    /// Appends a literal byte string (`-F`) as a non-capturing alternative.
    mutating func appendFixed(_ piece: [UInt8]) {
        if !output.isEmpty { output += Array("|".utf8) }
        output += Array("(?:".utf8)
        for byte in piece { literal(byte) }
        output += Array(")".utf8)
    }

    private mutating func step() throws(PatternError) {
        let byte = input[index]
        index += 1
        switch byte {
        case UInt8(ascii: "\\"):
            try escape()
        case UInt8(ascii: "["):
            try bracket()
        case UInt8(ascii: "."):
            atom(Array(".".utf8))
        case UInt8(ascii: "*"):
            quantifier(Array("*".utf8))
        case UInt8(ascii: "+"), UInt8(ascii: "?"):
            if extended { quantifier([byte]) } else { literalAtom(byte) }
        case UInt8(ascii: "{"):
            if extended, let interval = try interval(closing: Array("}".utf8)) {
                quantifier(interval)
            } else {
                literalAtom(byte)
            }
        case UInt8(ascii: "("):
            if extended { openGroup() } else { literalAtom(byte) }
        case UInt8(ascii: ")"):
            // GNU's ERE takes an unmatched `)` literally.
            if extended && !openGroups.isEmpty { closeGroup() } else { literalAtom(byte) }
        case UInt8(ascii: "|"):
            if extended { alternative() } else { literalAtom(byte) }
        case UInt8(ascii: "^"):
            // An anchor anywhere in an ERE; in a BRE only where a branch starts.
            if extended || atBranchStart(before: index - 1) { anchor(Array("^".utf8)) } else { literalAtom(byte) }
        case UInt8(ascii: "$"):
            if extended || atBranchEnd(after: index) { anchor(Array("$".utf8)) } else { literalAtom(byte) }
        default:
            literalAtom(byte)
        }
    }

    private mutating func escape() throws(PatternError) {
        guard index < input.count else { throw PatternError("Trailing backslash") }
        let byte = input[index]
        index += 1
        switch byte {
        case UInt8(ascii: "("): if extended { literalAtom(byte) } else { openGroup() }
        case UInt8(ascii: ")"):
            if extended {
                literalAtom(byte)
            } else {
                guard !openGroups.isEmpty else { throw PatternError("Unmatched ) or \\)") }
                closeGroup()
            }
        case UInt8(ascii: "|"): if extended { literalAtom(byte) } else { alternative() }
        case UInt8(ascii: "+"), UInt8(ascii: "?"): if extended { literalAtom(byte) } else { quantifier([byte]) }
        case UInt8(ascii: "{"):
            if extended {
                literalAtom(byte)
            } else {
                guard let interval = try interval(closing: Array("\\}".utf8)) else {
                    throw PatternError("Unmatched \\{")
                }
                quantifier(interval)
            }
        case UInt8(ascii: "1")...UInt8(ascii: "9"):
            let number = Int(byte - UInt8(ascii: "0"))
            guard closedGroups.contains(number) else { throw PatternError("Invalid back reference") }
            atom(Array("\\g{\(groupBase + number)}".utf8))
        case UInt8(ascii: "<"): anchor(Array("\\b(?=\\w)".utf8))
        case UInt8(ascii: ">"): anchor(Array("\\b(?<=\\w)".utf8))
        case UInt8(ascii: "b"), UInt8(ascii: "B"): anchor([UInt8(ascii: "\\"), byte])
        case UInt8(ascii: "`"):
            anchorsSubject = true
            anchor(Array("\\A".utf8))
        case UInt8(ascii: "'"):
            anchorsSubject = true
            anchor(Array("\\z".utf8))
        case UInt8(ascii: "w"), UInt8(ascii: "S"): atom([UInt8(ascii: "\\"), byte])
        // The complements never take the newline: a match stays within its line (see LineScanner).
        case UInt8(ascii: "W"): atom(Array("[^\\w\\n]".utf8))
        case UInt8(ascii: "s"): atom(Array("[^\\S\\n]".utf8))
        default:
            // GNU grep takes any other escaped character literally (warning of a stray `\` before a letter).
            literalAtom(byte)
        }
    }

    /// `[...]`: POSIX bracket expressions, where a backslash is literal; classes like `[:alpha:]` as PCRE2 has them.
    private mutating func bracket() throws(PatternError) {
        var set = Array("[".utf8)
        var negated = false
        if index < input.count, input[index] == UInt8(ascii: "^") {
            negated = true
            set.append(UInt8(ascii: "^"))
            index += 1
        }
        var first = true
        // The last single character, which a `-` may make the start of a range.
        var previous: UInt8?
        while true {
            guard index < input.count else { throw PatternError("Unmatched [, [^, [:, [., or [=") }
            let byte = input[index]
            index += 1
            if byte == UInt8(ascii: "]") && !first { break }
            first = false
            if byte == UInt8(ascii: "["), index < input.count,
                let kind = [UInt8(ascii: ":"), UInt8(ascii: "="), UInt8(ascii: ".")].first(where: { $0 == input[index] }
                )
            {
                let start = index + 1
                var end = start
                while end + 1 < input.count && !(input[end] == kind && input[end + 1] == UInt8(ascii: "]")) {
                    end += 1
                }
                guard end + 1 < input.count else { throw PatternError("Unmatched [, [^, [:, [., or [=") }
                let name = Array(input[start..<end])
                index = end + 2
                if kind == UInt8(ascii: ":") {
                    guard Self.classes.contains(String(decoding: name, as: UTF8.self)) else {
                        throw PatternError("Invalid character class name")
                    }
                    set += Array("[:".utf8) + name + Array(":]".utf8)
                } else {
                    // The C locale's collating elements and equivalence classes are single characters.
                    guard name.count == 1 else { throw PatternError("Invalid collation character") }
                    set += Self.escaped(name[0])
                }
                previous = nil
                continue
            } else if byte == UInt8(ascii: "-"), let low = previous, index < input.count,
                input[index] != UInt8(ascii: "]")
            {
                let high = input[index]
                index += 1
                guard low <= high else { throw PatternError("Invalid range end") }
                set += [byte] + Self.escaped(high)
                previous = nil
                continue
            } else {
                set += Self.escaped(byte)
            }
            previous = byte
        }
        if negated { set += Array("\\n".utf8) }
        set.append(UInt8(ascii: "]"))
        atom(set)
    }

    static let classes: Set<String> = [
        "alpha", "upper", "lower", "digit", "xdigit", "space", "blank", "punct", "print", "graph", "cntrl", "alnum",
    ]

    /// After `{` (or `\{`): `m`, `m,`, `,n` or `m,n` and the closing brace as PCRE2's `{m,n}`; nil (the brace is
    /// literal) when no valid interval follows.
    private mutating func interval(closing: [UInt8]) throws(PatternError) -> [UInt8]? {
        var cursor = index
        func number() -> Int? {
            var value: Int?
            while cursor < input.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(input[cursor]) {
                value = min((value ?? 0) * 10 + Int(input[cursor] - UInt8(ascii: "0")), 1 << 20)
                cursor += 1
            }
            return value
        }
        let low = number()
        var high = low
        var comma = false
        if cursor < input.count, input[cursor] == UInt8(ascii: ",") {
            comma = true
            cursor += 1
            high = number()
        }
        guard low != nil || comma, cursor + closing.count <= input.count,
            Array(input[cursor..<cursor + closing.count]) == closing
        else { return nil }
        let minimum = low ?? 0
        if let high, high < minimum { throw PatternError("Invalid content of \\{\\}") }
        // RE_DUP_MAX, as GNU grep.
        if max(minimum, high ?? 0) > 32767 { throw PatternError("Regular expression too big") }
        index = cursor + closing.count
        return Array("{\(minimum),\(high.map(String.init) ?? "")}".utf8)
    }

    private func atBranchStart(before position: Int) -> Bool {
        position == 0 || input[..<position].suffix(2) == [UInt8(ascii: "\\"), UInt8(ascii: "(")]
            || input[..<position].suffix(2) == [UInt8(ascii: "\\"), UInt8(ascii: "|")]
    }

    private func atBranchEnd(after position: Int) -> Bool {
        position == input.count || input[position...].prefix(2) == [UInt8(ascii: "\\"), UInt8(ascii: ")")]
            || input[position...].prefix(2) == [UInt8(ascii: "\\"), UInt8(ascii: "|")]
    }

    private mutating func openGroup() {
        groups += 1
        openGroups.append((output.count, groups - groupBase))
        output.append(UInt8(ascii: "("))
        atomStart = nil
        quantified = false
    }

    private mutating func closeGroup() {
        let (start, number) = openGroups.removeLast()
        output.append(UInt8(ascii: ")"))
        closedGroups.insert(number)
        atomStart = start
        quantified = false
    }

    private mutating func alternative() {
        output.append(UInt8(ascii: "|"))
        atomStart = nil
        quantified = false
    }

    private mutating func anchor(_ bytes: [UInt8]) {
        output += bytes
        atomStart = nil
        quantified = false
    }

    private mutating func atom(_ bytes: [UInt8]) {
        atomStart = output.count
        output += bytes
        quantified = false
    }

    private mutating func literalAtom(_ byte: UInt8) {
        atom(Self.escaped(byte))
    }

    private mutating func literal(_ byte: UInt8) {
        output += Self.escaped(byte)
    }

    private mutating func quantifier(_ bytes: [UInt8]) {
        guard let start = atomStart else {
            // Nothing to repeat: GNU's BRE takes `*` literally, its ERE ignores the operator.
            if !extended { literalAtom(bytes[0]) }
            return
        }
        if quantified {
            output.insert(contentsOf: Array("(?:".utf8), at: start)
            output.append(UInt8(ascii: ")"))
        }
        output += bytes
        quantified = true
    }

    /// A byte as a PCRE2 literal: ASCII punctuation escaped, anything else as it is.
    static func escaped(_ byte: UInt8) -> [UInt8] {
        let punctuation =
            (0x21...0x2F).contains(byte) || (0x3A...0x40).contains(byte) || (0x5B...0x60).contains(byte)
            || (0x7B...0x7E).contains(byte)
        return punctuation ? [UInt8(ascii: "\\"), byte] : [byte]
    }
}
