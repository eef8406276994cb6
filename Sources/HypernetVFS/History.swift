import Glibc
import HypernetCrypto
import HypernetModel
import HypernetStore

extension VirtualFileSystem {
    // MARK: Control plane (the CLI, through the daemon). Paths are relative to the mount root: "a/b.txt"; "" is the root.

    func resolve(path: String) throws(VFSError) -> Node {
        try state.withLock { (s) throws(VFSError) in
            var current = try Self.node(Self.rootInode, in: s)
            for part in path.split(separator: "/") where part != "." {
                if part == ".." {
                    current = try Self.node(current.parent, in: s)
                    continue
                }
                guard current.isDirectory, let child = current.children[String(part)] else { throw VFSError(ENOENT) }
                current = try Self.node(child, in: s)
            }
            return current
        }
    }

    func history(of node: Node) throws(VFSError) -> [HistoryEntry] {
        try history(of: node.record.id, inode: node.inode)
    }

    func history(of document: DocumentID, inode: UInt64) throws(VFSError) -> [HistoryEntry] {
        let summaries: [RevisionSummary]
        do { summaries = try store.revisions(of: document) } catch { throw fail(error, "history", inode: inode) }
        return summaries.map { r in
            HistoryEntry(
                revision: r.id.hex, time: ISO8601.format(milliseconds: r.time.milliseconds),
                author: store.authorName(r.author), size: r.size,
                parents: r.parents.map(\.hex), kind: "\(r.kind)", isHead: r.isHead, isRefused: r.isRefused,
                isReleased: r.isReleased)
        }
    }

    /// The heads other than the one shown (a file's unresolved conflicts; a directory's heads merge), and the
    /// revisions refused since they were stored (edits a revoke made invalid: docs/security.md, "Rights").
    func conflicts(of node: Node) throws(VFSError) -> [HistoryEntry] {
        conflicts(try history(of: node), shown: node.record.head?.hex, isDirectory: node.isDirectory)
    }

    private func conflicts(_ history: [HistoryEntry], shown: String?, isDirectory: Bool) -> [HistoryEntry] {
        history.filter { ($0.isHead && !isDirectory && $0.revision != shown) || $0.isRefused }
    }

    /// The history of the document at `path`, also after it was deleted (see `document(at:)`).
    public func history(path: String) throws(VFSError) -> [HistoryEntry] {
        let d = try document(at: path)
        return try history(of: d.id, inode: d.inode)
    }

    /// The document at `path`: the one shown there, or, for a name that is gone, the last document its
    /// directory listed under it (its listings read newest first), so a deleted file's history and old
    /// contents stay reachable by its name. `inode` is the shown node's, or its directory's. Paths below
    /// `/@NAME/` name documents of another identity's tree, as the mount shows them.
    func document(at path: String) throws(VFSError) -> (id: DocumentID, inode: UInt64) {
        do throws(VFSError) {
            let shown = try shown(path)
            guard let id = shown.id else { throw VFSError(ENOENT) }
            return (id, shown.inode)
        } catch {
            guard error.errno == ENOENT, let name = path.split(separator: "/").last.map(String.init), name != "..",
                name != "."
            else { throw error }
            let directory = try shown(path.split(separator: "/").dropLast().joined(separator: "/"))
            guard let directoryID = directory.id, directory.isDirectory else { throw error }
            do {
                for summary in try store.revisions(of: directoryID) where summary.kind == .directory {
                    // In another identity's tree, listings written before it was shared do not open.
                    guard let metadata = try readable(summary.id) else { continue }
                    let listing = try DirectoryListing(decoding: store.readContent(metadata.content))
                    if let entry = listing.entries.first(where: { $0.name == name }) {
                        return (entry.document, directory.inode)
                    }
                }
            } catch {
                throw fail(error, "history", inode: directory.inode)
            }
            throw error
        }
    }

    /// The metadata of revision `id`; nil when this identity holds no key for it.
    private func readable(_ id: RevisionID) throws(StoreError) -> RevisionMetadata? {
        do { return try store.revision(id).metadata } catch {
            if case .rights = error { return nil }
            throw error
        }
    }

