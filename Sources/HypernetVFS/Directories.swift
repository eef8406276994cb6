import Glibc
import HypernetStore

extension VirtualFileSystem {
    /// `caller`: who opens it, for the folders whose entries depend on who asks (nil: everything, as for the owner).
    public func opendir(inode: UInt64, caller: Caller? = nil) throws(VFSError) -> UInt64 {
        if VirtualTree.contains(inode) { return try virtualOpendir(inode, caller: caller) }
        let foreignRoots = inode == Self.rootInode ? foreignRoots() : []
        return try state.withLock { (s) throws(VFSError) in
            let dir = try Self.directory(inode, in: s)
            let h = s.nextHandle
            s.nextHandle += 1
            s.handles[h] = .directory(inode: inode, entries: Self.listing(dir, foreignRoots: foreignRoots))
            return h
        }
    }

    /// `.`, `..`, then the children by name (the root's with `.hypernet` and the `@NAME` directories first): a
    /// snapshot taken at opendir and at each rewind (offset 0).
    static func listing(_ dir: Node, foreignRoots: [(name: String, inode: UInt64)]) -> [(name: String, inode: UInt64)] {
        guard dir.inode == rootInode else { return [(".", dir.inode), ("..", dir.parent)] + dir.children.sorted }
        // Stored documents named `.hypernet` or `@NAME` at the root are hidden by the virtual directories.
        let hidden = Set([VirtualTree.name] + foreignRoots.map(\.name))
        return [(".", dir.inode), ("..", dir.parent), (VirtualTree.name, VirtualTree.directory)] + foreignRoots
            + dir.children.sorted.filter { !hidden.contains($0.name) }
    }

    /// At most `limit` entries after `offset` (0 = from the start, including `.` and `..`), in a stable order.
    /// The kernel reads a directory a buffer at a time: answering each call with every entry left made `ls` of n
    /// entries cost O(n²).
    public func readdir(handle: UInt64, offset: UInt64, limit: Int = .max) throws(VFSError) -> [DirectoryEntry] {
        try state.withLock { (s) throws(VFSError) in
            if case .listed(let entries)? = s.handles[handle] {
                return Array(entries.dropFirst(Int(min(offset, UInt64(entries.count)))).prefix(limit))
            }
            guard case .directory(let inode, var entries)? = s.handles[handle] else { throw VFSError(EBADF) }
            if offset == 0, !VirtualTree.contains(inode), let dir = s.nodes[inode] {
                entries = Self.listing(dir, foreignRoots: entries.filter { ForeignTree.contains($0.inode) })
                s.handles[handle] = .directory(inode: inode, entries: entries)
            }
            guard offset < UInt64(entries.count) else { return [] }
            var out: [DirectoryEntry] = []
            for i in Int(offset)..<entries.count where out.count < limit {
                if VirtualTree.contains(entries[i].inode),
                    let attributes = Self.fixedAttributes(entries[i].inode, root: s.nodes[Self.rootInode]!.attributes())
                {
                    out.append(DirectoryEntry(name: entries[i].name, attributes: attributes, nextOffset: UInt64(i + 1)))
                    continue
                }
                // Entries removed since the snapshot are skipped, as on a native filesystem.
                guard let node = s.nodes[entries[i].inode], node.linked || i < 2 else { continue }
                out.append(
                    DirectoryEntry(name: entries[i].name, attributes: node.attributes(), nextOffset: UInt64(i + 1)))
            }
            return out
        }
    }

    public func releasedir(handle: UInt64) {
        _ = state.withLock { s in s.handles.removeValue(forKey: handle) }
    }

    public func fsyncdir(handle: UInt64) throws(VFSError) {
        let inode: UInt64 = try state.withLock { (s) throws(VFSError) in
            guard case .directory(let inode, _)? = s.handles[handle] else { throw VFSError(EBADF) }
            return inode
        }
        commitDirectories()
        do { try store.sync() } catch { throw fail(error, "fsyncdir", inode: inode) }
    }

    /// Space of the filesystem holding the home: that is where the store grows.
    public func statfs() throws(VFSError) -> FileSystemStatistics {
        var st = statvfs()
        guard statvfs(store.home.path, &st) == 0 else { throw VFSError(errno) }
        let documents = state.withLock { s in UInt64(s.nodes.count) }
        return FileSystemStatistics(
            blockSize: UInt64(st.f_frsize), blocks: UInt64(st.f_blocks), blocksFree: UInt64(st.f_bfree),
            blocksAvailable: UInt64(st.f_bavail), files: documents + UInt64(st.f_ffree), filesFree: UInt64(st.f_ffree),
            nameMax: UInt64(Self.nameMax))
    }
}
