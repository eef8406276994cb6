import GRDB

/// How results are ordered (`hypernet search --sort`).
public enum SearchSort: String, Sendable, Codable, CaseIterable {
    /// bm25 (a name match weighs more than a body match), the newest first among equals; without text terms the
    /// same as `modified`.
    case relevance
    /// Newest first.
    case modified
    case created
    /// Largest first.
    case size
    /// By name, then path (bytewise).
    case name
    case path
}

/// A query compiled to one SQL statement over the index (`SearchIndex`): user text only ever travels as bound
/// parameters, FTS5 terms inside double quotes. The metadata filters are conditions of the same statement as the
/// full-text MATCH, so SQLite applies them to each candidate before sorting and `LIMIT`: a selective filter never
/// lets a page of text matches be filtered down to nothing afterwards.
public struct SearchPlan: Sendable {
    public var sql: String
    public var arguments: StatementArguments
    /// The same query over the first rows of its order only (the best-scoring text rows, or the first documents by
    /// the sort's index), tried first: a broad query then neither joins nor sorts every match. Nil when the query
    /// is restricted to given documents or sorts text matches by metadata.
    public var window: Window?

    /// A bounded form of the query and how to tell whether it answered exactly what the whole query would.
    public struct Window: Sendable {
        public var sql: String
        public var arguments: StatementArguments
        /// How many rows the window takes, and the page size asked for.
        var size: Int
        var limit: Int
        /// Text ranked by score: each row also reads the window's worst score and its number of rows.
        var ranked: Bool

        /// Whether `rows` of the window are the page the whole query gives. Documents come in the order of their
        /// best row, and every row scoring better than the window's worst is in it: so a full page whose last
        /// score is better than that is exact (an equal score may have ties outside). A window of documents
        /// is a prefix of the sort's order (its first `size`, and their ties): a full page from it is the first of
        /// all.
        public func answers(_ rows: [Row]) -> Bool {
            guard ranked else { return rows.count == limit }
            guard let first = rows.first else { return false }
            let worst: Double = first[16]
            let count: Int = first[17]
            return count < size || (rows.count == limit && (rows[rows.count - 1][15] as Double) < worst)
        }
    }
    /// The window's size for a page: a filter keeping one match in eight still fills it from the window.
    static func windowSize(limit: Int, offset: Int) -> Int {
        max(1024, 8 * (min(limit, 1 << 30) + min(offset, 1 << 30)))
    }

    /// Weights of the FTS columns (name, body) in bm25.
    static let nameWeight = 4.0
    /// What a row reads (`SearchIndex`), in this order; a result adds its score.
    static let columns = """
        d.document, d.tree, d.revision, d.path, d.kind, d.owner, d.author, d.size, d.mtime, d.created, d.conflict, \
        d.shared, d.source, d.text_end, d.segments
        """
    /// A window's worst score and number of rows (`Window.answers`).
    static let windowColumns = ", (SELECT MAX(score) FROM m), (SELECT COUNT(*) FROM m)"
    /// The documents with a text row matching the FTS5 expression bound after it.
    static let textMatch =
        "d.document IN (SELECT s.document FROM segments s WHERE s.text_id IN "
        + "(SELECT rowid FROM fulltext WHERE fulltext MATCH ?))"