    /// The document shown at `path` (nil for a tree's top level, `@NAME`), its inode, and whether it is a
    /// directory: in this identity's tree, or, below `@NAME`, in the other tree as far as it is shared.
    private func shown(_ path: String) throws(VFSError) -> (id: DocumentID?, inode: UInt64, isDirectory: Bool) {
        let parts = path.split(separator: "/").filter { $0 != "." }
        guard let first = parts.first, let root = foreignRoot(named: String(first)) else {
            let node = try resolve(path: path)
            return (node.record.id, node.inode, node.isDirectory)
        }
        var inode = root
        for part in parts.dropFirst() {
            guard let child = try foreignChildren(inode).first(where: { $0.name == part }) else {
                throw VFSError(ENOENT)
            }
            inode = child.inode
        }
        guard let (target, kind) = foreign.target(of: inode) else { throw VFSError(ENOENT) }
        return (target.document, inode, kind == .directory)
    }

    /// The revision of `node`'s document whose id is `revision` or starts with it (at least 4 hex digits).
    private func findRevision(_ revision: String, of node: Node) throws(VFSError) -> RevisionID {
        try findRevision(revision, of: node.record.id, inode: node.inode)
    }

    private func findRevision(_ revision: String, of document: DocumentID, inode: UInt64) throws(VFSError) -> RevisionID
    {
        let wanted = revision.lowercased()
        guard wanted.count >= 4 else { throw VFSError(ENXIO) }
        let matches: [RevisionSummary]
        do { matches = try store.revisions(of: document).filter { $0.id.hex.hasPrefix(wanted) } } catch {
            throw fail(error, "history", inode: inode)
        }
        guard matches.count == 1 else { throw VFSError(ENXIO) }
        return matches[0].id
    }

    /// Hands the content of `path` at `revision` (a full revision id or a unique prefix; ENXIO for an unknown one)
    /// from byte `start` to `body` piece by piece as it reads (content held on demand streams as it arrives); stops
    /// when `body` returns false.
    public func streamContent(path: String, revision: String, from start: UInt64 = 0, _ body: ([UInt8]) -> Bool)
        throws(VFSError)
    {
        let document = try document(at: path)
        let id = try findRevision(revision, of: document.id, inode: document.inode)
        do {
            let (r, metadata) = try store.revision(id)
            switch r.kind {
            case .file, .directory: try store.streamContent(metadata.content, from: start, body)
            case .symlink: _ = body(Array(metadata.symlinkTarget.dropFirst(Int(min(start, UInt64(Int.max))))))
            case .special: return
            case .tombstone: throw VFSError(ENOENT)
            }
        } catch {
            throw fail(error, "read revision", inode: document.inode)
        }
    }

    /// Makes `revision`'s content current as a new revision; returns the new revision id. A path whose file was
    /// deleted gets it back (`undelete`).
    public func restore(path: String, revision: String) throws(VFSError) -> String {
        let node: Node
        do { node = try resolve(path: path) } catch {
            guard error.errno == ENOENT else { throw error }
            return try undelete(path: path, revision: revision)
        }
        // A directory's content is its listing, which its entries' own revisions make: not restored.
        guard !node.isDirectory else { throw VFSError(EISDIR) }
        let id = try findRevision(revision, of: node)
        return try makeCurrent(node, from: id, parents: node.record.head.map { [$0] } ?? [], wholeMetadata: false)
    }

