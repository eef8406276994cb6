/// Merges concurrent versions of one directory's listing without a conflict (docs/design.md, "Directory
/// merge"): per document, the newest head that changed its entry relative to the base decides (added,
/// renamed or removed). `sameNamed` makes directories of one name one; `names` then shows every name once: other
/// documents that end under one name are all kept, all but the one with the smallest document id renamed
/// `NAME (conflict XXXXXXXX)`. The result depends only on the
/// inputs, so every node computes the same tree.
public enum DirectoryMerge {
    /// One merged entry and the head that decided it: an index into `heads`, nil for the base.
    public struct Placement: Sendable, Equatable {
        public var entry: DirectoryListing.Entry
        public var head: Int?
    }

    /// `heads`: the listings of every head, oldest first by (HLC time, id). `undeleted`: documents whose
    /// delete lost to a concurrent change (their winner is not a tombstone); a head's removal of such an
    /// entry was that delete, so it does not win here and the document stays where a head still lists it.
    public static func merge(base: DirectoryListing?, heads: [DirectoryListing], undeleted: Set<DocumentID> = [])
        -> DirectoryListing
    {
        let chosen = placements(base: base, heads: heads, undeleted: undeleted).map(\.entry)
        return DirectoryListing(entries: names(chosen))
    }

    /// What one directory shows, sorted by name bytes, every name once: of the documents under one name, the one
    /// with the smallest document id keeps it and the others are renamed `NAME (conflict XXXXXXXX)`.
    public static func names(_ entries: [DirectoryListing.Entry]) -> [DirectoryListing.Entry] {
        // Names are bytes: String equality would merge the NFC and NFD forms of one name.
        var byName: [[UInt8]: [DirectoryListing.Entry]] = [:]
        for e in entries { byName[Array(e.name.utf8), default: []].append(e) }
        var out: [DirectoryListing.Entry] = []
        for group in byName.values {
            let sorted = group.sorted { $0.document.bytes.lexicographicallyPrecedes($1.document.bytes) }
            out.append(sorted[0])
            for var e in sorted.dropFirst() {
                e.name = conflictName(e.name, e.document)
                out.append(e)
            }
        }
        return out.sorted { Array($0.name.utf8).lexicographicallyPrecedes(Array($1.name.utf8)) }
    }

    /// What each directory reachable from `root` shows once same-named directories are one (docs/design.md,
    /// "Same-named directories"). `entries`: per directory document, the entries placed in it. Walking down from
    /// the root, directories shown under one name in one directory merge into the one with the smallest document
    /// id (the one `names` would leave the name to); the others' entries show in it, so their subdirectories may
    /// merge in turn. Returns the entries of every directory the walk reached, names not yet made unique, and per
    /// survivor the directories merged into it. Directories the walk did not reach keep their entries.
    public static func sameNamed(root: DocumentID, entries: [DocumentID: [DirectoryListing.Entry]]) -> (
        entries: [DocumentID: [DirectoryListing.Entry]], merged: [DocumentID: [DocumentID]]
    ) {
        var shown = entries
        var merged: [DocumentID: [DocumentID]] = [:]
        var queue = [root]
        var reached: Set<DocumentID> = [root]
        while let directory = queue.popLast() {
            var list = entries[directory] ?? []
            for loser in merged[directory] ?? [] { list += entries[loser] ?? [] }
            var byName: [[UInt8]: [DocumentID]] = [:]
            for e in list where e.kind == .directory { byName[Array(e.name.utf8), default: []].append(e.document) }
            var losers: Set<DocumentID> = []
            for group in byName.values where group.count > 1 {
                let sorted = group.sorted { $0.bytes.lexicographicallyPrecedes($1.bytes) }
                merged[sorted[0]] = Array(sorted.dropFirst())
                losers.formUnion(sorted.dropFirst())
            }
            list.removeAll { losers.contains($0.document) }
            for loser in losers { shown[loser] = nil }
            shown[directory] = list
            for e in list where e.kind == .directory && reached.insert(e.document).inserted { queue.append(e.document) }
        }
        return (shown, merged)
    }

    /// The entry chosen for each document, names not yet made unique (`names` does that, over everything a
    /// directory shows).
    public static func placements(
        base: DirectoryListing?, heads: [DirectoryListing], undeleted: Set<DocumentID> = []
    ) -> [Placement] {
        guard heads.count > 1 else { return (heads.first?.entries ?? []).map { Placement(entry: $0, head: 0) } }
        let baseByDocument = byDocument(base?.entries ?? [])
        let headsByDocument = heads.map { byDocument($0.entries) }
        var documents = Set(baseByDocument.keys)
        for h in headsByDocument { documents.formUnion(h.keys) }
        var chosen: [Placement] = []
        for document in documents {
            let before = baseByDocument[document]
            // The newest head whose entries for it differ from the base; none: the base stands.
            var result = before.map { $0.map { Placement(entry: $0, head: nil) } }
            for (i, h) in headsByDocument.enumerated().reversed() where !same(h[document], before) {
                result = h[document].map { $0.map { Placement(entry: $0, head: i) } }
                break
            }
            if result == nil, undeleted.contains(document),
                let i = headsByDocument.indices.last(where: { headsByDocument[$0][document] != nil })
            {
                result = headsByDocument[i][document]!.map { Placement(entry: $0, head: i) }
            }
            chosen += result ?? []
        }
        return chosen.sorted {
            $0.entry.document == $1.entry.document
                ? $0.entry.name.utf8.lexicographicallyPrecedes($1.entry.name.utf8)
                : $0.entry.document.bytes.lexicographicallyPrecedes($1.entry.document.bytes)
        }
    }

    /// A document's entries in one listing: one per name (several for hard links), in name order. A change to any
    /// of them (a rename, a link, an unlink of one name) is one change of the document's entry in the merge.
    static func byDocument(_ entries: [DirectoryListing.Entry]) -> [DocumentID: [DirectoryListing.Entry]] {
        Dictionary(grouping: entries, by: \.document)
    }

    static func same(_ a: [DirectoryListing.Entry]?, _ b: [DirectoryListing.Entry]?) -> Bool {
        a.map { $0.map { Array($0.name.utf8) } } == b.map { $0.map { Array($0.name.utf8) } }
            && a.map { $0.map(\.kind) } == b.map { $0.map(\.kind) }
    }

    /// The visible name of a document that lost a name collision.
    public static func conflictName(_ name: String, _ document: DocumentID) -> String {
        name + " (conflict " + String(document.description.prefix(8)) + ")"
    }
}
