import Dispatch
import Glibc
import HypernetFailpoint
import HypernetModel
import HypernetStore

extension VirtualFileSystem {
    // MARK: Open files

    /// The node's `FileContent`, created (manifest loaded) on first use; pair with `detachContent`.
    func attachContent(_ inode: UInt64, isNew: Bool = false) throws(VFSError) -> FileContent {
        try state.withLock { (s) throws(VFSError) in
            var node = try Self.node(inode, in: s)
            guard node.kind == .file else {
                if node.isStale { throw VFSError(ESTALE) }
                throw node.isDirectory ? VFSError(EISDIR) : VFSError(EINVAL)
            }
            if let content = node.content {
                node.openCount += 1
                s.nodes[inode] = node
                return content
            }
            let root = node.record.metadata.content
            var tree: ManifestTree
            if let cached = s.recentTrees.take(inode), cached.root == root {
                tree = cached
            } else {
                do { tree = try store.loadManifest(root) } catch { throw fail(error, "load content", inode: inode) }
            }
            let content = try FileContent(
                store: store, document: node.record.id, tree: tree, isNew: isNew, logger: logger)
            node.content = content
            node.openCount = 1
            s.nodes[inode] = node
            s.openFiles.insert(inode)
            return content
        }
    }

    /// Drops one use of the node's content; the last one commits anything left and frees the staging file.
    func detachContent(_ inode: UInt64) {
        let content: FileContent? = state.withLock { s in
            s.nodes[inode].flatMap { $0.openCount == 1 ? $0.content : nil }
        }
        var tree: ManifestTree? = nil
        var failure: VFSError? = nil
        var committedSize: UInt64? = nil
        if let content {
            do throws(VFSError) { try commit(inode) } catch {
                failure = error
                // The staged bytes go with the content: the file is again what its last commit made it, as it
                // will be after a restart, and `stat` agrees with `read`.
                let root = state.withLock { s in s.nodes[inode]?.record.metadata.content }
                committedSize = try? store.loadManifest(root).length
            }
            tree = content.state.withLock { $0.modified ? nil : $0.tree }
        }
        state.withLock { s in
            guard var node = s.nodes[inode] else { return }
            if let committedSize { node.record.metadata.size = committedSize }
            node.openCount -= 1
            if node.openCount == 0 {
                node.content = nil
                node.stagedHoleBytes = nil
                s.openFiles.remove(inode)
                if let tree, node.linked { s.recentTrees.put(inode, tree) }
                if node.unnamed { forgetUnnamedLocked(&node) }
            }
            s.nodes[inode] = node
            Self.dropIfUnreferenced(inode, in: &s)
        }
        guard let failure else { return }
        // The kernel caches the size the writes gave the file.
        if committedSize != nil { kernelCache.withLock { $0 }?.invalidate(inode: inode) }
        // The staging went with the last handle: the writes since the last revision are lost (close or fsync
        // returned the error), and the log says so.
        logger.error("commit at release failed", metadata: ["inode": "\(inode)", "errno": "\(failure.errno)"])
    }

    /// Opens an existing file; `flags` are the open(2) flags (O_TRUNC arrives here). Returns a handle.
    public func open(inode: UInt64, flags: Int32, caller: Caller) throws(VFSError) -> UInt64 {
        if VirtualTree.contains(inode) { return try virtualOpen(inode, flags: flags, caller: caller) }
        let content = try attachContent(inode)
        // Linux truncates on O_TRUNC even with O_RDONLY (the kernel has checked write permission).
        if flags & O_TRUNC != 0 {
            truncate(inode, content, to: 0, written: false)
        }
        return newFileHandle(inode, writes: flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0)
    }

    /// A handle on `inode`'s attached content.
    func newFileHandle(_ inode: UInt64, writes: Bool) -> UInt64 {
        state.withLock { s in
            let h = s.nextHandle
            s.nextHandle += 1
            s.handles[h] = .file(inode: inode, writes: writes)
            return h
        }
    }

