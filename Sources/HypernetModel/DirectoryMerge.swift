/// Merges concurrent versions of one directory's listing without a conflict (docs/design.md, "Directory
/// merge"): per document, the newest head that changed its entry relative to the base decides (added,
/// renamed or removed); two documents that end under one name are both kept, all but the one with the
/// smallest document id renamed `NAME (conflict XXXXXXXX)`. The result depends only on the inputs, so every
/// node computes the same tree.
public enum DirectoryMerge {
    /// `heads`: the listings of every head, oldest first by the winner order.
    public static func merge(base: DirectoryListing?, heads: [DirectoryListing]) -> DirectoryListing {
        guard heads.count > 1 else { return heads.first ?? DirectoryListing(entries: []) }
        let baseByDocument = Dictionary((base?.entries ?? []).map { ($0.document, $0) }, uniquingKeysWith: { a, _ in a })
        let headsByDocument = heads.map { Dictionary($0.entries.map { ($0.document, $0) }, uniquingKeysWith: { a, _ in a }) }
        var documents = Set(baseByDocument.keys)
        for h in headsByDocument { documents.formUnion(h.keys) }
        var chosen: [DirectoryListing.Entry] = []
        for document in documents {
            let before = baseByDocument[document]
            // The newest head whose entry differs from the base; none: the base stands.
            var result = before
            for h in headsByDocument.reversed() where !same(h[document], before) {
                result = h[document]
                break
            }
            if let result { chosen.append(result) }
        }
        // Names are bytes: String equality would merge the NFC and NFD forms of one name.
        var byName: [[UInt8]: [DirectoryListing.Entry]] = [:]
        for e in chosen { byName[Array(e.name.utf8), default: []].append(e) }
        var out: [DirectoryListing.Entry] = []
        for entries in byName.values {
            let name = entries[0].name
            let sorted = entries.sorted { $0.document.bytes.lexicographicallyPrecedes($1.document.bytes) }
            out.append(sorted[0])
            for e in sorted.dropFirst() {
                out.append(DirectoryListing.Entry(name: conflictName(name, e.document), document: e.document, kind: e.kind))
            }
        }
        return DirectoryListing(entries: out)
    }

    static func same(_ a: DirectoryListing.Entry?, _ b: DirectoryListing.Entry?) -> Bool {
        a.map { Array($0.name.utf8) } == b.map { Array($0.name.utf8) } && a?.kind == b?.kind
    }

    /// The visible name of a document that lost a name collision.
    public static func conflictName(_ name: String, _ document: DocumentID) -> String {
        name + " (conflict " + String(document.description.prefix(8)) + ")"
    }
}
