import Glibc
import HypernetCrypto
import HypernetModel
import HypernetStore
import Synchronization

/// A file of another identity's tree open for writing: its bytes and metadata, held in memory from open
/// until the last handle closes; each flush or fsync that follows a change makes them a revision by this
/// identity, under the chain that governs the document (docs/xattrs.md, "Another identity's tree").
final class ForeignFile: Sendable {
    struct State {
        /// The document and its chain: after a rename over another file, the target's (the kernel shows this
        /// file under the target's name from then on).
        var document: DocumentID
        var rights: DocumentID
        var bytes: [UInt8]
        var metadata: RevisionMetadata
        /// Changed since the last revision.
        var modified: Bool
        var handles = 1
    }

    let inode: UInt64
    let tree: SigningPublicKey
    let state: Mutex<State>

    init(inode: UInt64, tree: SigningPublicKey, state: State) {
        self.inode = inode
        self.tree = tree
        self.state = Mutex(state)
    }
}

extension VirtualFileSystem {
    // MARK: Rights

    /// The document behind a foreign inode, the chain that governs it, and that chain's current block.
    private func governance(_ inode: UInt64) throws(VFSError) -> (
        tree: SigningPublicKey, document: DocumentID, rights: DocumentID, block: PermissionBlock
    ) {
        guard let (target, _) = foreign.target(of: inode), let document = target.document else {
            throw VFSError(EACCES)
        }
        let rights: DocumentID?
        let block: PermissionBlock?
        do {
            rights = try store.governingChain(of: document)
            block = try rights.flatMap { try store.chain(of: $0, tree: target.tree).current?.block }
        } catch {
            throw fail(error, "rights of a shared document")
        }
        guard let rights, let block else { throw VFSError(EACCES) }
        return (target.tree, document, rights, block)
    }

    /// Like `governance`, failing with EACCES unless this identity holds `needs` there.
    private func requireRight(_ needs: Roles, on inode: UInt64) throws(VFSError) -> (
        tree: SigningPublicKey, document: DocumentID, rights: DocumentID
    ) {
        let g = try governance(inode)
        guard g.block.roles(of: store.keyring.identity.publicKey).contains(needs) else { throw VFSError(EACCES) }
        return (g.tree, g.document, g.rights)
    }

    // MARK: Files

    func openForeignForWriting(_ inode: UInt64, flags: Int32) throws(VFSError) -> UInt64 {
        let (tree, document, rights) = try requireRight(.write, on: inode)
        let file: ForeignFile
        if let open = foreignFiles.withLock({ files in files[inode] }) {
            open.state.withLock { $0.handles += 1 }
            file = open
        } else {
            let w = try foreignWinner(document)
            guard w.revision.kind == .file else { throw VFSError(EISDIR) }
            let bytes: [UInt8]
            do { bytes = flags & O_TRUNC != 0 ? [] : try store.readContent(w.metadata.content) } catch {
                throw fail(error, "read shared file")
            }
            file = ForeignFile(
                inode: inode, tree: tree,
                state: .init(document: document, rights: rights, bytes: bytes, metadata: w.metadata, modified: false))
            foreignFiles.withLock { $0[inode] = file }
        }
        if flags & O_TRUNC != 0 {
            file.state.withLock { f in
                f.bytes = []
                f.modified = true
            }
        }
        return addHandle(.foreignFile(file))
    }

    func foreignRead(_ file: ForeignFile, offset: UInt64, size: Int) -> [UInt8] {
        file.state.withLock { f in
            guard offset < UInt64(f.bytes.count) else { return [] }
            return Array(f.bytes[Int(offset)..<min(f.bytes.count, Int(offset) + size)])
        }
    }

    func foreignWrite(_ file: ForeignFile, offset: UInt64, data: UnsafeRawBufferPointer) throws(VFSError) -> Int {
        guard offset + UInt64(data.count) <= UInt64(ForeignTree.maximumFileSize) else { throw VFSError(EFBIG) }
        file.state.withLock { f in
            let end = Int(offset) + data.count
            if f.bytes.count < end { f.bytes += [UInt8](repeating: 0, count: end - f.bytes.count) }
            f.bytes.withUnsafeMutableBytes { b in
                UnsafeMutableRawBufferPointer(rebasing: b[Int(offset)..<end]).copyMemory(from: data)
            }
            f.modified = true
        }
        return data.count
    }