    /// Cuts the content to `size`: staged bytes past it dropped, committed bytes past it no longer part
    /// of the file. `written`: counts as written data for the next flush (a truncate, not open's O_TRUNC).
    func truncate(_ inode: UInt64, _ content: FileContent, to size: UInt64, written: Bool) {
        content.settled { c in
            c.dirty.clip(to: size)
            c.baseValid = min(c.baseValid, size)
            c.size = size
            c.modified = true
            if written { c.writtenSinceRevision = true }
            let holes = c.holeBytes
            state.withLock { s in
                s.nodes[inode]?.record.metadata.size = size
                s.nodes[inode]?.stagedHoleBytes = holes
                s.nodes[inode]?.touch()
            }
        }
    }

    private func isVirtual(handle: UInt64) -> Bool {
        state.withLock { s in
            switch s.handles[handle] {
            case .virtual?, .events?: true
            default: false
            }
        }
    }

    private func fileHandle(_ handle: UInt64) throws(VFSError) -> (inode: UInt64, content: FileContent, writes: Bool) {
        try state.withLock { (s) throws(VFSError) in
            guard case .file(let inode, let writes)? = s.handles[handle], let content = s.nodes[inode]?.content else {
                throw VFSError(EBADF)
            }
            return (inode, content, writes)
        }
    }

    public func read(handle: UInt64, offset: UInt64, size: Int) throws(VFSError) -> [UInt8] {
        switch state.withLock({ s in s.handles[handle] }) {
        case .virtual(let content)?: return try virtualRead(content, offset: offset, size: size)
        case .foreignFile(let file)?: return foreignRead(file, offset: offset, size: size)
        default: break
        }
        let (inode, content, _) = try fileHandle(handle)
        do { return try content.read(offset: offset, count: size) } catch {
            logger.error("read failed", metadata: ["inode": "\(inode)", "errno": "\(error.errno)"])
            throw error
        }
    }

    /// `lseek` with SEEK_DATA (`data`) or SEEK_HOLE from `offset`: the offset found, ENXIO at or past the end.
    /// Files shown from elsewhere (`/.hypernet/`, other trees) are data from start to end.
    public func seek(inode: UInt64, handle: UInt64, offset: UInt64, data: Bool) throws(VFSError) -> UInt64 {
        if case .file(let file, _)? = state.withLock({ s in s.handles[handle] }),
            let content = state.withLock({ s in s.nodes[file]?.content })
        {
            return try content.seek(offset, data: data)
        }
        let size = try getattr(inode: inode).size
        guard offset < size else { throw VFSError(ENXIO) }
        return data ? offset : size
    }

    /// Returns the number of bytes written (always all of them on success).
    public func write(handle: UInt64, offset: UInt64, data: UnsafeRawBufferPointer) throws(VFSError) -> Int {
        if case .foreignFile(let file)? = state.withLock({ s in s.handles[handle] }) {
            return try foreignWrite(file, offset: offset, data: data)
        }
        let (inode, content, _) = try fileHandle(handle)
        guard contentLength(adding: offset, UInt64(data.count)) != nil else { throw VFSError(EFBIG) }
        if Failpoint.hit("vfs.stage") { throw VFSError(EIO) }
        // A write waits for a background seal if it would change bytes being sealed, or stage a second
        // `streamBytes` before the first is sealed (staging stays bounded).
        while try !content.state.withLock({ (c) throws(VFSError) -> Bool in
            if let end = c.sealing, offset < end || c.size >= end + FileContent.streamBytes { return false }
            var done = 0
            while done < data.count {
                let n = pwrite(
                    content.stagingFD, data.baseAddress! + done, data.count - done, off_t(offset) + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw VFSError(errno == ENOSPC ? ENOSPC : EIO)
                }
                done += n
            }
            let written = offset..<offset + UInt64(data.count)
            c.dirty.insert(written)
            c.size = max(c.size, written.upperBound)
            c.modified = true
            c.writtenSinceRevision = true
            c.bytesSinceRevision += UInt64(data.count)
            if c.sealing != nil {
                c.writtenDuringSeal.insert(written)
                c.bytesDuringSeal += UInt64(data.count)
            } else if c.size >= c.revisionSize + FileContent.streamBytes {
                startSeal(inode, content, &c)
            } else if c.dirty.byteCount >= FileContent.checkpointBytes {
                // Seal what is staged without making a revision: memory stays bounded, the work is
                // spread over the write, and the revision still comes at flush/fsync.
                let (tree, locations) = try content.rebuild(&c)
                try persist("checkpoint", appended: locations) { tx in try tx.recordChunks(locations) }
                content.rebase(&c, tree: tree)
            }
            let size = c.size
            let holes = c.holeBytes
            state.withLock { s in
                s.nodes[inode]?.record.metadata.size = size
                s.nodes[inode]?.stagedHoleBytes = holes
                s.nodes[inode]?.touch()
            }
            return true
        }) {
            content.sealGroup.wait()
        }
        return data.count
    }

