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
        let summaries: [RevisionSummary]
        do { summaries = try store.revisions(of: node.record.id) } catch { throw fail(error, "history", inode: node.inode) }
        return summaries.map { r in
            HistoryEntry(
                revision: r.id.hex, time: ISO8601.format(milliseconds: r.time.milliseconds), author: store.authorName(r.author), size: r.size,
                parents: r.parents.map(\.hex), kind: "\(r.kind)", isHead: r.isHead)
        }
    }

    /// The heads other than the one shown: a file's unresolved conflicts (a directory's heads merge).
    func conflicts(of node: Node) throws(VFSError) -> [HistoryEntry] {
        guard !node.isDirectory else { return [] }
        return try history(of: node).filter { $0.isHead && $0.revision != node.record.head?.hex }
    }

    public func history(path: String) throws(VFSError) -> [HistoryEntry] {
        try history(of: resolve(path: path))
    }

    /// The revision of `node`'s document whose id is `revision` or starts with it (at least 4 hex digits).
    private func findRevision(_ revision: String, of node: Node) throws(VFSError) -> RevisionID {
        let wanted = revision.lowercased()
        guard wanted.count >= 4 else { throw VFSError(ENXIO) }
        let matches: [RevisionSummary]
        do { matches = try store.revisions(of: node.record.id).filter { $0.id.hex.hasPrefix(wanted) } } catch {
            throw fail(error, "history", inode: node.inode)
        }
        guard matches.count == 1 else { throw VFSError(ENXIO) }
        return matches[0].id
    }

    /// Content of `path` at `revision` (a full revision id or a unique prefix); ENXIO for an unknown revision.
    public func content(path: String, revision: String) throws(VFSError) -> [UInt8] {
        let node = try resolve(path: path)
        let id = try findRevision(revision, of: node)
        do {
            let (r, metadata) = try store.revision(id)
            switch r.kind {
            case .file, .directory: return try store.readContent(metadata.content)
            case .symlink: return metadata.symlinkTarget
            case .tombstone: throw VFSError(ENOENT)
            }
        } catch {
            throw fail(error, "read revision", inode: node.inode)
        }
    }

    /// Makes `revision`'s content current as a new revision; returns the new revision id.
    public func restore(path: String, revision: String) throws(VFSError) -> String {
        let node = try resolve(path: path)
        guard node.kind == .file else { throw VFSError(EISDIR) }
        let id = try findRevision(revision, of: node)
        let old: RevisionMetadata
        do { old = try store.revision(id).metadata } catch { throw fail(error, "read revision", inode: node.inode) }
        let content = try attachContent(node.inode)
        defer { detachContent(node.inode) }
        let tree: ManifestTree
        do { tree = try store.loadManifest(old.content) } catch { throw fail(error, "load content", inode: node.inode) }
        // The restored revision points at the old manifest: no content is copied.
        return try content.state.withLock { (c) throws(VFSError) in
            try state.withLock { (s) throws(VFSError) in
                guard var n = s.nodes[node.inode] else { throw VFSError(ENOENT) }
                n.record.metadata.content = old.content
                n.record.metadata.size = old.size
                n.touch()
                try appendRevisionLocked(&n, locations: [])
                s.nodes[node.inode] = n
                content.committed(&c, tree: tree)
                c.size = tree.length
                return n.record.head!.hex
            }
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