    /// A revision of the file's content and metadata if they changed since the last one.
    @discardableResult
    func commitForeign(_ file: ForeignFile) throws(VFSError) -> RevisionID? {
        try file.state.withLock { (f) throws(VFSError) -> RevisionID? in
            guard f.modified else { return nil }
            let w = try foreignWinner(f.document)
            var metadata = f.metadata
            metadata.touch()
            let id = try writeForeign(
                tree: file.tree, document: f.document, kind: .file, metadata: &metadata, content: f.bytes,
                parents: [w.id], rights: f.rights)
            f.metadata = metadata
            f.modified = false
            return id
        }
    }

    func fsyncForeign(_ file: ForeignFile, interruption: Interruption?) throws(VFSError) {
        let head = try commitForeign(file) ?? (try? foreignWinner(file.state.withLock { $0.document }))?.id
        do { try store.sync() } catch { throw fail(error, "fsync of a shared file") }
        guard let head, configuration.quorum > 1 else { return }
        switch store.waitForReplicas(
            [head], count: configuration.quorum - 1, timeout: configuration.fsyncTimeout, interruption: interruption)
        {
        case .reached: return
        case .interrupted: throw VFSError(EINTR)
        case .timedOut: throw VFSError(EIO)
        }
    }

    func releaseForeign(_ file: ForeignFile) {
        do { try commitForeign(file) } catch {
            logger.error(
                "commit of a shared file at release failed: the writes since the last revision are lost",
                metadata: ["inode": "\(file.inode)", "errno": "\(error.errno)"])
        }
        let last = file.state.withLock { f in
            f.handles -= 1
            return f.handles == 0
        }
        if last { foreignFiles.withLock { _ = $0.removeValue(forKey: file.inode) } }
    }

    /// The size and metadata of a foreign file open for writing, as its writer sees them.
    func openForeignMetadata(_ inode: UInt64) -> (size: UInt64, metadata: RevisionMetadata)? {
        foreignFiles.withLock { $0[inode] }.map { file in file.state.withLock { (UInt64($0.bytes.count), $0.metadata) }
        }
    }

    /// chmod, chown, utimens and truncate of a foreign file or directory: a revision with the change (or, for
    /// a file open for writing, a change of what its next revision holds).
    func foreignSetattr(_ inode: UInt64, changes: AttributeChanges, caller: Caller) throws(VFSError) -> Attributes {
        let (tree, document, rights) = try requireRight(.write, on: inode)
        func apply(_ m: inout RevisionMetadata) {
            if let mode = changes.mode { m.mode = (m.mode & S_IFMT) | (mode & 0o7777) }
            if let uid = changes.uid { m.uid = uid }
            if let gid = changes.gid { m.gid = gid }
            let now = Timestamp.now()
            switch changes.mtime {
            case .now?: (m.mtimeSeconds, m.mtimeNanoseconds) = (now.seconds, UInt32(now.nanoseconds))
            case .set(let t)?: (m.mtimeSeconds, m.mtimeNanoseconds) = (t.seconds, UInt32(t.nanoseconds))
            case nil: break
            }
            m.ctimeSeconds = now.seconds
            m.ctimeNanoseconds = UInt32(now.nanoseconds)
        }
        if let file = foreignFiles.withLock({ $0[inode] }) {
            file.state.withLock { f in
                apply(&f.metadata)
                if let size = changes.size {
                    f.bytes =
                        Array(f.bytes.prefix(Int(size)))
                        + [UInt8](repeating: 0, count: max(0, Int(size) - f.bytes.count))
                }
                f.modified = true
            }
            try commitForeign(file)
        } else {
            let w = try foreignWinner(document)
            var metadata = w.metadata
            apply(&metadata)
            var content: [UInt8]? = nil
            if let size = changes.size {
                guard w.revision.kind == .file else { throw VFSError(EISDIR) }
                guard size <= UInt64(ForeignTree.maximumFileSize) else { throw VFSError(EFBIG) }
                do { content = try store.readContent(w.metadata.content) } catch {
                    throw fail(error, "read shared file")
                }
                content =
                    Array(content!.prefix(Int(size))) + [UInt8](repeating: 0, count: max(0, Int(size) - content!.count))
            }
            _ = try writeForeign(
                tree: tree, document: document, kind: w.revision.kind, metadata: &metadata, content: content,
                parents: w.heads, rights: rights)
        }
        return try foreignAttributes(inode)
    }

