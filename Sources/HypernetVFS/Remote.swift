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
        }
        guard let cache = kernelCache.withLock({ $0 }) else { return }
        for (parent, name) in invalid.entries { cache.invalidate(parent: parent, name: name) }
        for inode in invalid.inodes { cache.invalidate(inode: inode) }
    }

    struct Invalidations {
        var inodes: Set<UInt64> = []
        var entries: [(UInt64, String)] = []
    }

    func winner(of document: DocumentID) throws(StoreError) -> Winner? {
        let heads = try store.heads(of: document)
        var best: Winner?
        for h in heads {
            let (revision, metadata) = try store.revision(h)
            if best.map({ ($0.revision.time, $0.id) < (revision.time, h) }) ?? true {
                best = Winner(id: h, revision: revision, metadata: metadata, heads: heads)
            }
        }
        return best
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
        guard let record = try store.document(document), s.nodes[record.inode] != nil else { return }
        let inode = record.inode
        // Local entry changes become a revision first, so the merge below includes them.
        if s.dirtyDirectories.contains(inode) { try commitDirectoryLocked(inode, in: &s) }
        guard let w = try winner(of: document), var dir = s.nodes[inode], w.revision.kind == .directory else { return }
        let merged = try mergedListing(w)
        // Entries that changed: removed or pointing at another document.
        let wanted = Dictionary(merged.entries.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
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
        for entry in merged.entries where dir.children[entry.name] == nil {
            let child = try linkDocument(entry, into: inode, in: &s, &invalid)
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
        dir.record.metadata.size = UInt64(merged.encoded().count)
        let updated = dir.record
        try store.transaction { tx in try tx.updateDocument(updated) }
        s.nodes[inode] = dir
        invalid.inodes.insert(inode)
    }

    /// The listing of the winner, or the three-way merge of every head's listing against their base.
    private func mergedListing(_ w: Winner) throws -> DirectoryListing {
        func listing(_ id: RevisionID) throws -> DirectoryListing {
            let (revision, metadata) = try store.revision(id)
            guard revision.kind == .directory else { return DirectoryListing(entries: []) }
            return try DirectoryListing(decoding: store.readContent(metadata.content))
        }
        guard w.heads.count > 1 else { return try listing(w.id) }
        let graph = RevisionGraph(try store.revisions(of: w.revision.document).map {
            RevisionGraph.Node(id: $0.id, parents: $0.parents, time: $0.time)
        })
        let base = try graph.mergeBase(of: w.heads).map(listing)
        return DirectoryMerge.merge(base: base, heads: try graph.ordered(w.heads).map(listing))
    }

    /// The inode showing `entry`'s document under `parent`: an existing one moved here, or a new row
    /// (showing its winner, or empty until its first revision arrives).
    private func linkDocument(_ entry: DirectoryListing.Entry, into parent: UInt64, in s: inout State, _ invalid: inout Invalidations) throws
        -> UInt64
    {
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
        if let old = s.nodes[record.inode], old.linked, old.parent != parent || old.name != entry.name, var from = s.nodes[old.parent] {
            // Moved: the old name goes (its own directory's revision may not have arrived yet).
            from.children.removeValue(forKey: old.name)
            if old.isDirectory { from.subdirectories -= 1 }
            s.nodes[old.parent] = from
            try store.transaction { tx in try tx.removeEntry(parent: old.parent, name: old.name) }
            invalid.entries.append((old.parent, old.name))
            invalid.inodes.insert(old.parent)
        }
        var node = s.nodes[record.inode] ?? Node(record: record, parent: parent, name: entry.name)
        node.record = record
        node.parent = parent
        node.name = entry.name
        node.linked = true
        let shown = record
        try store.transaction { tx in
            try tx.updateDocument(shown)
            try tx.setEntry(parent: parent, name: entry.name, child: shown.inode)
        }
        s.nodes[record.inode] = node
        if node.isDirectory, w != nil { try applyDirectory(entry.document, in: &s, &invalid) }
        return record.inode
    }

    static func defaultMode(_ kind: RevisionKind) -> UInt32 {
        switch kind {
        case .directory: S_IFDIR | 0o755
        case .symlink: S_IFLNK | 0o777
        default: S_IFREG | 0o644
        }
    }
}
