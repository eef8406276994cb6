import HypernetModel
import Testing

@Suite struct RetentionPolicyTests {
    typealias Candidate = RetentionPolicy.Candidate<Int>
    static let hour: UInt64 = 3_600_000
    static let day: UInt64 = 24 * hour
    /// 2026-12-07T00:00:00Z, a Monday.
    static let now: UInt64 = 1_796_601_600_000

    @Test func printsWhatItParses() throws {
        let cases = [
            "all": "all", "last 3": "last 3", "within 30d": "within 30d", "within 1y6w": "within 1y42d",
            "within 90m": "within 1h30m", "within 36h": "within 1d12h", "daily 7,  last 2": "last 2 daily 7",
            "monthly 12 weekly 4 hourly 24 yearly 3 within 2d last 1":
                "last 1 within 2d hourly 24 weekly 4 monthly 12 yearly 3",
        ]
        for (text, canonical) in cases {
            let policy = try RetentionPolicy(parsing: text)
            #expect(policy.description == canonical)
            #expect(try RetentionPolicy(parsing: policy.description) == policy)
        }
        #expect(RetentionPolicy.default.description == "within 30d daily 180")
    }

    @Test func refusesWithOneLine() {
        let bad: [(String, String)] = [
            ("", "empty"), ("last", "needs a value"), ("last 0", "from 1"), ("last x", "whole number"),
            ("last 2 last 3", "twice"), ("all last 2", "combines"), ("keep 3", "unknown retention rule"),
            ("within", "needs a value"), ("within 5", "duration"), ("within d", "duration"),
            ("within 1d2y", "duration"), ("within 0s", "duration"), ("within 1001y", "duration"),
            ("within 99999999999y", "duration"), ("daily -1", "whole number"), ("weekly 2 weekly 2", "twice"),
        ]
        for (text, part) in bad {
            let error = #expect(throws: RetentionPolicy.ParseError.self) { try RetentionPolicy(parsing: text) }
            #expect(error?.description.contains(part) == true, "\(text)")
            #expect(error?.description.contains("\n") == false)
        }
    }

    /// Revisions every 6 hours over 10 days, the newest a head.
    static let history: [Candidate] = (0..<40).map { i in
        Candidate(id: i, milliseconds: now - UInt64(39 - i) * 6 * hour, head: i == 39)
    }

    @Test func lastAndWithin() throws {
        #expect(try RetentionPolicy(parsing: "last 3").kept(Self.history, now: Self.now) == [37, 38, 39])
        // Younger than a day: the 4 revisions of the last 18 hours and the one exactly 24 hours old.
        #expect(try RetentionPolicy(parsing: "within 1d").kept(Self.history, now: Self.now) == [35, 36, 37, 38, 39])
        #expect(RetentionPolicy.all.kept(Self.history, now: Self.now) == Set(0..<40))
    }

    @Test func thinningKeepsTheNewestOfEachPeriod() throws {
        // Days have revisions at 00, 06, 12, 18 h; the newest (39) is at 00:00 of `now`'s day alone.
        #expect(try RetentionPolicy(parsing: "daily 3").kept(Self.history, now: Self.now) == [39, 38, 34])
        #expect(try RetentionPolicy(parsing: "hourly 2").kept(Self.history, now: Self.now) == [39, 38])
        // `now` is a Monday: the week before holds revisions 11…38, the one before that 0…10.
        #expect(try RetentionPolicy(parsing: "weekly 5").kept(Self.history, now: Self.now) == [39, 38, 10])
        // December holds revisions 15…39, November 0…14.
        #expect(try RetentionPolicy(parsing: "monthly 2").kept(Self.history, now: Self.now) == [39, 14])
        #expect(try RetentionPolicy(parsing: "yearly 9").kept(Self.history, now: Self.now) == [39])
    }

    @Test func rulesCombineAndHeadsStay() throws {
        var revisions = Self.history
        revisions[5].head = true  // a conflict head
        let kept = try RetentionPolicy(parsing: "last 1 daily 2").kept(revisions, now: Self.now)
        #expect(kept == [39, 38, 5])
    }

    @Test func calendarBuckets() throws {
        // 2024-02-29T23:00Z and 2024-03-01T01:00Z: two months, two days, one ISO week (Thu, Fri).
        let leap: UInt64 = 1_709_247_600_000
        let revisions = [
            Candidate(id: 1, milliseconds: leap, head: false),
            Candidate(id: 2, milliseconds: leap + 2 * Self.hour, head: false),
        ]
        #expect(try RetentionPolicy(parsing: "monthly 5").kept(revisions, now: Self.now) == [1, 2])
        #expect(try RetentionPolicy(parsing: "weekly 5").kept(revisions, now: Self.now) == [2])
        #expect(try RetentionPolicy(parsing: "yearly 5").kept(revisions, now: Self.now) == [2])
    }

    /// The policy is an xattr entry no user xattr can name: it encodes with the metadata and decodes back.
    @Test func metadataCarriesThePolicy() throws {
        var metadata = RevisionMetadata(
            mode: 0o100644, uid: 0, gid: 0, mtimeSeconds: 0, mtimeNanoseconds: 0, ctimeSeconds: 0, ctimeNanoseconds: 0,
            size: 0, quorum: 0, xattrs: [RevisionMetadata.Xattr(name: "user.a", value: [1])], content: nil,
            symlinkTarget: [])
        #expect(metadata.retention == nil)
        metadata.retention = try RetentionPolicy(parsing: "daily 7 last 2")
        let decoded = try RevisionMetadata(decoding: metadata.encoded())
        #expect(decoded.retention?.description == "last 2 daily 7")
        #expect(decoded.xattrs.value(of: "user.a") == [1])
        metadata.retention = nil
        #expect(metadata.retention == nil && metadata.xattrs.map(\.name) == ["user.a"])
        // A rule this node does not know (a later writer's) keeps everything.
        metadata.xattrs.set(Array("fortnightly 3".utf8), for: RevisionMetadata.retentionEntry)
        #expect(metadata.retention == .all)
    }
}
