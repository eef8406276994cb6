import Glibc
import HypernetModel
import HypernetStore

/// Hard links: several directory entries naming one document (docs/design.md, "Hard links"). A node keeps its first
/// name in `parent`/`name` and the others in `otherNames`; `st_nlink` counts them, and its revisions record how many
/// there are (`RevisionMetadata.links`), which tells other nodes to show every name.
extension VirtualFileSystem {
    /// link(2): `newParent/newName` becomes one more name of `inode`'s document, or the first of a file opened with
    /// O_TMPFILE (`Unnamed.swift`). EXDEV into, out of or within another identity's tree, from `/.hypernet/`, and
    /// into a directory of another rights domain; EPERM for a directory (the kernel refuses that first).
    public func link(inode: UInt64, newParent: UInt64, newName: String) throws(VFSError) -> Attributes {
        if ForeignTree.contains(inode) || ForeignTree.contains(newParent) || VirtualTree.contains(inode) {
            throw VFSError(EXDEV)
        }
        try refuseVirtual(newParent, newName)
        try Self.validate(name: newName)
        let named = try state.withLock { (s) throws(VFSError) in
            var node = try Self.node(inode, in: s)
            guard !node.isDirectory else { throw VFSError(EPERM) }
            guard node.linked || node.unnamed else { throw VFSError(ENOENT) }
            var parentRecord = try Self.directory(newParent, in: s).record
            try Self.checkNewEntry(newName, in: newParent, s)
            // An unnamed file's chain is its directory's at open(O_TMPFILE), which may have been removed since (the
            // kernel keeps its inode while the file is open).
            guard let domain = s.nodes[node.parent]?.record.id else { throw VFSError(ENOENT) }
            let now = Timestamp.now()
            parentRecord.metadata.touch(at: now)
            parentRecord.dirty = true
            let named = node.unnamed
            if named {
                (node.parent, node.name, node.linked, node.unnamed) = (newParent, newName, true, false)
            } else {
                node.otherNames.append(Link(parent: newParent, name: newName))
            }
            let record = node.namesChanged(at: now)
            // A document is governed by one chain: a name in a directory of another would show it to readers who
            // cannot open it, or hide it from ones who could (design.md, "Hard links").
            let sameChain: Bool
            do {
                sameChain = try store.rightsForChildren(of: parentRecord.id) == store.rightsForChildren(of: domain)
            } catch {
                throw fail(error, "link", inode: inode)
            }
            guard sameChain else { throw VFSError(EXDEV) }
            try persist("link") { tx in
                try tx.setEntry(parent: newParent, name: newName, child: inode)
                try tx.updateDocument(parentRecord)
                if let record { try tx.updateDocument(record) }
            }
            // The reply is an entry: the kernel counts one more reference.
            node.lookups += 1
            s.nodes[inode] = node
            if record != nil { s.pendingRevisions.insert(inode) }
            s.nodes[newParent]!.record = parentRecord
            s.nodes[newParent]!.children[newName] = inode
            s.dirtyDirectories.insert(newParent)
            return named
        }
        // Named, it is a new document there, and what was written is its first revision, as a file created there,
        // written and closed would be.
        if named { try commit(inode) }
        return try getattr(inode: inode)
    }

    /// Removes `link`, one of several names of `inode`: the document lives on under the others, without a tombstone.
    func removeNameLocked(_ inode: UInt64, _ link: Link, in s: inout State) throws(VFSError) {
        var parentRecord = s.nodes[link.parent]!.record
        let now = Timestamp.now()
        parentRecord.metadata.touch(at: now)
        parentRecord.dirty = true
        var node = s.nodes[inode]!
        node.rename(link, to: nil)
        let record = node.namesChanged(at: now)
        try persist("remove") { tx in
            try tx.removeEntry(parent: link.parent, name: link.name)
            try tx.updateDocument(parentRecord)
            if let record { try tx.updateDocument(record) }
        }
        s.nodes[inode] = node
        if record != nil { s.pendingRevisions.insert(inode) }
        s.nodes[link.parent]!.record = parentRecord
        s.nodes[link.parent]!.children.removeValue(forKey: link.name)
        s.dirtyDirectories.insert(link.parent)
    }
}

extension Node {
    /// After a name was added or removed: ctime moves, and the count goes into the next revision (made by the
    /// once-a-second pass, before the directories' own). Returns the row to write now, marked dirty (nil for an
    /// open file, whose live size may be ahead of its committed content: its own commit writes it).
    mutating func namesChanged(at now: Timestamp) -> DocumentRecord? {
        touch(modified: false, at: now)
        record.metadata.links = UInt32(names.count)
        metadataChanged = true
        guard content == nil else { return nil }
        record.dirty = true
        return record
    }

    /// Renames the name `old` to `new` (nil: removes it). Removing the first name makes the next one first.
    mutating func rename(_ old: Link, to new: Link?) {
        if Link(parent: parent, name: name) == old {
            guard let next = new ?? (otherNames.isEmpty ? nil : otherNames.removeFirst()) else { return }
            parent = next.parent
            name = next.name
        } else if let i = otherNames.firstIndex(of: old) {
            if let new { otherNames[i] = new } else { otherNames.remove(at: i) }
        }
    }
}
