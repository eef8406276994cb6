/// How long a document's history keeps its content (`user.hypernet.retention`, `hypernet retention`): a pure value
/// that parses, prints and picks the revisions it keeps. The grammar and the default are in docs/design.md
/// ("Retention").
///
/// A policy is `all`, or one or more rules, each keeping what it names; a revision is kept if any rule keeps it:
/// `last N` (the N newest), `within DURATION` (younger than that), and the thinning rules `hourly N`, `daily N`,
/// `weekly N`, `monthly N`, `yearly N` (the newest revision of each of the N latest UTC hours, days, ISO weeks,
/// months or years that have one, as restic's `--keep-daily`). Heads are always kept.
public struct RetentionPolicy: Sendable, Hashable, CustomStringConvertible {
    /// Keeps everything: no rule can add to it, so it stands alone.
    public var all: Bool
    public var last: Int?
    /// Seconds.
    public var within: UInt64?
    /// Thinning: per period, how many of the latest periods that have a revision keep their newest one.
    public var thinning: [Period: Int]

    public enum Period: String, Sendable, Hashable, CaseIterable {
        case hourly, daily, weekly, monthly, yearly
    }

    public static let all = RetentionPolicy(all: true, last: nil, within: nil, thinning: [:])
    /// Every save of the last 30 days, then the last one of each of 180 days that had one (docs/design.md,
    /// "Retention": `restore` of last week's file finds every version of it, and an old file keeps half a year).
    public static let `default` = RetentionPolicy(all: false, last: nil, within: 30 * day, thinning: [.daily: 180])

    /// What a rule may count: far above any use, and small enough that no arithmetic on it overflows.
    public static let maximumCount = 1_000_000
    /// 1,000 years, in seconds.
    public static let maximumDuration: UInt64 = 1000 * year

    static let day: UInt64 = 86_400
    static let year: UInt64 = 365 * day
    /// Units of a duration, largest first (printing takes them greedily; `w` is read but never printed).
    static let units: [(String, UInt64)] = [("y", year), ("w", 7 * day), ("d", day), ("h", 3600), ("m", 60), ("s", 1)]

    init(all: Bool, last: Int?, within: UInt64?, thinning: [Period: Int]) {
        self.all = all
        self.last = last
        self.within = within
        self.thinning = thinning
    }