    /// A deleted file or symlink back under its name, as the same document: a revision with `revision`'s
    /// content and metadata whose parents are the document's heads (its deletion among them, which stays in its
    /// history). The name must be free; a deleted directory is not brought back (EISDIR).
    private func undelete(path: String, revision: String) throws(VFSError) -> String {
        let (document, parent) = try document(at: path)
        let name = String(path.split(separator: "/").last!)
        let id = try findRevision(revision, of: document, inode: parent)
        let old: (revision: Revision, metadata: RevisionMetadata)
        let record: DocumentRecord
        let heads: [RevisionID]
        do {
            old = try store.revision(id)
            guard let found = try store.document(document) else { throw VFSError(ENOENT) }
            record = found
            heads = try store.heads(of: document)
        } catch {
            throw fail(error, "restore", inode: parent)
        }
        switch old.revision.kind {
        case .file, .symlink, .special: break
        case .directory: throw VFSError(EISDIR)
        case .tombstone: throw VFSError(EINVAL)
        }
        let head = try state.withLock { (s) throws(VFSError) -> String in
            var dir = try Self.directory(parent, in: s)
            guard s.nodes[record.inode]?.linked != true else { throw VFSError(EEXIST) }
            try Self.checkNewEntry(name, in: parent, s)
            var node = s.nodes[record.inode] ?? Node(record: record, parent: parent, name: name)
            node.record.kind = old.revision.kind
            node.record.metadata = old.metadata
            node.parent = parent
            node.name = name
            node.linked = true
            node.touch(modified: false)
            dir.touch()
            dir.record.dirty = true
            let directoryRecord = dir.record
            try persist("restore") { tx in
                try tx.setEntry(parent: parent, name: name, child: record.inode)
                try tx.updateDocument(directoryRecord)
            }
            dir.children[name] = record.inode
            s.nodes[parent] = dir
            try appendRevisionLocked(&node, locations: [], parents: heads.sorted())
            s.nodes[record.inode] = node
            s.dirtyDirectories.insert(parent)
            return node.record.head!.hex
        }
        // The kernel may remember the name as absent.
        kernelCache.withLock { $0 }?.invalidate(parent: parent, name: name)
        return head
    }

    /// Resolves a conflict: a merge revision whose parents are every head of `path`'s document, with the
    /// content and metadata of `revision` (any revision of the document; a tombstone is refused with EINVAL).
    /// A document whose only head is `revision` is left as it is. Directories merge by themselves: EISDIR.
    public func resolveConflict(path: String, revision: String) throws(VFSError) -> String {
        try resolveConflict(try resolve(path: path), revision: revision)
    }

    func resolveConflict(_ node: Node, revision: String) throws(VFSError) -> String {
        guard !node.isDirectory else { throw VFSError(EISDIR) }
        let id = try findRevision(revision, of: node)
        let heads: [RevisionID]
        let undeleted: Bool
        do {
            heads = try store.heads(of: node.record.id)
            guard try store.revision(id).revision.kind != .tombstone else { throw VFSError(EINVAL) }
            undeleted = try heads.contains { try store.revision($0).revision.kind == .tombstone }
        } catch {
            throw fail(error, "resolve", inode: node.inode)
        }
        if heads == [id] { return id.hex }
        if undeleted {
            // The listing showing the document kept it against a delete (DirectoryMerge's `undeleted`); once
            // the tombstone is merged that rule no longer holds, so the listing must say so itself, first.
            try state.withLock { (s) throws(VFSError) in
                s.dirtyDirectories.insert(node.parent)
                try commitDirectoryLocked(node.parent, in: &s)
            }
        }
        return try makeCurrent(node, from: id, parents: heads.sorted(), wholeMetadata: true)
    }

    /// A new revision of `node` with `id`'s content (and all its metadata, if `wholeMetadata`) over `parents`.
    private func makeCurrent(_ node: Node, from id: RevisionID, parents: [RevisionID], wholeMetadata: Bool)
        throws(VFSError) -> String
    {
        let old: RevisionMetadata
        do { old = try store.reusableMetadata(of: id) } catch { throw fail(error, "read revision", inode: node.inode) }
        func update(_ n: inout Node) {
            if wholeMetadata {
                n.record.metadata = old
            } else {
                // The content: bytes, a symlink's target, a device's number.
                n.record.metadata.content = old.content
                n.record.metadata.size = old.size
                n.record.metadata.symlinkTarget = old.symlinkTarget
                n.record.metadata.rdev = old.rdev
            }
            n.touch(modified: !wholeMetadata)
        }
        guard node.kind == .file else {
            return try state.withLock { (s) throws(VFSError) in
                guard var n = s.nodes[node.inode] else { throw VFSError(ENOENT) }
                update(&n)
                try appendRevisionLocked(&n, locations: [], parents: parents)
                s.nodes[node.inode] = n
                return n.record.head!.hex
            }
        }
        let content = try attachContent(node.inode)
        defer { detachContent(node.inode) }
        let tree: ManifestTree
        do { tree = try store.loadManifest(old.content) } catch { throw fail(error, "load content", inode: node.inode) }
        // The new revision points at the old manifest: no content is copied.
        return try content.settled { (c) throws(VFSError) in
            try state.withLock { (s) throws(VFSError) in
                guard var n = s.nodes[node.inode] else { throw VFSError(ENOENT) }
                update(&n)
                try appendRevisionLocked(&n, locations: [], parents: parents)
                s.nodes[node.inode] = n
                content.committed(&c, tree: tree)
                c.size = tree.length
                return n.record.head!.hex
            }
        }
    }

