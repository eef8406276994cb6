import HypernetModel
import HypernetStore

/// A directory's entries by name, and in name order as pages: the pieces its stored listing is cut into.
///
/// Names compare byte for byte: Swift's `String ==` treats canonically equivalent strings ("é" and "e\u{301}")
/// as equal, but on Linux they are two different names.
///
/// A directory revision stores one chunk per page (the first also holds the listing's header), writing only the
/// pages changed since the last revision: the n-th create in a big directory costs one page, not the listing.
/// A page ends after a name whose hash marks a boundary (one name in `boundaryPeriod`), or at `maximumPage`
/// entries. Boundaries depend on the names only, so a change moves the pages around it and no other, and two
/// nodes (or one node after a restart) holding the same entries cut them into the same chunks.
struct DirectoryEntries {
    private struct Key: Hashable {
        let name: String
        static func == (a: Key, b: Key) -> Bool { a.name.utf8.elementsEqual(b.name.utf8) }
        func hash(into hasher: inout Hasher) {
            for byte in name.utf8 { hasher.combine(byte) }
        }
    }

    /// A run of entries in name order, and the chunk the last directory revision stored it in.
    struct Page {
        var entries: [(name: String, inode: UInt64)] = []
        /// Nil when the page changed since it was stored (or was never stored).
        var stored: ChunkReference?
    }

    static let boundaryPeriod: UInt64 = 128
    static let maximumPage = 1024

    private var map: [Key: UInt64] = [:]
    /// Never empty: an empty directory has one empty page (its listing is the header alone).
    private(set) var pages = [Page()]
    /// The entry count in the header of the first page's stored chunk.
    private var storedCount = 0
    /// The epoch the stored chunks are sealed in: a new epoch (a revocation) shares no chunk with the old one.
    private var storedEpoch: Epoch?
    /// The manifest of the last stored listing: the next one reuses its unchanged nodes.
    private(set) var storedTree = ManifestTree.empty

    /// No entry may be added: a listing of more would be refused by every reader (`DirectoryListing`).
    var isFull: Bool { map.count >= DirectoryListing.maximumEntries }

    subscript(_ name: String) -> UInt64? {
        get { map[Key(name: name)] }
        set {
            guard let newValue else {
                removeValue(forKey: name)
                return
            }
            let old = map.updateValue(newValue, forKey: Key(name: name))
            guard old != newValue else { return }
            let (p, i) = position(of: name)
            if old != nil {
                pages[p].entries[i].inode = newValue
                pages[p].stored = nil
            } else {
                pages[p].entries.insert((name, newValue), at: i)
                repage(around: p)
            }
        }
    }

    @discardableResult
    mutating func removeValue(forKey name: String) -> UInt64? {
        guard let old = map.removeValue(forKey: Key(name: name)) else { return nil }
        let (p, i) = position(of: name)
        pages[p].entries.remove(at: i)
        repage(around: p)
        return old
    }

    /// The entry `name` must be stored again: its document's kind changed.
    mutating func changed(_ name: String) {
        guard map[Key(name: name)] != nil else { return }
        pages[position(of: name).page].stored = nil
    }

    var isEmpty: Bool { map.isEmpty }
    var count: Int { map.count }

    /// (name, inode) pairs in the order of the names' bytes.
    var sorted: [(name: String, inode: UInt64)] { pages.flatMap(\.entries) }

    struct Epoch: Equatable {
        var rights: DocumentID?
        var number: UInt32
    }

    /// The pages a revision sealed in `epoch` must store: those changed, and the first when the count (in its
    /// header) changed; every page in a new epoch.
    func unstoredPages(in epoch: Epoch) -> [Int] {
        guard epoch == storedEpoch else { return Array(pages.indices) }
        return pages.indices.filter { pages[$0].stored == nil || ($0 == 0 && storedCount != map.count) }
    }

    /// Records that a revision stored the listing as `tree` in `epoch`, page `written[k]` as `references[k]`.
    mutating func stored(_ references: [ChunkReference], for written: [Int], tree: ManifestTree, in epoch: Epoch) {
        for (p, reference) in zip(written, references) { pages[p].stored = reference }
        storedCount = map.count
        storedTree = tree
        storedEpoch = epoch
    }

    private static func precedes(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }

    /// Where `name` is or would go: the first page whose last name is not before it (else the last page), and the
    /// index of the first entry there not before it. O(log n).
    private func position(of name: String) -> (page: Int, index: Int) {
        var low = 0
        var high = pages.count - 1
        while low < high {
            let mid = (low + high) / 2
            if let last = pages[mid].entries.last, !Self.precedes(last.name, name) { high = mid } else { low = mid + 1 }
        }
        let entries = pages[low].entries
        var a = 0
        var b = entries.count
        while a < b {
            let mid = (a + b) / 2
            if Self.precedes(entries[mid].name, name) { a = mid + 1 } else { b = mid }
        }
        return (low, a)
    }

    /// FNV-1a of the name's bytes, mixed (splitmix64's finalizer) so that its low bits depend on every byte.
    /// Part of how listings are cut into chunks: changing it re-cuts every directory (once, on its next change).
    static func isBoundary(_ name: String) -> Bool {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in name.utf8 { h = (h ^ UInt64(byte)) &* 0x100_0000_01b3 }
        h = (h ^ (h >> 30)) &* 0xbf58_476d_1ce4_e5b9
        h = (h ^ (h >> 27)) &* 0x94d0_49bb_1331_11eb
        h ^= h >> 31
        return h % boundaryPeriod == 0
    }

    /// Re-cuts the pages around `p` after a change in it. The run re-cut starts after the last page before `p`
    /// that ends at a boundary name and stops at the first page from `p` on that does (or at the end): the pages
    /// outside it are cut as they would be from scratch. Usually that run is `p` alone, or `p` and the next when
    /// the change removed `p`'s boundary name.
    private mutating func repage(around p: Int) {
        func endsAtBoundary(_ page: Page) -> Bool { page.entries.last.map { Self.isBoundary($0.name) } ?? false }
        var first = p
        while first > 0, !endsAtBoundary(pages[first - 1]) { first -= 1 }
        var last = p
        while last < pages.count - 1, !endsAtBoundary(pages[last]) { last += 1 }
        var cut: [Page] = []
        var current = Page()
        for p in first...last {
            for entry in pages[p].entries {
                current.entries.append(entry)
                if Self.isBoundary(entry.name) || current.entries.count == Self.maximumPage {
                    cut.append(current)
                    current = Page()
                }
            }
        }
        if !current.entries.isEmpty || (cut.isEmpty && pages.count == last - first + 1) { cut.append(current) }
        // In place (replaceSubrange may reallocate the array even when its capacity suffices).
        let common = min(cut.count, last - first + 1)
        for k in 0..<common { pages[first + k] = cut[k] }
        if cut.count > common {
            pages.insert(contentsOf: cut[common...], at: first + common)
        } else {
            pages.removeSubrange((first + common)..<(last + 1))
        }
    }
}