    // MARK: Names

    /// A new file (open for writing), special file or directory in a foreign directory: its first revision and the
    /// directory's next, both by this identity. The new document is written under the directory's chain.
    func foreignCreate(
        parent: UInt64, name: String, kind: RevisionKind, mode: UInt32, rdev: UInt64 = 0, caller: Caller
    ) throws(VFSError) -> (attributes: Attributes, handle: UInt64?) {
        try Self.validate(name: name)
        let (tree, directory, rights) = try requireRight(.write, on: parent)
        let document = DocumentID.random()
        var metadata = RevisionMetadata.new(mode: mode, uid: caller.uid, gid: caller.gid)
        metadata.rdev = rdev
        // A special file has no content (store-format.md, "Revision").
        let content: [UInt8]? = kind == .directory ? DirectoryListing(entries: []).encoded() : kind == .file ? [] : nil
        _ = try writeForeign(
            tree: tree, document: document, kind: kind, metadata: &metadata, content: content, parents: [],
            rights: rights)
        try changeForeignDirectory(tree: tree, directory, rights: rights) { (entries) throws(VFSError) in
            guard !entries.contains(where: { $0.name == name }) else { throw VFSError(EEXIST) }
            entries.append(.init(name: name, document: document, kind: kind))
        }
        let inode = foreign.inode(for: .init(tree: tree, document: document), kind: kind)
        guard kind == .file else { return (try foreignAttributes(inode), nil) }
        let file = ForeignFile(
            inode: inode, tree: tree,
            state: .init(document: document, rights: rights, bytes: [], metadata: metadata, modified: false))
        foreignFiles.withLock { $0[inode] = file }
        return (try foreignAttributes(inode), addHandle(.foreignFile(file)))
    }

    /// unlink and rmdir: a tombstone of the document (needs `delete` on it) and the directory's next revision
    /// without it (needs `write` on the directory).
    func foreignRemove(parent: UInt64, name: String, directory isDirectory: Bool) throws(VFSError) {
        guard let child = try foreignChildren(parent).first(where: { $0.name == name }) else { throw VFSError(ENOENT) }
        let (tree, directory, directoryRights) = try requireRight(.write, on: parent)
        let (_, document, rights) = try requireRight(.delete, on: child.inode)
        let w = try foreignWinner(document)
        if isDirectory {
            guard w.revision.kind == .directory else { throw VFSError(ENOTDIR) }
            guard try foreignChildren(child.inode).isEmpty else { throw VFSError(ENOTEMPTY) }
        } else if w.revision.kind == .directory {
            throw VFSError(EISDIR)
        }
        var metadata = w.metadata
        _ = try writeForeign(
            tree: tree, document: document, kind: .tombstone, metadata: &metadata, content: nil, parents: w.heads,
            rights: rights)
        try changeForeignDirectory(tree: tree, directory, rights: directoryRights) { (entries) throws(VFSError) in
            entries.removeAll { $0.name == name }
        }
    }

