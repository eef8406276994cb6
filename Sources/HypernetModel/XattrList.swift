import HypernetCrypto

/// A document's user xattrs, sorted by the bytes of their names and held as the stored list encodes them
/// (`version u8 (1) | (name, value)…`, docs/store-format.md) with where each entry starts. A lookup is a binary
/// search, a set or remove rewrites its own entry and the list's total is kept as it changes: none of them reads,
/// copies or encodes the other entries (issue 14, item 3). Equal lists have equal encodings. A list read out of
/// order is kept as read until its first change (`inOrder`).
public struct XattrList: RandomAccessCollection, Sendable, Equatable, ExpressibleByArrayLiteral {
    public typealias Xattr = RevisionMetadata.Xattr

    /// The list as stored (`RevisionMetadata.encodedXattrList`).
    public private(set) var encoded: [UInt8] = [1]
    /// Where entry i begins in `encoded`.
    private var starts: [Int] = []
    /// The bytes the entries take against `RevisionMetadata.xattrSpace`: each name with its NUL, and each value.
    public private(set) var space = 0
    /// The stored list these bytes were last read from or written as, and how many of their leading and
    /// trailing bytes are still that list's: what a writer need not cut again (`Store.writeXattrList`).
    public var stored: (root: Digest, unchangedPrefix: Int, unchangedSuffix: Int)?
    /// False for a list read out of order or naming one name twice, as writers before `XattrList` made (they ordered
    /// names as Swift strings): kept as read, so its metadata re-encodes to the bytes signed, searched from the end
    /// (the last value of a name wins), and put in order by its first change.
    private var inOrder = true

    public init() {}

    public init(arrayLiteral xattrs: Xattr...) { self.init(xattrs) }

    /// `xattrs` in order of their names' bytes (a name given twice keeps its last value).
    public init(_ xattrs: some Sequence<Xattr>) {
        // In order, each one is appended (or replaces the last): no entry moves.
        let ordered = xattrs.enumerated().sorted {
            $0.element.name == $1.element.name
                ? $0.offset < $1.offset : $0.element.name.utf8.lexicographicallyPrecedes($1.element.name.utf8)
        }
        for x in ordered { set(x.element.value, for: x.element.name) }
    }

    /// A stored list (or inline entries behind a version byte), with the limits of inline xattrs.
    public init(decoding bytes: [UInt8]) throws(DecodingError) {
        var r = ByteReader(bytes, context: "xattr list")
        guard try r.u8() == 1 else { throw .invalid("xattr list version") }
        var xattrs: [Xattr] = []
        var starts: [Int] = []
        var sorted = true
        while !r.isAtEnd {
            guard xattrs.count < RevisionMetadata.maximumXattrs else { throw .invalid("xattr count") }
            starts.append(r.offset)
            let x = try RevisionMetadata.decodeXattr(from: &r)
            sorted = sorted && (xattrs.last?.name.utf8.lexicographicallyPrecedes(x.name.utf8) ?? true)
            xattrs.append(x)
        }
        self.init()
        (encoded, self.starts, inOrder) = (bytes, starts, sorted)
        space = xattrs.reduce(0) { $0 + $1.name.utf8.count + 1 + $1.value.count }
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { starts.count }

    public subscript(i: Int) -> Xattr {
        Xattr(name: String(decoding: nameBytes(at: i), as: UTF8.self), value: Array(valueBytes(at: i)))
    }

    /// The entries' encoding without the version byte, as inline metadata holds it after their count.
    public var entriesEncoded: ArraySlice<UInt8> { encoded[1...] }

    public func value(of name: String) -> [UInt8]? {
        let (i, found) = search(name)
        return found ? Array(valueBytes(at: i)) : nil
    }

    public func contains(name: String) -> Bool { search(name).found }

    /// Sets `name` to `value`, adding it in order when absent.
    public mutating func set(_ value: [UInt8], for name: String) {
        putInOrder()
        let (i, found) = search(name)
        var w = ByteWriter(capacity: name.utf8.count + value.count + 8)
        w.string(name)
        w.blob(value)
        replace(i, with: w.bytes, found: found)
        space += value.count + (found ? 0 : name.utf8.count + 1)
    }

    /// Removes `name`; false when it is absent.
    @discardableResult public mutating func remove(name: String) -> Bool {
        putInOrder()
        let (i, found) = search(name)
        guard found else { return false }
        space -= name.utf8.count + 1
        replace(i, with: [], found: true)
        return true
    }

    /// Entry `i` (or, `found` false, nothing at position i) becomes `entry` (nothing when empty): the bytes after
    /// it move, the starts after it shift, and what `stored` counts as unchanged shrinks to exclude it.
    private mutating func replace(_ i: Int, with entry: [UInt8], found: Bool) {
        let start = i < starts.count ? starts[i] : encoded.count
        let end = found ? end(of: i) : start
        if found { space -= end - start - 8 - nameBytes(at: i).count }
        if var s = stored {
            s.unchangedPrefix = Swift.min(s.unchangedPrefix, start)
            s.unchangedSuffix = Swift.min(s.unchangedSuffix, encoded.count - end)
            stored = s
        }
        encoded.replaceSubrange(start..<end, with: entry)
        let shift = entry.count - (end - start)
        if !found {
            starts.insert(start, at: i)
        } else if entry.isEmpty {
            starts.remove(at: i)
        }
        var j = entry.isEmpty ? i : i + 1
        while j < starts.count {
            starts[j] += shift
            j += 1
        }
    }

    /// A list kept as read out of order becomes this list in order; nothing of its stored bytes is still in place.
    private mutating func putInOrder() {
        guard !inOrder else { return }
        let stored = self.stored
        self = XattrList(Array(self))
        self.stored = stored.map { ($0.root, 0, 0) }
    }

    private func end(of i: Int) -> Int { i + 1 < starts.count ? starts[i + 1] : encoded.count }

    private func nameBytes(at i: Int) -> ArraySlice<UInt8> {
        let at = starts[i]
        return encoded[at + 4..<at + 4 + length(at: at)]
    }

    private func valueBytes(at i: Int) -> ArraySlice<UInt8> {
        let at = starts[i] + 4 + length(at: starts[i])
        return encoded[at + 4..<at + 4 + length(at: at)]
    }

    private func length(at offset: Int) -> Int {
        (0..<4).reduce(0) { $0 | Int(encoded[offset + $1]) << (8 * $1) }
    }

    /// Where `name` is, or would go to keep the order.
    private func search(_ name: String) -> (index: Int, found: Bool) {
        var key = name
        return key.withUTF8 { key in
            if !inOrder {
                let last = starts.indices.last { nameBytes(at: $0).elementsEqual(key) }
                return last.map { ($0, true) } ?? (starts.count, false)
            }
            var (low, high) = (0, starts.count)
            while low < high {
                let mid = (low + high) / 2
                let other = nameBytes(at: mid)
                if other.elementsEqual(key) { return (mid, true) }
                if other.lexicographicallyPrecedes(key) { low = mid + 1 } else { high = mid }
            }
            return (low, false)
        }
    }

    public static func == (a: XattrList, b: XattrList) -> Bool { a.encoded == b.encoded }
}