    /// Every file in the tree with unresolved conflicts, by path (relative to the mount root), with the heads
    /// other than the one shown.
    public func allConflicts() throws(VFSError) -> [ConflictEntry] {
        let forked: [DocumentID]
        do { forked = try store.forkedDocuments() } catch { throw fail(error, "conflicts") }
        var found: [(path: String, heads: [ConflictEntry])] = []
        let refused: [(document: DocumentID, tree: SigningPublicKey)]
        do { refused = try store.documentsWithRefusedRevisions() } catch { throw fail(error, "conflicts") }
        let own = store.keyring.identity.publicKey
        for (document, tree) in refused where tree != own {
            guard let path = foreignLocation(of: document, in: tree).map({ String($0.path.dropFirst()) }) else {
                continue
            }
            found.append((path, (try? conflicts(path: path)) ?? []))
        }
        for document in Set(forked + refused.filter { $0.tree == own }.map(\.document)) {
            let record: DocumentRecord?
            do { record = try store.document(document) } catch { throw fail(error, "conflicts") }
            guard let record,
                let (node, path) = state.withLock({ s in
                    s.nodes[record.inode].flatMap { n in Self.path(of: n, in: s).map { (n, $0) } }
                })
            else { continue }
            found.append((path, try conflicts(of: node).map { ConflictEntry(path: path, $0) }))
        }
        // By path; each file's heads newest first, as `user.hypernet.conflicts` lists them.
        return found.sorted { $0.path < $1.path }.flatMap(\.heads)
    }

    public func conflicts(path: String) throws(VFSError) -> [ConflictEntry] {
        let shown = try shown(path)
        guard ForeignTree.contains(shown.inode) else {
            return try conflicts(of: try resolve(path: path)).map { ConflictEntry(path: path, $0) }
        }
        guard let document = shown.id else { return [] }
        let visible = try? foreignWinner(document).id.hex
        return conflicts(try history(of: document, inode: shown.inode), shown: visible, isDirectory: shown.isDirectory)
            .map { ConflictEntry(path: path, $0) }
    }

    /// `node`'s path from the mount root ("a/b.txt"), or nil when it is not linked into the tree.
    static func path(of node: Node, in s: State) -> String? {
        var names: [String] = []
        var current = node
        while current.inode != rootInode {
            guard current.linked, let parent = s.nodes[current.parent], names.count <= s.nodes.count else { return nil }
            names.append(current.name)
            current = parent
        }
        return names.reversed().joined(separator: "/")
    }

    /// The retention policy and quorum in force for each document of this tree the filesystem shows, for
    /// `Store.collectionPlan`. A deleted document has no node: it keeps all its history (its directory's policy
    /// could not be told from the root's), which keeps more, never less.
    public func retentionRules() -> [DocumentID: (policy: RetentionPolicy, quorum: Int)] {
        state.withLock { s in
            var rules: [DocumentID: (policy: RetentionPolicy, quorum: Int)] = [:]
            for inode in s.nodes.keys {
                guard let id = s.nodes[inode]?.record.id else { continue }
                rules[id] = (
                    Self.retention(of: inode, in: s), Self.quorum(of: inode, in: s, default: configuration.quorum)
                )
            }
            return rules
        }
    }

    /// Lines for `hypernet status` about the filesystem.
    public func statusLines() -> [String] {
        state.withLock { s in
            return [
                "documents: \(s.nodes.count)",
                "open files: \(s.openFiles.count)",
                "directories awaiting a revision: \(s.dirtyDirectories.count)",
                "quorum: \(configuration.quorum)",
            ]
        }
    }
}
