import Glibc
import HypernetCrypto
import HypernetModel
import Synchronization

/// A document a query folder shows: its name there (the daemon's search, `setSearchProvider`), where the mount
/// shows it, and what it is.
public struct SearchMatch: Sendable {
    public var name: String
    /// From the mount root: "/a/b.txt".
    public var path: String
    public var document: DocumentID
    public var tree: SigningPublicKey

    public init(name: String, path: String, document: DocumentID, tree: SigningPublicKey) {
        self.name = name
        self.path = path
        self.document = document
        self.tree = tree
    }
}

/// `/.hypernet/search/QUERY/` (docs/search.md, "Query folders"): a folder per query, looked up, never listed,
/// whose entries are symlinks to the matching documents; `by-owner/NAME/` and `by-tag/NAME/` are the queries
/// `owner:NAME` and `tag:NAME`, `recent/` and `conflicts/` fixed ones. Inodes have the virtual flag and `flag`,
/// handed out per query and per (query, name) for the mount's life, so a name keeps its inode while the match
/// holds.
final class SearchViews: Sendable {
    static let flag: UInt64 = 1 << 60
    /// The folders whose entries are query folders: the query a name stands for.
    static let parents: [UInt64: @Sendable (String) -> String] = [
        VirtualTree.search: unescaped,
        VirtualTree.byOwner: { "owner:" + quoted($0) },
        VirtualTree.byTag: { "tag:" + quoted($0) },
    ]
    /// The query folders of `/.hypernet/` itself.
    static let fixed: [UInt64: String] = [VirtualTree.recent: "kind:file", VirtualTree.conflicts: "conflict:yes"]

    /// A folder name cannot hold `/`: in `search/`, `%2F` (either case) and `∕` (U+2215 DIVISION SLASH) stand for
    /// it, so `path:` globs work there too.
    static func unescaped(_ name: String) -> String {
        name.replacing("%2F", with: "/").replacing("%2f", with: "/").replacing("\u{2215}", with: "/")
    }

    static func quoted(_ name: String) -> String { "\"" + name.replacing("\"", with: "\"\"") + "\"" }

    enum Entry {
        case query(String)
        case link(target: String)
    }

    struct State {
        var inodes: [String: UInt64] = [:]
        var entries: [UInt64: Entry] = [:]
        var next: UInt64 = 1
    }

    let state = Mutex(State())
    let provider = Mutex<(@Sendable (String) -> [SearchMatch]?)?>(nil)

    static func contains(_ inode: UInt64) -> Bool {
        fixed[inode] != nil
            || inode & VirtualTree.flag != 0 && inode & flag != 0
                && inode & (ForeignTree.flag | VirtualTree.revisionFlag) == 0
    }

    /// The inode of `key` (a query, or a query's inode and a name), showing `entry` from now on.
    func inode(_ key: String, _ entry: Entry) -> UInt64 {
        state.withLock { s in
            let inode = s.inodes[key] ?? VirtualTree.flag | Self.flag | s.next
            if s.inodes[key] == nil {
                s.inodes[key] = inode
                s.next += 1
            }
            s.entries[inode] = entry
            return inode
        }
    }

    func entry(_ inode: UInt64) -> Entry? {
        if let query = Self.fixed[inode] { return .query(query) }
        return state.withLock { $0.entries[inode] }
    }
}

extension VirtualFileSystem {
    /// Runs the queries of `/.hypernet/search/QUERY/`: nil for a query that does not parse.
    public func setSearchProvider(_ provider: @escaping @Sendable (String) -> [SearchMatch]?) {
        searchViews.provider.withLock { $0 = provider }
    }

    /// The matches of `query` that `caller` could `stat` where the mount shows them, each under a name unique in
    /// the folder (a name several share gets `~` and the first 8 hex digits of its document id); nil if it does
    /// not parse.
    /// `depth`: how far below the mount root the folder is (`/.hypernet/recent/` 2, `/.hypernet/search/Q/` 3).
    private func matches(_ query: String, caller: Caller?, depth: Int = 3) -> [(name: String, target: String)]? {
        guard let provider = searchViews.provider.withLock({ $0 }), let found = provider(query) else { return nil }
        let visible = found.filter { m in
            guard let caller else { return true }
            if m.tree == store.keyring.identity.publicKey {
                return (try? mayShow(m.document, to: caller, read: false)) ?? false
            }
            return foreignLocation(of: m.document, in: m.tree)?.visibility.allows(caller, read: false) ?? false
        }
        var count: [String: Int] = [:]
        for m in visible { count[m.name, default: 0] += 1 }
        return visible.map { m in
            let name = count[m.name]! > 1 ? m.name + "~" + String(m.document.description.prefix(8)) : m.name
            // Relative to the query folder, so the link works wherever the mount is.
            return (name, (depth == 2 ? "../.." : "../../..") + m.path)
        }
    }

    func searchLookup(parent: UInt64, name: String, caller: Caller) throws(VFSError) -> Attributes {
        if let query = SearchViews.parents[parent]?(name) {
            guard matches(query, caller: caller) != nil else { throw VFSError(ENOENT) }
            return try virtualAttributes(searchViews.inode(query, .query(query)))
        }
        guard case .query(let query)? = searchViews.entry(parent),
            let target = matches(query, caller: caller, depth: SearchViews.fixed[parent] != nil ? 2 : 3)?
                .first(where: { $0.name == name })?.target
        else { throw VFSError(ENOENT) }
        return try virtualAttributes(searchViews.inode("\(parent)/\(name)", .link(target: target)))
    }

    func searchAttributes(_ inode: UInt64, root: Attributes) throws(VFSError) -> Attributes {
        var a = Self.fixedAttributes(VirtualTree.search, root: root)!
        a.inode = inode
        switch searchViews.entry(inode) {
        case .query?: return a
        case .link(let target)?:
            (a.mode, a.nlink, a.size) = (S_IFLNK | 0o777, 1, UInt64(target.utf8.count))
            return a
        case nil: throw VFSError(ENOENT)
        }
    }

    func searchOpendir(_ inode: UInt64, caller: Caller?) throws(VFSError) -> UInt64 {
        guard case .query(let query)? = searchViews.entry(inode) else { throw VFSError(ENOTDIR) }
        let root = state.withLock { s in s.nodes[Self.rootInode]!.attributes() }
        let folder = try searchAttributes(inode, root: root)
        var entries = [
            DirectoryEntry(name: ".", attributes: folder, nextOffset: 1),
            DirectoryEntry(
                name: "..", attributes: Self.fixedAttributes(VirtualTree.search, root: root)!, nextOffset: 2),
        ]
        let depth = SearchViews.fixed[inode] != nil ? 2 : 3
        for (name, target) in matches(query, caller: caller, depth: depth) ?? [] {
            let link = searchViews.inode("\(inode)/\(name)", .link(target: target))
            entries.append(
                DirectoryEntry(
                    name: name, attributes: try searchAttributes(link, root: root),
                    nextOffset: UInt64(entries.count + 1)))
        }
        return addHandle(.listed(entries))
    }

    func searchReadlink(_ inode: UInt64) throws(VFSError) -> String {
        guard case .link(let target)? = searchViews.entry(inode) else { throw VFSError(EINVAL) }
        return target
    }
}