    /// `close` of one file descriptor: commits a revision if the file was written. Never waits on the network.
    ///
    /// Only written content is committed here: a shell's `echo hi > f` closes a dup of the new, still empty
    /// file before writing, and that close is not a save. A file only created gets its revision at release.
    public func flush(handle: UInt64) throws(VFSError) {
        if case .foreignFile(let file)? = state.withLock({ s in s.handles[handle] }) {
            _ = try commitForeign(file)
            return
        }
        if isVirtual(handle: handle) { return }
        let (inode, content, writes) = try fileHandle(handle)
        // A descriptor that could not write has nothing to commit: what others wrote is theirs to commit (their
        // close or fsync says if that fails), and a read-only close on a full disk must not fail.
        guard writes else { return }
        let (written, modified) = content.settled { ($0.writtenSinceRevision, $0.modified) }
        if written {
            try commit(inode)
        } else if modified {
            // Truncated by open(O_TRUNC) or just created: made durable now (close accepted it), as the
            // document's pending state; the revision follows with the next written flush or at release.
            try commit(inode, revision: false)
        }
    }

    public func release(handle: UInt64) {
        let released = state.withLock { s in s.handles.removeValue(forKey: handle) }
        switch released {
        case .file(let inode, _)?: detachContent(inode)
        case .events(let reader)?: reader.close()
        case .foreignFile(let file)?: releaseForeign(file)
        default: break
        }
    }

    /// Commits and makes durable everything written before the call, then waits for the quorum; EINTR when
    /// `interruption` fires first.
    public func fsync(handle: UInt64, dataOnly: Bool, interruption: Interruption? = nil) throws(VFSError) {
        if case .foreignFile(let file)? = state.withLock({ s in s.handles[handle] }) {
            return try fsyncForeign(file, interruption: interruption)
        }
        if isVirtual(handle: handle) { return }
        let (inode, _, _) = try fileHandle(handle)
        try commit(inode)
        // A file without a name is not kept across a crash, as on ext4 (`Unnamed.swift`).
        if state.withLock({ s in s.nodes[inode]?.unnamed == true }) { return }
        try makeDurable(inode, interruption: interruption)
    }

    /// Makes `inode`'s committed state durable here, then waits (without polling) until `quorum` nodes in
    /// all hold it and the directories naming it; EIO after the fsync timeout, EINTR when interrupted, the
    /// data kept and queued either way.
    func makeDurable(_ inode: UInt64, interruption: Interruption?) throws(VFSError) {
        let quorum = state.withLock { s in Self.quorum(of: inode, in: s, default: configuration.quorum) }
        // The names leading to the file replicate with it: a replica can serve it by path.
        if quorum > 1 { commitDirectories() }
        do { try store.sync() } catch { throw fail(error, "fsync", inode: inode) }
        guard quorum > 1 else { return }
        let revisions: [RevisionID] = state.withLock { s in
            var out: [RevisionID] = []
            var current = inode
            while let node = s.nodes[current] {
                if let head = node.record.head { out.append(head) }
                if current == Self.rootInode || node.parent == current { break }
                current = node.parent
            }
            return out
        }
        switch store.waitForReplicas(
            revisions, count: quorum - 1, timeout: configuration.fsyncTimeout, interruption: interruption)
        {
        case .reached: return
        case .interrupted: throw VFSError(EINTR)
        case .timedOut: break
        }
        let held = revisions.first.flatMap { try? store.replicaCount($0) }.map { $0 + 1 } ?? 1
        logger.warning(
            "fsync quorum not reached", metadata: ["inode": "\(inode)", "quorum": "\(quorum)", "replicas": "\(held)"])
        throw VFSError(EIO)
    }

    // MARK: Committing

