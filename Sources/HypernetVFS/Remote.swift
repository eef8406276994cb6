import Glibc
import HypernetCrypto
import HypernetModel
import HypernetStore
import Synchronization

/// The kernel's caches of names and attributes/pages, which a revision from another node makes stale
/// (FUSE `notify_inval_entry` / `notify_inval_inode`). Called without any VFS lock held.
public protocol KernelCache: Sendable {
    func invalidate(inode: UInt64)
    func invalidate(parent: UInt64, name: String)
}

/// The visible state of a document: its winning head, with every head for directories to merge.
struct Winner {
    var id: RevisionID
    var revision: Revision
    var metadata: RevisionMetadata
    var heads: [RevisionID]
}

extension VirtualFileSystem {
    public func setKernelCache(_ cache: any KernelCache) {
        kernelCache.withLock { $0 = cache }
    }

    /// Revisions of these documents arrived from peers: shows their winning heads in the tree (new files,
    /// changed content, renames, deletions) and tells the kernel what it must forget. A document with a
    /// local change not yet in a revision keeps it; its next revision forks from what it was based on.
    public func applyRemote(_ documents: [DocumentID]) {
        var invalid = Invalidations()
        state.withLock { s in
            // Local entry changes become revisions first: the placement rules below compare stored listings.
            for inode in s.dirtyDirectories.sorted() {
                do { try commitDirectoryLocked(inode, in: &s) } catch {
                    logger.error("directory revision failed", metadata: ["inode": "\(inode)"])
                }
            }
            var directories: [DocumentID] = []
            var seen = Set<DocumentID>()
            for d in documents where seen.insert(d).inserted {
                do {
                    guard let w = try winner(of: d) else { continue }
                    if w.revision.kind == .directory {
                        directories.append(d)
                    } else {
                        try applyFile(d, w, in: &s, &invalid)
                    }
                } catch {
                    logger.error("applying a received revision failed: \(error)", metadata: ["document": "\(d)"])
                }
            }
            for d in directories {
                do { try applyDirectory(d, in: &s, &invalid) } catch {
                    logger.error("applying a received directory failed: \(error)", metadata: ["document": "\(d)"])
                }
            }
            // A delete undone by an edit that arrived after the listing that removed the document: the listings
            // are shown again, now keeping it (rare: a fork of a deleted document).
            let unplaced = seen.contains { d in
                guard let record = try? store.document(d), s.nodes[record.inode]?.linked != true,
                    let w = try? winner(of: d), w.revision.kind != .tombstone
                else { return false }
                return (try? w.heads.contains { try store.revision($0).revision.kind == .tombstone }) ?? false
            }
            if unplaced {
                invalid.applying = []
                for inode in s.nodes.keys.sorted() where s.nodes[inode]!.isDirectory && s.nodes[inode]!.linked {
                    let d = s.nodes[inode]!.record.id
                    do { try applyDirectory(d, in: &s, &invalid) } catch {
                        logger.error("applying a directory again failed: \(error)", metadata: ["document": "\(d)"])
                    }
                }
            }
        }
        guard let cache = kernelCache.withLock({ $0 }) else { return }
        for (parent, name) in invalid.entries { cache.invalidate(parent: parent, name: name) }
        for inode in invalid.inodes { cache.invalidate(inode: inode) }
    }

    struct Invalidations {
        var inodes: Set<UInt64> = []
        var entries: [(UInt64, String)] = []
        /// Directories shown in this pass: each once, so that concurrent moves forming a cycle end.
        var applying: Set<DocumentID> = []
    }

    func winner(of document: DocumentID) throws(StoreError) -> Winner? {
        let heads = try store.heads(of: document)
        var best: (node: RevisionGraph.Node, winner: Winner)?
        for h in heads {
            let (revision, metadata) = try store.revision(h)
            let node = RevisionGraph.Node(
                id: h, parents: revision.parents, time: revision.time, isTombstone: revision.kind == .tombstone)
            if best.map({ RevisionGraph.winsOver(node, $0.node) }) ?? true {
                best = (node, Winner(id: h, revision: revision, metadata: metadata, heads: heads))
            }
        }
        return best?.winner
    }

