import HypernetStore

/// Files opened with O_TMPFILE (docs/design.md, "Files without a name"): a document row that no entry names, shown
/// to the kernel with `st_nlink` 0 (`Node.unnamed`). It makes no revision and its content stays staged (past
/// `FileContent.streamBytes` sealed as it is written, as a growing file's is) until `link` names it; it is then a new
/// document there, whose first revision holds what was written, as if created there. A file never named is gone at
/// its last release, and one left open when the daemon stopped at the next start, as on ext4 after a crash.
extension VirtualFileSystem {
    /// The last release of an unnamed file: its row is retired (row numbers are inodes, never reused).
    func forgetUnnamedLocked(_ node: inout Node) {
        node.unnamed = false
        let inode = node.inode
        do { try store.transaction { tx in try tx.retireDocument(inode: inode) } } catch {
            // The next start retires it.
            logger.error("retiring an unnamed file failed: \(error)", metadata: ["inode": "\(inode)"])
        }
    }

    /// At start: retires the rows of unnamed files left by the last run: dirty, without a revision, and the child of
    /// no entry (`listed`), which no other row is (a create writes its row and entry at once).
    static func retireUnnamed(_ s: inout State, listed: Set<UInt64>, store: Store) throws(StoreError) -> Int {
        let unnamed = s.nodes.values.filter {
            $0.inode != rootInode && !$0.isDirectory && $0.record.head == nil && $0.record.dirty
                && !listed.contains($0.inode)
        }.map(\.inode)
        guard !unnamed.isEmpty else { return 0 }
        try store.transaction { tx in for inode in unnamed { try tx.retireDocument(inode: inode) } }
        for inode in unnamed { s.nodes.removeValue(forKey: inode) }
        return unnamed.count
    }
}