    /// Makes a revision of `inode` if its content or metadata changed since the last one. With
    /// `revision: false` the change is only made durable: the catalog row holds it, marked dirty, and the
    /// revision is made later (at the latest at the next start).
    func commit(_ inode: UInt64, revision: Bool = true) throws(VFSError) {
        let (content, unnamed) = try state.withLock { (s) throws(VFSError) in
            let node = try Self.node(inode, in: s)
            return (node.content, node.unnamed)
        }
        // A file without a name has nothing to commit: what it holds stays staged until `link` names it.
        if unnamed { return }
        guard let content else {
            try state.withLock { (s) throws(VFSError) in try commitMetadataLocked(inode, in: &s) }
            return
        }
        try content.settled { (c) throws(VFSError) in try commitLocked(inode, content, &c, revision: revision) }
    }

    /// Seals what `c` has staged into a revision on another thread while writes go on (a file grew by
    /// `FileContent.streamBytes`): the state as it is now is the revision's content; writes staged meanwhile
    /// stay staged. A failure is logged and changes nothing: the staged bytes go into the next commit.
    func startSeal(_ inode: UInt64, _ content: FileContent, _ c: inout FileContent.State) {
        let snapshot = c
        c.sealing = snapshot.size
        content.sealGroup.enter()
        DispatchQueue.global().async { [self] in
            defer { content.sealGroup.leave() }
            var sealed = snapshot
            let result = Result { () throws(VFSError) in try content.rebuild(&sealed) }
            content.state.withLock { c in
                defer {
                    c.sealing = nil
                    c.writtenDuringSeal.removeAll()
                    c.bytesDuringSeal = 0
                }
                do throws(VFSError) {
                    let (tree, locations) = try result.get()
                    try state.withLock { (s) throws(VFSError) in
                        guard var node = s.nodes[inode], node.linked else {
                            // Unlinked meanwhile: no revision, but reads through open handles need the chunks.
                            try persist("commit", appended: locations) { tx in try tx.recordChunks(locations) }
                            return
                        }
                        let live = node.record.metadata.size
                        node.record.metadata.content = tree.root
                        node.record.metadata.size = tree.length
                        try appendRevisionLocked(&node, locations: locations)
                        node.record.metadata.size = live
                        s.pendingRevisions.remove(inode)
                        s.nodes[inode] = node
                    }
                    content.installSeal(&c, tree: tree, snapshot: snapshot)
                } catch {
                    // Tried again by the next commit (or seal, once the file grew by another `streamBytes`).
                    logger.warning(
                        "sealing a growing file in the background failed",
                        metadata: ["inode": "\(inode)", "errno": "\(error.errno)"])
                    c.revisionSize = c.size
                }
            }
        }
    }

    /// `commit` with the content's lock held (`c` is its state).
    func commitLocked(_ inode: UInt64, _ content: FileContent, _ c: inout FileContent.State, revision: Bool)
        throws(VFSError)
    {
        let changed = state.withLock { s in s.nodes[inode].map { $0.linked && $0.metadataChanged } ?? false }
        guard c.modified || changed else { return }
        let (tree, locations) = try content.rebuild(&c)
        try state.withLock { (s) throws(VFSError) in
            guard var node = s.nodes[inode], node.linked else {
                // Unlinked but still open: no revision (the document ended in a tombstone), yet the
                // sealed chunks must stay findable for reads through the open handle.
                try persist("commit", appended: locations) { tx in try tx.recordChunks(locations) }
                return
            }
            node.record.metadata.content = tree.root
            node.record.metadata.size = c.size
            node.stagedHoleBytes = nil
            if revision {
                try appendRevisionLocked(&node, locations: locations)
                s.pendingRevisions.remove(inode)
            } else {
                node.record.dirty = true
                let record = node.record
                try persist("flush", appended: locations) { tx in
                    try tx.recordChunks(locations)
                    try tx.updateDocument(record)
                }
            }
            s.nodes[inode] = node
        }
        if revision { content.committed(&c, tree: tree) } else { content.rebase(&c, tree: tree) }
    }

