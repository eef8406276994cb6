import Dispatch
import Glibc
import HypernetModel
import HypernetStore

extension VirtualFileSystem {
    // MARK: Creating

    /// Regular files, FIFOs, UNIX sockets and device nodes (`rdev`: a device's number), also under `/@NAME/`. The
    /// kernel checks CAP_MKNOD for devices and opens them only without `nodev`.
    public func mknod(parent: UInt64, name: String, mode: UInt32, rdev: UInt64 = 0, caller: Caller)
        throws(VFSError) -> Attributes
    {
        let type = mode & S_IFMT == 0 ? S_IFREG : mode & S_IFMT
        let kind: RevisionKind
        switch type {
        case S_IFREG: kind = .file
        case S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK: kind = .special
        default: throw VFSError(type == S_IFDIR || type == S_IFLNK ? EPERM : EINVAL)
        }
        let device = type == S_IFCHR || type == S_IFBLK ? rdev : 0
        if ForeignTree.contains(parent) {
            return try foreignCreate(
                parent: parent, name: name, kind: kind, mode: type | (mode & 0o7777), rdev: device, caller: caller
            ).attributes
        }
        try refuseVirtual(parent, name)
        let inode = try makeNode(
            parent: parent, name: name, kind: kind, mode: type | (mode & 0o7777), caller: caller, rdev: device)
        try commit(inode)
        return try getattr(inode: inode)
    }

    public func mkdir(parent: UInt64, name: String, mode: UInt32, caller: Caller) throws(VFSError) -> Attributes {
        if ForeignTree.contains(parent) {
            return try foreignCreate(
                parent: parent, name: name, kind: .directory, mode: S_IFDIR | (mode & 0o7777), caller: caller
            ).attributes
        }
        let inode = try makeNode(
            parent: parent, name: name, kind: .directory, mode: S_IFDIR | (mode & 0o7777), caller: caller)
        try commit(inode)
        return try getattr(inode: inode)
    }

    public func symlink(parent: UInt64, name: String, target: String, caller: Caller) throws(VFSError) -> Attributes {
        let bytes = FileName.encode(target)
        guard bytes.count < 4096 else { throw VFSError(ENAMETOOLONG) }
        let inode = try makeNode(
            parent: parent, name: name, kind: .symlink, mode: S_IFLNK | 0o777, caller: caller, target: bytes)
        try commit(inode)
        return try getattr(inode: inode)
    }

    /// Creates and opens a regular file; with no `name`, a file without one (O_TMPFILE, `Unnamed.swift`).
    public func create(parent: UInt64, name: String?, mode: UInt32, flags: Int32, caller: Caller)
        throws(VFSError) -> (attributes: Attributes, handle: UInt64)
    {
        if ForeignTree.contains(parent) {
            // Links there are EXDEV (design.md, "Hard links"): a file without a name could never get one.
            guard let name else { throw VFSError(EOPNOTSUPP) }
            let made = try foreignCreate(
                parent: parent, name: name, kind: .file, mode: S_IFREG | (mode & 0o7777), caller: caller)
            return (made.attributes, made.handle!)
        }
        let inode = try makeNode(
            parent: parent, name: name, kind: .file, mode: S_IFREG | (mode & 0o7777), caller: caller)
        _ = try attachContent(inode, isNew: true)
        return (try getattr(inode: inode), newFileHandle(inode, writes: true))
    }

