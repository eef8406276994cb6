import HypernetCrypto
import HypernetModel
import Testing

/// The user xattr list held as its stored encoding (issue 14, item 3).
@Suite struct XattrListTests {
    static func entries(_ count: Int) -> [XattrList.Xattr] {
        (0..<count).map { .init(name: "user.n\($0 + 10_000)", value: [1]) }
    }

    /// A set, an insertion and a remove each rewrite their entry's bytes only, at 5,000 xattrs as at 50: what the
    /// list counts as changed since it was stored is that entry, and the result is what encoding the whole list
    /// gives.
    @Test func aChangeRewritesItsEntryOnly() throws {
        let root = try Digest(bytes: [UInt8](repeating: 7, count: 32))
        for count in [50, 5_000] {
            var expected = Self.entries(count)
            var list = XattrList(expected)
            let changes: [(String, [UInt8]?)] = [
                ("user.n\(10_000 + count / 2)", [2, 3]), ("user.n\(10_000 + count / 3)x", [4]),
                ("user.n\(10_000 + count / 4)", nil),
            ]
            for (name, value) in changes {
                list.stored = (root, Int.max, Int.max)
                if let value { list.set(value, for: name) } else { _ = list.remove(name: name) }
                expected.removeAll { $0.name == name }
                if let value { expected.append(.init(name: name, value: value)) }
                let whole = XattrList(expected)
                #expect(list == whole)
                #expect(list.space == expected.reduce(0) { $0 + $1.name.utf8.count + 1 + $1.value.count })
                let stored = try #require(list.stored)
                #expect(stored.root == root)
                let changed = list.encoded.count - stored.unchangedPrefix - stored.unchangedSuffix
                #expect(changed == (value.map { name.utf8.count + $0.count + 8 } ?? 0))
                #expect(list.value(of: name) == value)
            }
            let removed = list.remove(name: "user.none")
            #expect(!removed)
            #expect(list.map(\.name) == expected.map(\.name).sorted())
        }
    }

    /// Lists are in the order of their names' bytes; one stored out of order (no writer makes one) reads in order,
    /// a name listed twice with its last value, so that lookups find every entry.
    @Test func aListOutOfOrderIsKeptAsReadUntilItsFirstChange() throws {
        var w = ByteWriter()
        w.u8(1)
        for (name, value) in [("user.b", [1]), ("user.a", [2]), ("user.b", [3])] as [(String, [UInt8])] {
            w.string(name)
            w.blob(value)
        }
        var list = try XattrList(decoding: w.bytes)
        // As read, so the metadata holding it re-encodes to the bytes that were signed.
        #expect(list.encoded == w.bytes)
        #expect(list.map(\.name) == ["user.b", "user.a", "user.b"])
        #expect(list.value(of: "user.b") == [3])
        #expect(list.space == 3 * 8)
        list.set([4], for: "user.c")
        let sorted = XattrList([
            .init(name: "user.a", value: [2]), .init(name: "user.b", value: [3]), .init(name: "user.c", value: [4]),
        ])
        #expect(list == sorted)
        #expect(list.space == 3 * 8)
        #expect(try XattrList(decoding: sorted.encoded) == sorted)
    }
}