    /// Makes a metadata change durable in the catalog row (marked dirty) without a revision yet, also for an
    /// open file: a crash must not undo a chmod that returned. Such a file's live size may be ahead of its
    /// committed content, so its row gets the committed size (read under the content's lock, taken first as
    /// `commit` does), and its own commit, at the latest at release, makes the revision.
    func persistPending(_ inode: UInt64) throws(VFSError) {
        while true {
            let content = state.withLock { s in s.nodes[inode]?.content }
            let done =
                if let content {
                    try content.settled { (c) throws(VFSError) in
                        try persistPendingLocked(inode, content, committedSize: c.tree.length)
                    }
                } else {
                    try persistPendingLocked(inode, nil, committedSize: nil)
                }
            if done { return }
        }
    }

    /// False when the file was opened or closed since `content` was read: the caller reads it again.
    private func persistPendingLocked(_ inode: UInt64, _ content: FileContent?, committedSize: UInt64?)
        throws(VFSError) -> Bool
    {
        try state.withLock { (s) throws(VFSError) -> Bool in
            guard var node = s.nodes[inode], node.linked, node.metadataChanged else { return true }
            if node.isDirectory {
                try commitDirectoryLocked(inode, in: &s)
                return true
            }
            guard node.content === content else { return false }
            node.record.dirty = true
            var record = node.record
            if let committedSize { record.metadata.size = committedSize }
            try persist("setattr") { tx in try tx.updateDocument(record) }
            s.nodes[inode] = node
            if content == nil { s.pendingRevisions.insert(inode) }
            return true
        }
    }

    /// A revision for a metadata-only change (the content stays the committed one).
    func commitMetadataLocked(_ inode: UInt64, in s: inout State) throws(VFSError) {
        guard var node = s.nodes[inode], node.linked else { return }
        if node.isDirectory { return try commitDirectoryLocked(inode, in: &s) }
        guard node.metadataChanged || node.record.dirty || node.record.head == nil else { return }
        try appendRevisionLocked(&node, locations: [])
        s.nodes[inode] = node
        s.pendingRevisions.remove(inode)
    }

    /// A directory revision: its listing (when changed) as encrypted content, and its metadata.
    func commitDirectoryLocked(_ inode: UInt64, in s: inout State) throws(VFSError) {
        guard s.nodes[inode]?.isDirectory == true, s.nodes[inode]?.linked == true else {
            s.dirtyDirectories.remove(inode)
            return
        }
        if !s.merging.isEmpty { try commitMerges(in: &s) }
        let listingChanged =
            s.dirtyDirectories.contains(inode) || s.nodes[inode]!.record.head == nil
            || !s.nodes[inode]!.mergedDirectories.isEmpty
        guard listingChanged || s.nodes[inode]!.metadataChanged else { return }
        // Out of the table while it changes: a copy left there would make `stored` below copy the pages.
        var dir = s.nodes.removeValue(forKey: inode)!
        defer { s.nodes[inode] = dir }
        var locations: [ChunkLocation] = []
        var stored: (references: [ChunkReference], pages: [Int], tree: ManifestTree, epoch: DirectoryEntries.Epoch)?
        let committed = (content: dir.record.metadata.content, size: dir.record.metadata.size)
        if listingChanged {
            let sealing: Sealing
            do { sealing = try store.sealing(for: dir.record.id) } catch { throw fail(error, "directory listing") }
            let epoch = DirectoryEntries.Epoch(rights: sealing.rights, number: sealing.epoch)
            // Only the pages changed since the last revision are encoded and sealed (DirectoryEntries).
            let pages = dir.children.unstoredPages(in: epoch)
            var w = ByteWriter()
            var ranges: [Range<Int>] = []
            for p in pages {
                let start = w.bytes.count
                if p == 0 { DirectoryListing.encodeHeader(count: dir.children.count, into: &w) }
                for (name, child) in dir.children.pages[p].entries {
                    guard let node = s.nodes[child] else {
                        logger.error("directory listing names a lost inode", metadata: ["inode": "\(child)"])
                        throw VFSError(EIO)
                    }
                    DirectoryListing.Entry(name: name, document: node.record.id, kind: node.kind).encode(into: &w)
                }
                ranges.append(start..<w.bytes.count)
            }
            do {
                let key = sealing.key
                let (references, written) = try w.bytes.withBytes { (b) throws(StoreError) in
                    try store.writeChunks(b, ranges: ranges, key: key)
                }
                locations = written
                var chunks = dir.children.pages.map(\.stored)
                for (p, reference) in zip(pages, references) { chunks[p] = reference }
                let (tree, more) = try store.writeManifest(
                    chunks: chunks.map { $0! }, previous: dir.children.storedTree, unchangedPrefix: pages.first ?? 0,
                    key: key)
                locations += more
                dir.record.metadata.content = tree.root
                dir.record.metadata.size = tree.length
                stored = (references, pages, tree, epoch)
            } catch {
                store.discard(locations)
                throw fail(error, "directory listing", inode: inode)
            }
        }
        do { try appendRevisionLocked(&dir, locations: locations) } catch {
            // Its chunks were given back: a record naming them, written by the next change of the directory's row
            // (a rename in it), would name content the catalog does not hold.
            (dir.record.metadata.content, dir.record.metadata.size) = committed
            throw error
        }
        // Only now, with the revision in the catalog, may the next revision reuse these chunks.
        if let stored { dir.children.stored(stored.references, for: stored.pages, tree: stored.tree, in: stored.epoch) }
        if !dir.mergedDirectories.isEmpty {
            try endMerged(dir.mergedDirectories, in: &s)
            dir.mergedDirectories = [:]
            // The parent's listing still names the ended directories; its next revision drops them.
            s.dirtyDirectories.insert(dir.parent)
        }
        s.dirtyDirectories.remove(inode)
    }