    /// Adds a document under `parent`; the new inode has one kernel reference (the lookup the reply makes). With no
    /// `name`, a file the directory does not list (`Unnamed.swift`): `parent` only decides its group and chain.
    func makeNode(
        parent: UInt64, name: String?, kind: RevisionKind, mode: UInt32, caller: Caller, target: [UInt8] = [],
        rdev: UInt64 = 0
    ) throws(VFSError) -> UInt64 {
        try refuseVirtual(parent, name ?? "")
        if let name { try Self.validate(name: name) }
        return try state.withLock { (s) throws(VFSError) in
            // The directory changes in place (`s.nodes[parent]!…`): a copy of its node held here would make adding
            // the entry copy all its entries, O(n) per create.
            var parentRecord = try Self.directory(parent, in: s).record
            if let name { try Self.checkNewEntry(name, in: parent, s) }
            var mode = mode
            var gid = caller.gid
            if parentRecord.metadata.mode & S_ISGID != 0 {
                // BSD group semantics under a set-gid directory, as on ext4.
                gid = parentRecord.metadata.gid
                if kind == .directory { mode |= S_ISGID }
            }
            var metadata = RevisionMetadata.new(mode: mode, uid: caller.uid, gid: gid)
            metadata.symlinkTarget = target
            metadata.rdev = rdev
            let now = Timestamp.now()
            if name != nil {
                parentRecord.metadata.touch(at: now)
                parentRecord.dirty = true
            }
            let id = DocumentID.random()
            let inode = try persist("create") { tx in
                let inode = try tx.insertDocument(
                    id: id, kind: kind, metadata: metadata, dirty: true,
                    rights: tx.rightsForChildren(of: parentRecord.id))
                if let name {
                    try tx.setEntry(parent: parent, name: name, child: inode)
                    try tx.updateDocument(parentRecord)
                }
                return inode
            }
            var node = Node(
                record: DocumentRecord(
                    inode: inode, id: id, kind: kind, head: nil, metadata: metadata, atimeSeconds: now.seconds,
                    atimeNanoseconds: UInt32(now.nanoseconds), dirty: true),
                parent: parent, name: name ?? "")
            node.lookups = 1
            node.metadataChanged = true
            guard let name else {
                node.linked = false
                node.unnamed = true
                s.nodes[inode] = node
                return inode
            }
            s.nodes[parent]!.record = parentRecord
            s.nodes[parent]!.children[name] = inode
            if kind == .directory {
                s.nodes[parent]!.subdirectories += 1
                s.dirtyDirectories.insert(inode)
            }
            s.nodes[inode] = node
            s.dirtyDirectories.insert(parent)
            if kind == .file, let continuation = continuationLocked(at: parent, name, by: inode, in: &s) {
                try persist("create", continuation)
            }
            return inode
        }
    }

    // MARK: Removing

    public func unlink(parent: UInt64, name: String) throws(VFSError) {
        try remove(parent: parent, name: name, directory: false)
    }

    public func rmdir(parent: UInt64, name: String) throws(VFSError) {
        if name == "." { throw VFSError(EINVAL) }
        if name == ".." { throw VFSError(ENOTEMPTY) }
        try remove(parent: parent, name: name, directory: true)
    }

    private func remove(parent: UInt64, name: String, directory: Bool) throws(VFSError) {
        if ForeignTree.contains(parent) { return try foreignRemove(parent: parent, name: name, directory: directory) }
        try refuseVirtual(parent, name, needs: .delete)
        try state.withLock { (s) throws(VFSError) in
            guard FileName.byteCount(name) <= Self.nameMax else { throw VFSError(ENAMETOOLONG) }
            // No copy of the directory's node held across `unlinkLocked`, which changes it in place.
            guard let child = try Self.directory(parent, in: s).children[name], let node = s.nodes[child] else {
                throw VFSError(ENOENT)
            }
            if directory {
                guard node.isDirectory else { throw VFSError(ENOTDIR) }
                guard node.children.isEmpty else { throw VFSError(ENOTEMPTY) }
            } else if node.isDirectory {
                throw VFSError(EISDIR)
            }
            do throws(VFSError) {
                try unlinkLocked(child, at: Link(parent: parent, name: name), in: &s)
            } catch let error where error.errno == ENOSPC && store.releaseReserve() {
                // Deletes go on when the disk is full: the reserve made room (docs/errno.md, "A full disk").
                try unlinkLocked(child, at: Link(parent: parent, name: name), in: &s)
            }
        }
    }