    private func applyFile(_ document: DocumentID, _ w: Winner, in s: inout State, _ invalid: inout Invalidations) throws {
        guard let record = try store.document(document) else { return }  // its directory's listing brings it in
        guard var node = s.nodes[record.inode] else {
            // Not in the tree (removed here): the catalog row follows, so a later listing shows it current.
            guard !record.dirty, record.head != w.id else { return }
            try store.transaction { tx in try tx.updateDocument(Self.record(record, showing: w)) }
            return
        }
        guard node.record.head != w.id, !node.record.dirty, !node.metadataChanged else { return }
        if let content = node.content {
            // Lock order forbids waiting for the content lock here; a busy content is being committed.
            let refreshed = content.state.withLockIfAvailable { c -> Bool in
                guard !c.modified else { return false }
                guard let tree = try? store.loadManifest(w.metadata.content) else { return false }
                content.committed(&c, tree: tree)
                c.size = tree.length
                return true
            }
            guard refreshed == true else { return }
        }
        node.record = Self.record(node.record, showing: w)
        if w.revision.kind != .tombstone { node.record.kind = w.revision.kind }
        let updated = node.record
        try store.transaction { tx in try tx.updateDocument(updated) }
        s.nodes[node.inode] = node
        invalid.inodes.insert(node.inode)
    }

    static func record(_ record: DocumentRecord, showing w: Winner) -> DocumentRecord {
        var r = record
        r.head = w.id
        r.metadata = w.metadata
        r.dirty = false
        return r
    }

    /// Shows the merge of every head's listing in directory `document`.
    private func applyDirectory(_ document: DocumentID, in s: inout State, _ invalid: inout Invalidations) throws {
        guard invalid.applying.insert(document).inserted else { return }
        guard let record = try store.document(document), s.nodes[record.inode] != nil else { return }
        let inode = record.inode
        // Local entry changes become a revision first, so the merge below includes them.
        if s.dirtyDirectories.contains(inode) { try commitDirectoryLocked(inode, in: &s) }
        guard let w = try winner(of: document), var dir = s.nodes[inode], w.revision.kind == .directory else { return }
        let merged = try mergedListing(w)
        // Entries that changed: removed or pointing at another document.
        let wanted = Dictionary(merged.map { ($0.entry.name, $0.entry) }, uniquingKeysWith: { a, _ in a })
        var removed: [UInt64] = []
        for (name, child) in dir.children.sorted where wanted[name]?.document != s.nodes[child]?.record.id {
            dir.children.removeValue(forKey: name)
            if var c = s.nodes[child], c.parent == inode, c.name == name {
                c.linked = false
                if c.isDirectory { dir.subdirectories -= 1 }
                if try winner(of: c.record.id)?.revision.kind == .tombstone { c.record.kind = .tombstone }
                s.nodes[child] = c
                removed.append(child)
            }
            let gone = s.nodes[child]?.record
            try store.transaction { tx in
                try tx.removeEntry(parent: inode, name: name)
                if let gone, gone.kind == .tombstone { try tx.updateDocument(gone) }
            }
            invalid.entries.append((inode, name))
        }
        s.nodes[inode] = dir
        for (entry, stamp) in merged {
            if let child = dir.children[entry.name] {
                s.nodes[child]?.placedBy = stamp
                continue
            }
            guard let child = try linkDocument(entry, placedBy: stamp, into: inode, in: &s, &invalid) else { continue }
            dir = s.nodes[inode]!
            dir.children[entry.name] = child
            if s.nodes[child]!.isDirectory { dir.subdirectories += 1 }
            s.nodes[inode] = dir
            invalid.entries.append((inode, entry.name))
        }
        for child in removed { Self.dropIfUnreferenced(child, in: &s) }
        dir = s.nodes[inode]!
        dir.mergedHeads = w.heads
        dir.record = Self.record(dir.record, showing: w)
        dir.record.metadata.size = UInt64(DirectoryListing(entries: merged.map(\.entry)).encoded().count)
        let updated = dir.record
        try store.transaction { tx in try tx.updateDocument(updated) }
        s.nodes[inode] = dir
        invalid.inodes.insert(inode)
    }