    /// A policy the text names. The error is one line saying what is wrong.
    public init(parsing text: String) throws(ParseError) {
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "," }).map(String.init)
        guard !words.isEmpty else { throw ParseError("empty retention policy (try `all`, `last 10` or `within 30d`)") }
        if words == ["all"] {
            self = .all
            return
        }
        self.init(all: false, last: nil, within: nil, thinning: [:])
        var index = 0
        while index < words.count {
            let rule = words[index]
            if rule == "all" { throw ParseError("`all` keeps everything and combines with no other rule") }
            guard index + 1 < words.count else { throw ParseError("`\(rule)` needs a value") }
            let value = words[index + 1]
            index += 2
            if rule == "within" {
                guard within == nil else { throw ParseError("`within` given twice") }
                within = try Self.duration(value)
                continue
            }
            guard let count = Int(value), (1...Self.maximumCount).contains(count) else {
                throw ParseError("`\(rule) \(value)`: the count must be a whole number from 1 to \(Self.maximumCount)")
            }
            if rule == "last" {
                guard last == nil else { throw ParseError("`last` given twice") }
                last = count
            } else if let period = Period(rawValue: rule) {
                guard thinning[period] == nil else { throw ParseError("`\(rule)` given twice") }
                thinning[period] = count
            } else {
                throw ParseError(
                    "unknown retention rule `\(rule)` (known: all, last, within, hourly, daily, weekly, monthly, yearly)"
                )
            }
        }
    }

    /// Seconds of `30d`, `12h`, `1y6w`, `90m` (minutes), `45s`: one or more number-unit pairs, each unit once and
    /// largest first, in all at least a second and at most `maximumDuration`.
    static func duration(_ text: String) throws(ParseError) -> UInt64 {
        let bad = ParseError(
            "`within \(text)`: a duration is like 30d, 12h or 1y6w (units y, w, d, h, m = minutes, s), up to 1000y")
        var total: UInt64 = 0
        var digits = ""
        var nextUnit = 0
        for character in text {
            if character.isASCII, character.isNumber {
                digits.append(character)
                continue
            }
            guard let position = Self.units.firstIndex(where: { $0.0 == String(character) }), position >= nextUnit,
                digits.count <= 10, let amount = UInt64(digits)
            else { throw bad }
            total += amount * Self.units[position].1
            guard total <= Self.maximumDuration else { throw bad }
            digits = ""
            nextUnit = position + 1
        }
        guard digits.isEmpty, total >= 1 else { throw bad }
        return total
    }

    /// The canonical text: `all`, or the rules in the order last, within, hourly…yearly. Parsing it gives this
    /// policy back.
    public var description: String {
        if all { return "all" }
        var words: [String] = []
        if let last { words.append("last \(last)") }
        if let within { words.append("within \(Self.durationText(within))") }
        for period in Period.allCases {
            if let count = thinning[period] { words.append("\(period.rawValue) \(count)") }
        }
        return words.joined(separator: " ")
    }

    static func durationText(_ seconds: UInt64) -> String {
        var rest = seconds
        var text = ""
        for (unit, size) in units where unit != "w" && rest >= size {
            text += "\(rest / size)\(unit)"
            rest %= size
        }
        return text
    }

    /// One revision as the policy sees it: its time (Unix milliseconds) and whether it is a head.
    public struct Candidate<ID: Hashable>: Sendable where ID: Sendable {
        public var id: ID
        public var milliseconds: UInt64
        public var head: Bool
        public init(id: ID, milliseconds: UInt64, head: Bool) {
            self.id = id
            self.milliseconds = milliseconds
            self.head = head
        }
    }

    /// The ids of `revisions` (one document's) that the policy keeps at `now` (Unix milliseconds). Ties in time
    /// are broken by input order, the later one counting as newer, so callers pass them in a stable order.
    public func kept<ID>(_ revisions: [Candidate<ID>], now: UInt64) -> Set<ID> {
        if all { return Set(revisions.map(\.id)) }
        var kept = Set(revisions.lazy.filter(\.head).map(\.id))
        let newestFirst = revisions.enumerated().sorted { a, b in
            (a.element.milliseconds, a.offset) > (b.element.milliseconds, b.offset)
        }.map(\.element)
        if let last { kept.formUnion(newestFirst.prefix(last).map(\.id)) }
        if let within {
            let cutoff = now > within * 1000 ? now - within * 1000 : 0
            kept.formUnion(newestFirst.lazy.filter { $0.milliseconds >= cutoff }.map(\.id))
        }
        for (period, count) in thinning {
            var periods = 0
            var previous: Int64?
            for revision in newestFirst where periods < count {
                let bucket = Self.bucket(revision.milliseconds, period)
                guard bucket != previous else { continue }
                previous = bucket
                periods += 1
                kept.insert(revision.id)
            }
        }
        return kept
    }

    /// The UTC period holding `milliseconds`, as a number that grows with time.
    static func bucket(_ milliseconds: UInt64, _ period: Period) -> Int64 {
        let hours = Int64(milliseconds / 3_600_000)
        let days = hours / 24
        switch period {
        case .hourly: return hours
        case .daily: return days
        case .weekly: return (days + 3) / 7  // 1970-01-01 was a Thursday; ISO weeks start on Monday
        case .monthly, .yearly:
            let (year, month) = civil(days: days)
            return period == .yearly ? year : year * 12 + month - 1
        }
    }

    /// Year and month (1…12) of a day since 1970-01-01 (Howard Hinnant's `civil_from_days`, days ≥ 0).
    static func civil(days: Int64) -> (year: Int64, month: Int64) {
        let z = days + 719_468
        let era = z / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shiftedMonth = (5 * dayOfYear + 2) / 153
        let month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month)
    }

    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }
}