    /// Removes the name `link` of `inode`; its last name goes with a tombstone revision (history stays).
    func unlinkLocked(_ inode: UInt64, at link: Link, in s: inout State) throws(VFSError) {
        if !s.nodes[inode]!.otherNames.isEmpty { return try removeNameLocked(inode, link, in: &s) }
        var node = s.nodes[inode]!
        // The directory changes in place, as in `makeNode`.
        let parent = node.parent
        var parentRecord = s.nodes[parent]!.record
        let now = Timestamp.now()
        parentRecord.metadata.touch(at: now)
        parentRecord.dirty = true
        node.touch(modified: false, at: now)
        var record = node.record
        let name = node.name
        let head: RevisionID? = try persist("remove") { tx in
            try tx.removeEntry(parent: parent, name: name)
            try tx.updateDocument(parentRecord)
            var head = record.head
            if record.head != nil || record.kind != .directory {
                head = try tx.appendRevision(
                    document: record.id, kind: .tombstone, metadata: record.metadata,
                    parents: record.head.map { [$0] } ?? [])
            }
            record.kind = .tombstone
            record.head = head
            // The tombstone carries any pending change: a row left dirty would keep its head and metadata when
            // an edit that beat the delete shows the document again (`linkDocument`).
            record.dirty = false
            try tx.updateDocument(record)
            return head
        }
        node.record.head = head
        node.linked = false
        node.metadataChanged = false
        // Removed empty: so are the directories merged into it (a write into one elsewhere brings it back).
        try endMerged(node.mergedDirectories, in: &s)
        node.mergedDirectories = [:]
        s.merging.remove(inode)
        s.nodes[parent]!.record = parentRecord
        s.nodes[parent]!.children.removeValue(forKey: name)
        if node.isDirectory { s.nodes[parent]!.subdirectories -= 1 }
        s.nodes[inode] = node
        s.dirtyDirectories.insert(parent)
        s.dirtyDirectories.remove(inode)
        Self.dropIfUnreferenced(inode, in: &s)
        // A delete built on the shown head loses to a live head stored but not shown (an edit received meanwhile, a
        // conflict's other side): that head shows again at once, as on every node holding both, not when something
        // next arrives. On another thread: showing it takes this lock. Only another head can win, so the heads alone
        // decide the common case (reading and unsealing each head's revision cost a delete ~3 % more CPU).
        if let head, (try? store.heads(of: record.id)) != [head], (try? winner(of: record.id))??.id != head {
            let document = record.id
            DispatchQueue.global().async { [self] in applyRemote([document]) }
        }
    }

    // MARK: Renaming

    public func rename(parent: UInt64, name: String, newParent: UInt64, newName: String, flags: RenameFlags)
        throws(VFSError)
    {
        if ForeignTree.contains(parent) || ForeignTree.contains(newParent) {
            return try foreignRename(parent: parent, name: name, newParent: newParent, newName: newName, flags: flags)
        }
        try refuseVirtual(parent, name)
        try refuseVirtual(newParent, newName)
        try Self.validate(name: newName)
        guard FileName.byteCount(name) <= Self.nameMax else { throw VFSError(ENAMETOOLONG) }
        guard !(flags.contains(.noReplace) && flags.contains(.exchange)) else { throw VFSError(EINVAL) }
        let saved: UInt64? = try state.withLock { (s) throws(VFSError) -> UInt64? in
            // Only the entries are kept: a copy of either directory's node held while they change would copy them.
            let source = try Self.directory(parent, in: s).children[name]
            let target = try Self.directory(newParent, in: s).children[newName]
            guard let source, let sourceNode = s.nodes[source] else { throw VFSError(ENOENT) }
            if flags.contains(.exchange) {
                guard let target else { throw VFSError(ENOENT) }
                try exchangeLocked(
                    source, at: Link(parent: parent, name: name), target, at: Link(parent: newParent, name: newName),
                    in: &s)
                return nil
            }
            if let target {
                if flags.contains(.noReplace) { throw VFSError(EEXIST) }
                if target == source { return nil }
            }
            if sourceNode.isDirectory, Self.isAncestor(source, of: newParent, in: s) { throw VFSError(EINVAL) }
            let from = Link(parent: parent, name: name)
            // A regular file renamed to a backup name of its own moves, even over another file: an editor's
            // save by rename (vim, emacs) puts the original there and then writes the file anew (`Saves.swift`).
            let backup = sourceNode.kind == .file && RenamedAway.isBackupName(newName, of: name)
            guard let target, let targetNode = s.nodes[target] else {
                if newParent != parent, s.nodes[newParent]!.children.isFull { throw VFSError(ENOSPC) }
                let continuation =
                    sourceNode.kind == .file ? continuationLocked(at: newParent, newName, by: source, in: &s) : nil
                try moveLocked(
                    source, from: from, to: newParent, name: newName, in: &s, after: continuation ?? { _ in })
                if backup { s.renamedAway.note(source, left: parent, name: name) }
                return continuation == nil ? nil : source
            }
            if sourceNode.isDirectory {
                guard targetNode.isDirectory else { throw VFSError(ENOTDIR) }
                guard targetNode.children.isEmpty else { throw VFSError(ENOTEMPTY) }
            } else if targetNode.isDirectory {
                throw VFSError(EISDIR)
            }
            if sourceNode.kind == .file && targetNode.kind == .file && !backup && sourceNode.otherNames.isEmpty
                && targetNode.otherNames.isEmpty
            {
                // A save by rename-over (vim, sed -i, os.replace, mv): the target document lives on
                // with the source's content; the source's own document ends in a tombstone. One transaction:
                // a crash between adopting and moving would leave the target's name without an entry.
                // Not with hard links: the target's other names keep the old content, as on ext4.
                let adoption = adoptIdentityLocked(of: target, into: source, in: &s)
                do throws(VFSError) {
                    try moveLocked(source, from: from, to: newParent, name: newName, in: &s, after: adoption)
                } catch {
                    // The source keeps its own document and the target its name (`moveLocked` put the rest back):
                    // kept adopted, the source's next commit would name the target's document twice.
                    s.nodes[source] = sourceNode
                    s.nodes[target] = targetNode
                    s.nodes[newParent]!.children[newName] = target
                    throw error
                }
                return source
            }
            try unlinkLocked(target, at: Link(parent: newParent, name: newName), in: &s)
            try moveLocked(source, from: from, to: newParent, name: newName, in: &s)
            if backup { s.renamedAway.note(source, left: parent, name: name) }
            return nil
        }
        if let saved { try commit(saved) }
    }