    /// The listing of the winner, or the three-way merge of every head's listing against their base; with each
    /// entry, the directory revision that decided it (the entry's stamp: later stamps win placements).
    func mergedListing(_ w: Winner) throws -> [(entry: DirectoryListing.Entry, stamp: RevisionID)] {
        func listing(_ id: RevisionID) throws -> DirectoryListing {
            let (revision, metadata) = try store.revision(id)
            guard revision.kind == .directory else { return DirectoryListing(entries: []) }
            return try DirectoryListing(decoding: store.readContent(metadata.content))
        }
        guard w.heads.count > 1 else {
            // A delete in this revision that lost to a concurrent edit elsewhere: the document stays.
            let entries = try listing(w.id).entries
            let listed = Set(entries.map(\.document))
            var names = Set(entries.map(\.name))
            var kept: [DirectoryListing.Entry] = []
            for parent in w.revision.parents {
                for e in try listing(parent).entries where !listed.contains(e.document) && !names.contains(e.name) {
                    if try isUndeleted(e.document) {
                        kept.append(e)
                        names.insert(e.name)
                    }
                }
            }
            return (entries + kept).map { ($0, w.id) }
        }
        let graph = RevisionGraph(try store.revisions(of: w.revision.document).map {
            RevisionGraph.Node(id: $0.id, parents: $0.parents, time: $0.time)
        })
        let baseID = graph.mergeBase(of: w.heads)
        let base = try baseID.map(listing)
        let order = graph.ordered(w.heads)
        let heads = try order.map(listing)
        // Documents some head lists and another does not: removed there, by a move or by a delete.
        let listed = heads.map { Set($0.entries.map(\.document)) }
        let disputed = listed.reduce(Set<DocumentID>()) { $0.union($1) }.subtracting(listed.dropFirst().reduce(listed[0]) { $0.intersection($1) })
        let undeleted = try Set(disputed.filter(isUndeleted))
        return DirectoryMerge.placements(base: base, heads: heads, undeleted: undeleted).map { p in
            (p.entry, p.head.map { order[$0] } ?? baseID ?? w.id)
        }
    }

    /// Whether `document`'s delete lost to a concurrent change: its winner is not a tombstone, another head is.
    func isUndeleted(_ document: DocumentID) throws -> Bool {
        guard let w = try winner(of: document), w.revision.kind != .tombstone, w.heads.count > 1 else { return false }
        return try w.heads.contains { try store.revision($0).revision.kind == .tombstone }
    }

    /// Whether a placement decided by `a` was written after one decided by `b` (by HLC time, then id).
    func isLater(_ a: RevisionID, than b: RevisionID) throws -> Bool {
        let (ta, tb) = (try store.revision(a).revision.time, try store.revision(b).revision.time)
        return (ta, a) > (tb, b)
    }

    /// The inode showing `entry`'s document under `parent`: an existing one moved here, or a new row
    /// (showing its winner, or empty until its first revision arrives). nil when the document stays where it
    /// is: another directory lists it with a later stamp (docs/design.md, "Placement").
    private func linkDocument(
        _ entry: DirectoryListing.Entry, placedBy stamp: RevisionID, into parent: UInt64, in s: inout State,
        _ invalid: inout Invalidations
    ) throws -> UInt64? {
        let w = try winner(of: entry.document)
        var record: DocumentRecord
        if let existing = try store.document(entry.document) {
            record = existing
            if let w, !existing.dirty { record = Self.record(existing, showing: w) }
        } else {
            let metadata = w?.metadata ?? RevisionMetadata.new(mode: Self.defaultMode(entry.kind), uid: 0, gid: 0)
            let inode = try store.transaction { tx in try tx.insertDocument(id: entry.document, kind: entry.kind, metadata: metadata, dirty: false) }
            record = DocumentRecord(
                inode: inode, id: entry.document, kind: entry.kind, head: w?.id, metadata: metadata,
                atimeSeconds: metadata.mtimeSeconds, atimeNanoseconds: metadata.mtimeNanoseconds, dirty: false)
        }
        if let k = w?.revision.kind, k != .tombstone { record.kind = k } else if record.kind == .tombstone { record.kind = entry.kind }
        var parent = parent
        var name = entry.name
        var rescuedHere = false
        if let old = s.nodes[record.inode], old.linked, old.parent != parent || old.name != entry.name {
            if old.parent != parent, try listsLater(old.parent, entry.document, than: stamp, in: s) { return nil }
            unlinkMoved(old, in: &s, &invalid)
            try store.transaction { tx in try tx.removeEntry(parent: old.parent, name: old.name) }
        }
        if record.kind == .directory, Self.isAncestor(record.inode, of: parent, in: s) {
            // Concurrent moves made a cycle: the edge written first gives way, its directory shows at the root.
            let cycle = Self.path(from: parent, upTo: record.inode, in: s)
            var oldest: (inode: UInt64, stamp: RevisionID)? = nil
            for n in cycle.dropLast() {
                guard let placed = s.nodes[n]?.placedBy else { continue }
                if try oldest.map({ try isLater($0.stamp, than: placed) }) ?? true { oldest = (n, placed) }
            }
            if let oldest, try isLater(stamp, than: oldest.stamp) {
                try rescue(oldest.inode, in: &s, &invalid)
            } else {
                name = rootName(for: entry.name, entry.document, in: s)
                parent = Self.rootInode
                rescuedHere = true
                markRescued(in: &s)
            }
        }
        let fresh = s.nodes[record.inode] == nil
        var node = s.nodes[record.inode] ?? Node(record: record, parent: parent, name: name)
        node.record = record
        node.parent = parent
        node.name = name
        node.linked = true
        node.placedBy = stamp
        let shown = record
        try store.transaction { tx in
            try tx.updateDocument(shown)
            try tx.setEntry(parent: parent, name: name, child: shown.inode)
        }
        s.nodes[record.inode] = node
        if rescuedHere {
            s.nodes[Self.rootInode]!.children[name] = record.inode
            s.nodes[Self.rootInode]!.subdirectories += 1
            invalid.entries.append((Self.rootInode, name))
        }
        // A new inode of a directory shown earlier in this pass (then dropped) has no entries yet: fill it again.
        if fresh { invalid.applying.remove(entry.document) }
        if node.isDirectory, w != nil { try applyDirectory(entry.document, in: &s, &invalid) }
        return rescuedHere ? nil : record.inode
    }

