import HypernetScan
import Testing

@Suite struct GroupCountsTests {
    func counts(_ regex: String, _ lines: [String], ignoreCase: Bool = false) throws -> GroupCounts {
        let pattern = try LinePattern(pattern: regex, syntax: .extended, ignoreCase: ignoreCase)
        var counts = GroupCounts()
        for line in lines { try counts.add(line: Array(line.utf8), matching: pattern) }
        return counts
    }

    func table(_ pairs: [String: Int]) -> GroupCounts {
        GroupCounts(counts: Dictionary(uniqueKeysWithValues: pairs.map { (Array($0.key.utf8), $0.value) }))
    }

    @Test func countsEveryOccurrenceOfTheGroup() throws {
        let lines = ["ERROR svc=api x", "ERROR svc=db svc=api", "INFO svc=api", "svc= empty", ""]
        #expect(try counts("svc=([a-z]+)", lines) == table(["api": 3, "db": 1]))
        #expect(try counts("ERROR svc=([a-z]+)", lines) == table(["api": 1, "db": 1]))
        #expect(try counts("svc=[a-z]+", lines) == table(["svc=api": 3, "svc=db": 1]), "no group: the match")
        #expect(try counts("(ERROR|INFO) svc=(a)?", lines) == table(["ERROR\ta": 1, "ERROR\t": 1, "INFO\ta": 1]))
        #expect(try counts("x*", lines) == table(["x": 1]), "empty matches count nothing")
        #expect(try counts("(error)", lines, ignoreCase: true) == table(["ERROR": 2]))
    }

    @Test func invalidUTF8IsCountedAsBytes() throws {
        var counts = GroupCounts()
        try counts.add(
            line: [0x61, 0xFF, 0x62, 0x20, 0x61, 0xFF, 0x62], matching: LinePattern(pattern: "a(.)b", syntax: .extended)
        )
        #expect(counts == GroupCounts(counts: [[0xFF]: 2]))
    }

    @Test func tablesFromSeveralNodesMerge() throws {
        var merged = try counts("svc=([a-z]+)", ["svc=api", "svc=db"])
        merged.merge(try counts("svc=([a-z]+)", ["svc=api", "svc=web svc=api"]))
        merged.merge(GroupCounts())
        #expect(merged == table(["api": 3, "db": 1, "web": 1]))
        let top = merged.top(2)
        #expect(top.map(\.value) == [Array("api".utf8), Array("db".utf8)], "ties in byte order")
        #expect(top.map(\.count) == [3, 1])
        #expect(merged.top().count == 3)
    }
}