    /// Writes every merge of same-named directories the view shows, deepest survivor first, before any other
    /// directory revision: a listing that no longer names a loser (its parent's, or its parent's before a move)
    /// must follow the survivor's revision listing the loser's entries, or they would show nowhere.
    private func commitMerges(in s: inout State) throws(VFSError) {
        var depth: [UInt64: Int] = [:]
        for survivor in s.merging {
            var (current, d) = (survivor, 0)
            while current != Self.rootInode, let node = s.nodes[current], node.parent != current {
                (current, d) = (node.parent, d + 1)
            }
            depth[survivor] = d
        }
        let order = s.merging.sorted { (depth[$0]!, $0) > (depth[$1]!, $1) }
        s.merging = []
        for survivor in order { try commitDirectoryLocked(survivor, in: &s) }
    }

    func appendRevisionLocked(_ node: inout Node, locations: [ChunkLocation], parents: [RevisionID]? = nil)
        throws(VFSError)
    {
        do { try Self.appendRevision(&node, locations: locations, parents: parents, store: store) } catch {
            throw fail(error, "commit", inode: node.inode)
        }
    }

    /// Signs and stores the next revision of `node`'s document from its current record, over `parents` (a
    /// merge) or else the heads it builds on.
    static func appendRevision(
        _ node: inout Node, locations: [ChunkLocation], parents: [RevisionID]? = nil, store: Store
    )
        throws(StoreError)
    {
        var record = node.record
        // Its names as shown here, which a received revision may have stated otherwise (design.md, "Hard links").
        if !node.isDirectory, node.linked { record.metadata.links = UInt32(node.names.count) }
        // A file's revision builds on the head it shows (other heads stay conflicts); a directory's on the
        // heads whose merge it shows (after a restart: its head, or what a tombstone head built on).
        let building: [RevisionID]
        if let parents {
            building = parents
        } else if node.isDirectory, !node.mergedHeads.isEmpty {
            building = node.mergedHeads.sorted()
        } else if node.isDirectory {
            building = try buildingOn(record.head.map { [$0] } ?? [], store: store).sorted()
        } else {
            building = record.head.map { [$0] } ?? []
        }
        var locations = locations
        if record.metadata.xattrList == nil, record.metadata.xattrs.count > 0 {
            // Its manifest is stored as deltas of the list of the head it follows (none readable: stored whole).
            let previous = record.head.flatMap { try? store.revision($0, readingXattrs: false).metadata.xattrList }
            locations += try store.writeXattrList(
                &record.metadata, previous: previous, key: store.sealing(for: record.id).key)
        }
        // A file's blind token index, so nodes without its key can find the blocks holding a word.
        var blindIndex: BlindIndexWrite?
        if record.kind == .file {
            blindIndex = try store.writeBlindIndex(
                record.metadata.content, sealing: store.sealing(for: record.id), head: record.head)
        }
        locations += blindIndex?.locations ?? []
        let head = try store.transaction(appended: locations) { tx in
            try tx.recordChunks(locations)
            let head = try tx.appendRevision(
                document: record.id, kind: record.kind, metadata: record.metadata, parents: building,
                blindIndex: blindIndex)
            record.head = head
            record.dirty = false
            try tx.updateDocument(record)
            return head
        }
        // The list as stored, so that the next change cuts only around itself (`XattrList.stored`).
        node.record.metadata.xattrs.stored = record.metadata.xattrs.stored
        node.record.metadata.xattrList = record.metadata.xattrList
        node.record.head = head
        node.record.dirty = false
        node.metadataChanged = false
        node.mergedHeads = [head]
    }