    static func isAncestor(_ ancestor: UInt64, of inode: UInt64, in s: State) -> Bool {
        path(from: inode, upTo: ancestor, in: s).last == ancestor
    }

    /// `inode`, its parent, and so on up to `ancestor` or the root, whichever comes first. Bounded by the
    /// number of nodes, so a cycle (concurrent moves being placed) cannot make it loop.
    static func path(from inode: UInt64, upTo ancestor: UInt64, in s: State) -> [UInt64] {
        var out: [UInt64] = []
        var current = inode
        while out.count <= s.nodes.count {
            out.append(current)
            guard current != ancestor, current != rootInode, let node = s.nodes[current] else { break }
            current = node.parent
        }
        return out
    }

    /// Moves the entry `from` of `inode` to `newParent/newName` (which must be free, or freed by `earlier`, catalog
    /// work committed in the same transaction, before the move's).
    private func moveLocked(
        _ inode: UInt64, from: Link, to newParent: UInt64, name newName: String, in s: inout State,
        after earlier: (StoreTransaction) throws -> Void = { _ in }
    ) throws(VFSError) {
        var node = s.nodes[inode]!
        let oldParent = from.parent
        let oldName = from.name
        // What a failed transaction puts back (the directories' records only: copying their nodes would copy
        // their entries).
        let original = node
        let parentRecords = Set([oldParent, newParent]).map { ($0, s.nodes[$0]!.record) }
        let notDirty = Set([oldParent, newParent]).subtracting(s.dirtyDirectories)
        let now = Timestamp.now()
        node.touch(modified: false, at: now)
        s.nodes[oldParent]!.children.removeValue(forKey: oldName)
        s.nodes[newParent]!.children[newName] = inode
        if node.isDirectory {
            s.nodes[oldParent]!.subdirectories -= 1
            s.nodes[newParent]!.subdirectories += 1
        }
        for p in Set([oldParent, newParent]) {
            s.nodes[p]!.touch(at: now)
            s.nodes[p]!.record.dirty = true
            s.dirtyDirectories.insert(p)
        }
        node.rename(from, to: Link(parent: newParent, name: newName))
        s.nodes[inode] = node
        // The moved document's row keeps its new ctime; an open file's row waits for its next commit
        // (its live size may be ahead of its committed content).
        var records = Set([oldParent, newParent]).map { s.nodes[$0]!.record }
        if node.content == nil { records.append(node.record) }
        do {
            try persist("rename") { tx in
                try earlier(tx)
                try tx.removeEntry(parent: oldParent, name: oldName)
                try tx.setEntry(parent: newParent, name: newName, child: inode)
                for r in records { try tx.updateDocument(r) }
            }
        } catch {
            // Nothing of a failed rename is applied (a full disk: docs/errno.md): shown moved, it would be listed
            // by the next directory revisions while the catalog keeps it where it was.
            s.nodes[newParent]!.children.removeValue(forKey: newName)
            s.nodes[oldParent]!.children[oldName] = inode
            if original.isDirectory {
                s.nodes[oldParent]!.subdirectories += 1
                s.nodes[newParent]!.subdirectories -= 1
            }
            for (p, record) in parentRecords { s.nodes[p]!.record = record }
            s.dirtyDirectories.subtract(notDirty)
            s.nodes[inode] = original
            throw error
        }
    }