    /// A rename inside one foreign tree. Over an existing file (an editor's save): the target document gets a
    /// revision with the source's content and metadata, keeping its id and history, and the source's document
    /// is left unlisted (a tombstone would need `delete`, which a writer may not hold).
    func foreignRename(parent: UInt64, name: String, newParent: UInt64, newName: String, flags: RenameFlags)
        throws(VFSError)
    {
        guard ForeignTree.contains(parent), ForeignTree.contains(newParent) else { throw VFSError(EXDEV) }
        guard !flags.contains(.exchange) else { throw VFSError(EINVAL) }
        try Self.validate(name: newName)
        guard let source = try foreignChildren(parent).first(where: { $0.name == name }) else { throw VFSError(ENOENT) }
        let (tree, from, fromRights) = try requireRight(.write, on: parent)
        let (toTree, to, toRights) = try requireRight(.write, on: newParent)
        guard tree == toTree else { throw VFSError(EXDEV) }
        let (_, sourceDocument, _) = try requireRight(.write, on: source.inode)
        let target = try foreignChildren(newParent).first(where: { $0.name == newName })
        if let target {
            guard !flags.contains(.noReplace) else { throw VFSError(EEXIST) }
            if target.inode == source.inode { return }
            let (_, targetDocument, targetRights) = try requireRight(.write, on: target.inode)
            let s = try foreignWinner(sourceDocument)
            let t = try foreignWinner(targetDocument)
            guard s.revision.kind == .file, t.revision.kind == .file else { throw VFSError(EISDIR) }
            let open = foreignFiles.withLock { $0[source.inode] }
            if let open { try commitForeign(open) }
            var metadata = try foreignWinner(sourceDocument).metadata
            let content: [UInt8]
            do { content = try store.readContent(metadata.content) } catch { throw fail(error, "read shared file") }
            _ = try writeForeign(
                tree: tree, document: targetDocument, kind: .file, metadata: &metadata, content: content,
                parents: t.heads, rights: targetRights)
            // The kernel now shows the source's inode under the target's name: a chmod or write through it (sed
            // -i's handle may be released only now) is a change of the target document.
            foreign.rebind(source.inode, to: .init(tree: tree, document: targetDocument))
            open?.state.withLock { f in
                (f.document, f.rights, f.metadata) = (targetDocument, targetRights, metadata)
            }
            try changeForeignDirectory(tree: tree, from, rights: fromRights) { (entries) throws(VFSError) in
                entries.removeAll { $0.name == name }
            }
            return
        }
        let entry = DirectoryListing.Entry(
            name: newName, document: sourceDocument, kind: foreign.target(of: source.inode)?.kind ?? .file)
        try changeForeignDirectory(tree: tree, from, rights: fromRights) { (entries) throws(VFSError) in
            entries.removeAll { $0.name == name }
            if from == to { entries.append(entry) }
        }
        if from != to {
            try changeForeignDirectory(tree: tree, to, rights: toRights) { (entries) throws(VFSError) in
                entries.append(entry)
            }
        }
    }

    // MARK: Revisions

    /// The next revision of foreign directory `document`, over all its heads (a merge), with `change` made
    /// to its listing.
    private func changeForeignDirectory(
        tree: SigningPublicKey, _ document: DocumentID, rights: DocumentID,
        _ change: (inout [DirectoryListing.Entry]) throws(VFSError) -> Void
    ) throws(VFSError) {
        let w = try foreignWinner(document)
        guard w.revision.kind == .directory else { throw VFSError(ENOTDIR) }
        var entries: [DirectoryListing.Entry]
        do { entries = try DirectoryListing(decoding: store.readContent(w.metadata.content)).entries } catch {
            throw fail(error, "read shared directory")
        }
        try change(&entries)
        var metadata = w.metadata
        metadata.touch()
        _ = try writeForeign(
            tree: tree, document: document, kind: .directory, metadata: &metadata,
            content: DirectoryListing(entries: entries).encoded(), parents: w.heads, rights: rights)
    }

    /// Seals `content` (when given) under the chain's current key and stores the revision with `metadata`
    /// pointing at it.
    private func writeForeign(
        tree: SigningPublicKey, document: DocumentID, kind: RevisionKind, metadata: inout RevisionMetadata,
        content: [UInt8]?,
        parents: [RevisionID], rights: DocumentID
    ) throws(VFSError) -> RevisionID {
        do {
            var locations: [ChunkLocation] = []
            if let content {
                let (root, written) = try store.writeContent(
                    content, key: store.sealing(tree: tree, rights: rights).key)
                metadata.content = root
                metadata.size = UInt64(content.count)
                locations = written
            }
            return try store.appendForeignRevision(
                tree: tree, document: document, kind: kind, metadata: metadata, parents: parents, rights: rights,
                locations: locations)
        } catch {
            throw fail(error, "write in a shared tree")
        }
    }
}

extension RevisionMetadata {
    /// Content changed now: mtime and ctime.
    fileprivate mutating func touch(at now: Timestamp = .now()) {
        (mtimeSeconds, mtimeNanoseconds) = (now.seconds, UInt32(now.nanoseconds))
        (ctimeSeconds, ctimeNanoseconds) = (now.seconds, UInt32(now.nanoseconds))
    }
}