    /// Whether directory `directory`'s stored listing (merged) names `document` with a stamp later than `stamp`.
    private func listsLater(_ directory: UInt64, _ document: DocumentID, than stamp: RevisionID, in s: State) throws -> Bool {
        guard let id = s.nodes[directory]?.record.id, let w = try winner(of: id), w.revision.kind == .directory,
            let there = try mergedListing(w).first(where: { $0.entry.document == document })
        else { return false }
        return try isLater(there.stamp, than: stamp)
    }

    /// Takes `node` out of the directory showing it (that directory's own revision may not have arrived yet).
    private func unlinkMoved(_ node: Node, in s: inout State, _ invalid: inout Invalidations) {
        guard var from = s.nodes[node.parent] else { return }
        from.children.removeValue(forKey: node.name)
        if node.isDirectory { from.subdirectories -= 1 }
        s.nodes[node.parent] = from
        invalid.entries.append((node.parent, node.name))
        invalid.inodes.insert(node.parent)
    }

    /// Moves directory `inode` out of a cycle to the root; the root's next revision records it there.
    private func rescue(_ inode: UInt64, in s: inout State, _ invalid: inout Invalidations) throws {
        let node = s.nodes[inode]!
        unlinkMoved(node, in: &s, &invalid)
        let name = rootName(for: node.name, node.record.id, in: s)
        try store.transaction { tx in
            try tx.removeEntry(parent: node.parent, name: node.name)
            try tx.setEntry(parent: Self.rootInode, name: name, child: inode)
        }
        s.nodes[inode]!.parent = Self.rootInode
        s.nodes[inode]!.name = name
        s.nodes[Self.rootInode]!.children[name] = inode
        s.nodes[Self.rootInode]!.subdirectories += 1
        s.dirtyDirectories.insert(node.parent)
        markRescued(in: &s)
        invalid.entries.append((Self.rootInode, name))
    }

    private func markRescued(in s: inout State) {
        s.nodes[Self.rootInode]!.record.dirty = true
        s.dirtyDirectories.insert(Self.rootInode)
    }

    /// `name`, or its conflict form when the root already shows another document under it.
    private func rootName(for name: String, _ document: DocumentID, in s: State) -> String {
        guard let taken = s.nodes[Self.rootInode]!.children[name], s.nodes[taken]?.record.id != document else { return name }
        return DirectoryMerge.conflictName(name, document)
    }

    static func defaultMode(_ kind: RevisionKind) -> UInt32 {
        switch kind {
        case .directory: S_IFDIR | 0o755
        case .symlink: S_IFLNK | 0o777
        default: S_IFREG | 0o644
        }
    }
}