    /// `identity` maps an owner/author value (a contact name, `me`, a token) to the token stored; nil keeps it.
    /// `documents`, when given, restricts the results to these documents (hex ids): those a change just indexed.
    public init(
        _ query: SearchQuery, sort: SearchSort, limit: Int, offset: Int, documents: [String]? = nil,
        identity: (String) -> String? = { _ in nil }
    ) {
        var match: [String] = []
        var excluded: [String] = []
        var conditions: [String] = []
        var arguments: [(any DatabaseValueConvertible)?] = []
        for clause in query.clauses {
            let texts = clause.compactMap { Self.fts($0.term) }
            if texts.count == clause.count, clause.allSatisfy({ !$0.negated }) {
                match.append(texts.count == 1 ? texts[0] : "(" + texts.joined(separator: " OR ") + ")")
                continue
            }
            if clause.count == 1, clause[0].negated, let text = texts.first {
                excluded.append(text)
                continue
            }
            var alternatives: [String] = []
            for atom in clause {
                var (sql, values) = Self.condition(atom.term, identity: identity)
                if atom.negated { sql = "NOT (\(sql))" }
                alternatives.append(sql)
                arguments += values
            }
            conditions.append(
                alternatives.count == 1 ? alternatives[0] : "(" + alternatives.joined(separator: " OR ") + ")")
        }
        if !excluded.isEmpty {
            // In MATCH, NOT is exact for a text of one row; a document of several is excluded if any row has the term.
            conditions.append(match.isEmpty ? "NOT " + Self.textMatch : "(d.segments <= 1 OR NOT \(Self.textMatch))")
            arguments.append(excluded.joined(separator: " OR "))
            if match.isEmpty { excluded = [] }
        }
        let hasMatch = !match.isEmpty
        let expression = match.joined(separator: " AND ") + excluded.map { " NOT " + $0 }.joined()
        if let documents {
            conditions.append("d.document IN (" + documents.map { _ in "?" }.joined(separator: ", ") + ")")
            arguments += documents
        }
        // The order's first column (its index is docs_COLUMN) and direction: a window without text reads through it.
        let (column, descending): (String, Bool) =
            switch sort {
            case .relevance, .modified: ("mtime", true)
            case .created: ("created", true)
            case .size: ("size", true)
            case .name: ("name", false)
            case .path: ("path", false)
            }
        let base = "d.\(column)" + (descending ? " DESC" : "") + (sort == .name ? ", d.path" : "")
        let order = sort == .relevance && hasMatch ? "score, " + base : base
        // bm25 cannot be an aggregate's argument: the matching rows are scored first (a window takes the best of
        // them), then a document of several rows (appends) is answered once, with its best row's score.
        func statement(windowed: Bool) -> String {
            var sql: String
            if hasMatch {
                sql = """
                    WITH m AS MATERIALIZED (SELECT rowid AS r, bm25(fulltext, \(Self.nameWeight), 1.0) AS score \
                    FROM fulltext WHERE fulltext MATCH ?\(windowed ? " ORDER BY score LIMIT ?" : "")) \
                    SELECT \(Self.columns), MIN(m.score) AS score\(windowed ? Self.windowColumns : "") \
                    FROM m JOIN segments s ON s.text_id = m.r JOIN docs d ON d.document = s.document WHERE 1
                    """
            } else if windowed {
                // The documents up to the window's last in the order, with every tie of it (a prefix of the whole
                // order), read through the order's index: the scan stops when the page is full, so a broad filter
                // costs about a page of rows, a selective one at most the window's (its bound is read from the
                // index alone; none when there are fewer documents: then the whole query runs). Copying the window
                // out and sorting it again cost more than a filter's own index.
                sql = """
                    SELECT \(Self.columns), 0.0 AS score FROM docs d INDEXED BY docs_\(column) \
                    WHERE d.\(column) \(descending ? ">=" : "<=") \
                    (SELECT \(column) FROM docs ORDER BY \(column) \(descending ? "DESC" : "") LIMIT 1 OFFSET ?)
                    """
            } else {
                sql = "SELECT \(Self.columns), 0.0 AS score FROM docs d WHERE 1"
            }
            for condition in conditions { sql += " AND " + condition }
            if hasMatch { sql += " GROUP BY d.document" }
            return sql + " ORDER BY \(order), d.document LIMIT ? OFFSET ?"
        }
        let page: [(any DatabaseValueConvertible)?] = [limit, offset]
        let first: [(any DatabaseValueConvertible)?] = hasMatch ? [expression] : []
        sql = statement(windowed: false)
        self.arguments = StatementArguments(first + arguments + page)
        if documents == nil, !hasMatch || sort == .relevance {
            let size = Self.windowSize(limit: limit, offset: offset)
            window = Window(
                sql: statement(windowed: true),
                arguments: StatementArguments(first + [hasMatch ? size : size - 1] + arguments + page),
                size: size, limit: limit, ranked: hasMatch)
        }
    }

    /// The FTS5 string for a text term: every user character inside double quotes (a quote doubled).
    static func fts(_ term: SearchQuery.Term) -> String? {
        func quote(_ s: String) -> String { "\"" + s.replacing("\"", with: "\"\"") + "\"" }
        switch term {
        case .word(let w, let prefix): return quote(w) + (prefix ? "*" : "")
        case .phrase(let p): return quote(p)
        case .filter: return nil
        }
    }

    static func condition(_ term: SearchQuery.Term, identity: (String) -> String?) -> (
        String, [(any DatabaseValueConvertible)?]
    ) {
        switch term {
        case .word, .phrase:
            return (textMatch, [fts(term)!])
        case .filter(let filter):
            switch filter {
            case .owner(let who): return ("d.owner = ?", [identity(who) ?? who])
            case .author(let who): return ("d.author = ?", [identity(who) ?? who])
            case .path(let glob): return ("d.path GLOB ?", [glob])
            case .name(let glob): return ("d.name GLOB ?", [glob])
            case .tag(let name, let value):
                let base = "EXISTS (SELECT 1 FROM tags t WHERE t.document = d.document AND t.name = ?"
                return value.map { (base + " AND t.value = ?)", [name, $0]) } ?? (base + ")", [name])
            case .modified(let range): return bounds("d.mtime", range.lower, range.upper)
            case .created(let range): return bounds("d.created", range.lower, range.upper)
            case .size(let lower, let upper):
                func clamp(_ v: UInt64?) -> Int64? { v.map { Int64(clamping: $0) } }
                return bounds("d.size", clamp(lower), clamp(upper))
            case .kind(let kind): return ("d.kind = ?", [kind])
            case .conflict(let flag): return ("d.conflict = ?", [flag])
            case .shared(let flag): return ("d.shared = ?", [flag])
            }
        }
    }

    private static func bounds(_ column: String, _ lower: Int64?, _ upper: Int64?) -> (
        String, [(any DatabaseValueConvertible)?]
    ) {
        var parts: [String] = []
        var values: [(any DatabaseValueConvertible)?] = []
        if let lower {
            parts.append("\(column) >= ?")
            values.append(lower)
        }
        if let upper {
            parts.append("\(column) < ?")
            values.append(upper)
        }
        return (parts.isEmpty ? "1" : parts.joined(separator: " AND "), values)
    }
}