    /// The timer's pass: files written while held open; once a second also pending metadata changes and
    /// directories whose listing changed.
    func commitDue() {
        let open = state.withLock { s in s.openFiles.sorted() }
        var committed = false
        var failure: (UInt64, VFSError)? = nil
        for inode in open {
            guard let content = state.withLock({ s in s.nodes[inode]?.content }) else { continue }
            let due = content.state.withLock { c in
                let age = c.lastCommit.duration(to: .now)
                // A log's few new bytes go out soon; a bulk write (a copy, a rewrite) once a second, so a long
                // write is not cut into many revisions (each ends a chunk the next one must rewrite).
                let small = c.writtenSinceRevision && c.bytesSinceRevision <= Self.smallChange
                return c.modified && (age >= Self.commitInterval || (age >= Self.openFileCommitInterval && small))
            }
            if due {
                committed = true
                do throws(VFSError) { try commit(inode) } catch { failure = failure ?? (inode, error) }
            }
        }
        if committed { passEnded("periodic commit", failure: failure) }
        guard timer.tick() else { return }
        commitPending()
        commitDirectories()
        store.checkpointIfNeeded()
    }

    /// Revisions for files whose metadata changed (chmod, chown, utimens) since their last one.
    func commitPending() {
        state.withLock { s in commitPendingLocked(&s) }
    }

    func commitPendingLocked(_ s: inout State) {
        guard !s.pendingRevisions.isEmpty else { return }
        var failure: (UInt64, VFSError)? = nil
        for inode in s.pendingRevisions.sorted() {
            do throws(VFSError) { try commitMetadataLocked(inode, in: &s) } catch {
                failure = failure ?? (inode, error)
            }
            s.pendingRevisions.remove(inode)
        }
        passEnded("pending revision", failure: failure)
    }

    /// Writes a revision for every directory whose entries changed.
    func commitDirectories() {
        state.withLock { s in
            guard !s.dirtyDirectories.isEmpty else { return }
            var failure: (UInt64, VFSError)? = nil
            for inode in s.dirtyDirectories.sorted() {
                do throws(VFSError) { try commitDirectoryLocked(inode, in: &s) } catch {
                    failure = failure ?? (inode, error)
                }
            }
            passEnded("directory revision", failure: failure)
        }
    }

    /// Logs a periodic pass (retried each second, or at each fsync) when it starts failing, and when it works
    /// again, not at each failed retry: on a full disk that would be a line every second until it is freed.
    func passEnded(_ pass: String, failure: (inode: UInt64, error: VFSError)?) {
        let changed = failingPasses.withLock { f in failure == nil ? f.remove(pass) != nil : f.insert(pass).inserted }
        guard changed else { return }
        if let failure {
            logger.error(
                "\(pass) failed (retried, logged again only once it has worked)",
                metadata: ["inode": "\(failure.inode)", "errno": "\(failure.error.errno)"])
        } else {
            logger.notice("\(pass) works again")
        }
    }

    /// Commits every written file and every changed directory and stops the timer; call once, after the
    /// kernel is gone (unmount).
    public func shutdown() {
        timer.source.cancel()
        let open = state.withLock { s in s.openFiles.sorted() }
        for inode in open {
            do { try commit(inode) } catch {
                logger.error("commit at shutdown failed", metadata: ["inode": "\(inode)"])
            }
        }
        commitPending()
        commitDirectories()
        do { try store.sync() } catch { logger.error("store sync at shutdown failed: \(error)") }
        logger.info("filesystem stopped")
    }
}