    /// RENAME_EXCHANGE: the two entries `la` (of `a`) and `lb` (of `b`) swap places.
    private func exchangeLocked(_ a: UInt64, at la: Link, _ b: UInt64, at lb: Link, in s: inout State)
        throws(VFSError)
    {
        guard a != b else { return }
        let na = s.nodes[a]!
        let nb = s.nodes[b]!
        if na.isDirectory, Self.isAncestor(a, of: lb.parent, in: s) { throw VFSError(EINVAL) }
        if nb.isDirectory, Self.isAncestor(b, of: la.parent, in: s) { throw VFSError(EINVAL) }
        let now = Timestamp.now()
        s.nodes[la.parent]!.children[la.name] = b
        s.nodes[lb.parent]!.children[lb.name] = a
        if na.isDirectory != nb.isDirectory {
            let delta = na.isDirectory ? 1 : -1
            s.nodes[la.parent]!.subdirectories -= delta
            s.nodes[lb.parent]!.subdirectories += delta
        }
        s.nodes[a]!.rename(la, to: lb)
        s.nodes[b]!.rename(lb, to: la)
        s.nodes[a]!.touch(modified: false, at: now)
        s.nodes[b]!.touch(modified: false, at: now)
        for p in Set([la.parent, lb.parent]) {
            s.nodes[p]!.touch(at: now)
            s.nodes[p]!.record.dirty = true
            s.dirtyDirectories.insert(p)
        }
        var records = Set([la.parent, lb.parent]).map { s.nodes[$0]!.record }
        records += [a, b].compactMap { s.nodes[$0]!.content == nil ? s.nodes[$0]!.record : nil }
        try persist("rename") { tx in
            try tx.setEntry(parent: la.parent, name: la.name, child: b)
            try tx.setEntry(parent: lb.parent, name: lb.name, child: a)
            for r in records { try tx.updateDocument(r) }
        }
    }

    /// `source` takes over `target`'s document id and history; the caller commits `source` next so the
    /// target document gets exactly one new revision. `target` leaves the tree. Returns the catalog work, for
    /// the caller's transaction.
    private func adoptIdentityLocked(of target: UInt64, into source: UInt64, in s: inout State) -> (StoreTransaction)
        throws -> Void
    {
        var t = s.nodes[target]!
        var src = s.nodes[source]!
        let oldSource = src.record
        var adopted = src.record
        adopted.id = t.record.id
        adopted.head = t.record.head
        let targetParent = t.parent
        let targetName = t.name
        let work: (StoreTransaction) throws -> Void = { tx in
            try tx.removeEntry(parent: targetParent, name: targetName)
            if oldSource.head != nil {
                _ = try tx.appendRevision(
                    document: oldSource.id, kind: .tombstone, metadata: oldSource.metadata,
                    parents: oldSource.head.map { [$0] } ?? [])
            }
            // With the target's chain: the temporary file was written under its directory's.
            try tx.handOverDocument(of: target, to: source, renamingTo: nil)
            try tx.updateDocument(adopted)
        }
        s.nodes[targetParent]!.children.removeValue(forKey: targetName)
        t.linked = false
        t.touch(modified: false)
        s.nodes[target] = t
        src.record = adopted
        src.metadataChanged = true
        s.nodes[source] = src
        Self.dropIfUnreferenced(target, in: &s)
        return work
    }
}
