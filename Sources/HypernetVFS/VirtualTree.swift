import Glibc
import HypernetModel
import HypernetStore
import Synchronization

/// `/.hypernet/`: a read-only directory at the mount root that is computed, never stored nor replicated
/// (docs/design.md, "The virtual tree"):
/// - `status`: the filesystem's `hypernet status` lines (and the daemon's, through `setStatusProvider`);
/// - `events`: the event stream (`Events.swift`), read with direct I/O;
/// - `search/QUERY/`, `recent/`, `by-owner/NAME/`, `by-tag/NAME/`, `conflicts/`: folders that are queries
///   (`SearchViews.swift`);
/// - `revisions/REV`: any revision of this tree by id or unique prefix (at least 4 hex digits), looked up, never
///   listed: a file revision is a read-only file with that content (a tombstone: the content the file had when
///   it was deleted), a symlink revision a symlink, a directory revision a text file, one `KIND DOCUMENT NAME`
///   line per entry. It has the revision's owner, group and permission bits (the kernel checks them), and the
///   VFS checks the live document's as well: a caller finds only revisions of documents it could `stat`, and
///   opens only those it could read (docs/security.md, "Local users").
/// Changes inside it fail with EROFS. Its inode numbers have the top bit set, so they never meet a catalog row
/// (those count up from 1); a revision's is the top two bits plus its log sequence number.
enum VirtualTree {
    static let name = ".hypernet"
    static let flag: UInt64 = 1 << 63
    static let directory = flag | 1
    static let status = flag | 2
    static let events = flag | 3
    static let revisions = flag | 4
    static let search = flag | 5
    static let recent = flag | 6
    static let byOwner = flag | 7
    static let byTag = flag | 8
    static let conflicts = flag | 9
    static let revisionFlag: UInt64 = 1 << 62

    static func contains(_ inode: UInt64) -> Bool { inode & flag != 0 }
    static func revision(seq: Int64) -> UInt64 { flag | revisionFlag | UInt64(seq) }
    static func seq(of inode: UInt64) -> Int64? {
        inode & revisionFlag != 0 ? Int64(inode & ~(flag | revisionFlag)) : nil
    }

    static let children: [UInt64: [(name: String, inode: UInt64)]] = [
        directory: [
            ("by-owner", byOwner), ("by-tag", byTag), ("conflicts", conflicts), ("events", events),
            ("recent", recent), ("revisions", revisions), ("search", search), ("status", status),
        ],
        revisions: [],
        search: [],
        byOwner: [],
        byTag: [],
        recent: [],
        conflicts: [],
    ]

    /// What an open virtual file reads: bytes made at open, or a stored content read chunk by chunk.
    enum Content {
        case bytes([UInt8])
        /// Chunks in order, with the offset at which each starts (one extra element holding the end), of a revision
        /// of `document`, and the readahead of the handle.
        case chunks([ChunkReference], starts: [UInt64], document: DocumentID, readahead: Readahead)
    }
}

extension VirtualFileSystem {
    /// Extra `/.hypernet/status` lines (the node, its peers), after the filesystem's own.
    public func setStatusProvider(_ provider: @escaping @Sendable () -> [String]) {
        statusProvider.withLock { $0 = provider }
    }

    /// Whether the kernel must read `inode` without caching: files whose size is not known in advance.
    public func needsDirectIO(inode: UInt64) -> Bool {
        inode == VirtualTree.status || inode == VirtualTree.events
    }

    /// Whether what `inode` shows depends on who asks: `events`, the revisions (`revisions/REV`, looked up in
    /// `revisions`) and the query folders (`search/QUERY/`, which also change with every revision). The kernel
    /// must not cache such an entry for the next user, and the caller's supplementary groups count.
    public func dependsOnCaller(inode: UInt64) -> Bool {
        inode == VirtualTree.events || inode == VirtualTree.revisions || VirtualTree.seq(of: inode) != nil
            || SearchViews.parents[inode] != nil || SearchViews.contains(inode)
    }

    func virtualLookup(parent: UInt64, name: String, caller: Caller) throws(VFSError) -> Attributes {
        if ForeignTree.contains(parent) { return try foreignLookup(parent: parent, name: name) }
        if SearchViews.parents[parent] != nil || SearchViews.contains(parent) {
            return try searchLookup(parent: parent, name: name, caller: caller)
        }
        if parent == VirtualTree.revisions {
            guard name.count >= 4, name.allSatisfy(\.isHexDigit) else { throw VFSError(ENOENT) }
            let matches: [(seq: Int64, id: RevisionID)]
            do { matches = try store.ownRevisions(prefix: name.lowercased()) } catch {
                throw fail(error, "lookup revision")
            }
            // Revisions of documents the caller could not `stat` are not there for it, nor make a prefix ambiguous.
            var visible: [UInt64] = []
            for match in matches {
                let inode = VirtualTree.revision(seq: match.seq)
                guard let (revision, _) = try storedRevision(inode) else { continue }
                if try mayShow(revision.document, to: caller, read: false) { visible.append(inode) }
            }
            guard visible.count == 1 else { throw VFSError(ENOENT) }
            return try virtualAttributes(visible[0])
        }
        guard let child = VirtualTree.children[parent]?.first(where: { $0.name == name }) else {
            throw VFSError(ENOENT)
        }
        return try virtualAttributes(child.inode)
    }

    func virtualAttributes(_ inode: UInt64) throws(VFSError) -> Attributes {
        if ForeignTree.contains(inode) { return try foreignAttributes(inode) }
        let root = state.withLock { s in s.nodes[Self.rootInode]!.attributes() }
        if SearchViews.contains(inode) { return try searchAttributes(inode, root: root) }
        if let fixed = Self.fixedAttributes(inode, root: root) { return fixed }
        guard let (revision, metadata) = try storedRevision(inode) else { throw VFSError(ENOENT) }
        var a = Self.fixedAttributes(VirtualTree.status, root: root)!
        a.inode = inode
        // Owned like the document was; read-only, so without write bits nor set-id bits.
        (a.uid, a.gid, a.mode) = (metadata.uid, metadata.gid, S_IFREG | (metadata.mode & 0o555))
        a.mtime = Timestamp(seconds: metadata.mtimeSeconds, nanoseconds: Int32(metadata.mtimeNanoseconds))
        a.ctime = a.mtime
        switch revision.kind {
        case .symlink:
            a.mode = S_IFLNK | 0o777
            a.size = UInt64(metadata.symlinkTarget.count)
        case .directory:
            a.size = UInt64(try directoryText(metadata).count)
        case .file, .special, .tombstone:
            a.size = metadata.size
        }
        a.blocks = (a.size + 511) / 512
        return a
    }

    /// The attributes of the directories, `status` and `events` (owned like the root, times the root's mtime);
    /// nil for a revision.
    static func fixedAttributes(_ inode: UInt64, root: Attributes) -> Attributes? {
        var a = Attributes(
            inode: inode, mode: S_IFDIR | 0o555, nlink: 2, uid: root.uid, gid: root.gid, size: 0, blocks: 0,
            atime: root.mtime, mtime: root.mtime, ctime: root.mtime)
        if VirtualTree.children[inode] != nil || ForeignTree.contains(inode) { return a }
        guard inode == VirtualTree.status || inode == VirtualTree.events else { return nil }
        a.mode = S_IFREG | 0o444
        a.nlink = 1
        return a
    }

    /// Whether `caller` could `stat` (and with `read`, read) `document` as the tree has it now; for a document no
    /// longer in the tree, whether it owns the store.
    func mayShow(_ document: DocumentID, to caller: Caller, read: Bool) throws(VFSError) -> Bool {
        let record: DocumentRecord?
        do { record = try store.document(document) } catch { throw fail(error, "look up document") }
        let visibility = record.flatMap { record in
            state.withLock { s in s.nodes[record.inode]?.linked == true ? Self.location(of: record.inode, in: s) : nil }
        }?.visibility
        return visibility?.allows(caller, read: read) ?? caller.ownsStore
    }

    /// The stored revision a `revisions/REV` inode shows; nil for the other virtual inodes.
    private func storedRevision(_ inode: UInt64) throws(VFSError) -> (Revision, RevisionMetadata)? {
        guard let seq = VirtualTree.seq(of: inode) else { return nil }
        do {
            guard let id = try store.ownRevision(seq: seq) else { throw VFSError(ENOENT) }
            return try store.revision(id)
        } catch {
            throw fail(error, "read revision")
        }
    }

    private func directoryText(_ metadata: RevisionMetadata) throws(VFSError) -> [UInt8] {
        do {
            let listing = try DirectoryListing(decoding: store.readContent(metadata.content))
            return Array(listing.entries.map { "\($0.kind) \($0.document) \($0.name)\n" }.joined().utf8)
        } catch {
            throw fail(error, "read directory revision")
        }
    }

    func virtualReadlink(_ inode: UInt64) throws(VFSError) -> String {
        if ForeignTree.contains(inode) { return try foreignReadlink(inode) }
        if SearchViews.contains(inode) { return try searchReadlink(inode) }
        guard let (revision, metadata) = try storedRevision(inode), revision.kind == .symlink else {
            throw VFSError(EINVAL)
        }
        return FileName.decode(metadata.symlinkTarget)
    }

    func virtualOpendir(_ inode: UInt64, caller: Caller?) throws(VFSError) -> UInt64 {
        if ForeignTree.contains(inode) { return try foreignOpendir(inode) }
        if SearchViews.contains(inode) { return try searchOpendir(inode, caller: caller) }
        guard let children = VirtualTree.children[inode] else { throw VFSError(ENOTDIR) }
        let parent = inode == VirtualTree.directory ? Self.rootInode : VirtualTree.directory
        return addHandle(.directory(inode: inode, entries: [(".", inode), ("..", parent)] + children))
    }

    func virtualOpen(_ inode: UInt64, flags: Int32, caller: Caller) throws(VFSError) -> UInt64 {
        if ForeignTree.contains(inode) { return try foreignOpen(inode, flags: flags) }
        guard VirtualTree.children[inode] == nil else { throw VFSError(EISDIR) }
        guard flags & O_ACCMODE == O_RDONLY, flags & O_TRUNC == 0 else { throw VFSError(EROFS) }
        switch inode {
        case VirtualTree.events:
            return addHandle(.events(openEvents(for: caller)))
        case VirtualTree.status:
            let extra = statusProvider.withLock { $0 }?() ?? []
            return addHandle(.virtual(.bytes(Array((statusLines() + extra).map { $0 + "\n" }.joined().utf8))))
        default:
            guard let (revision, metadata) = try storedRevision(inode) else { throw VFSError(ENOENT) }
            guard try mayShow(revision.document, to: caller, read: true) else { throw VFSError(EACCES) }
            switch revision.kind {
            case .symlink: throw VFSError(ELOOP)
            case .directory: return addHandle(.virtual(.bytes(try directoryText(metadata))))
            case .file, .special, .tombstone: return try openContent(metadata, of: revision.document)
            }
        }
    }

    /// A read-only handle on a stored revision's content, read chunk by chunk.
    func openContent(_ metadata: RevisionMetadata, of document: DocumentID) throws(VFSError) -> UInt64 {
        let tree: ManifestTree
        do { tree = try store.loadManifest(metadata.content) } catch {
            throw fail(error, "load content of document \(document)")
        }
        var starts: [UInt64] = []
        var offset: UInt64 = 0
        for chunk in tree.chunks {
            starts.append(offset)
            offset += chunk.length
        }
        starts.append(offset)
        return addHandle(.virtual(.chunks(tree.chunks, starts: starts, document: document, readahead: Readahead())))
    }

    func virtualRead(_ content: VirtualTree.Content, offset: UInt64, size: Int) throws(VFSError) -> [UInt8] {
        switch content {
        case .bytes(let bytes):
            guard offset < UInt64(bytes.count) else { return [] }
            return Array(bytes[Int(offset)..<min(bytes.count, Int(offset) + size)])
        case .chunks(let chunks, let starts, let document, let readahead):
            let readEnd = min(offset + UInt64(size), starts.last!)
            if offset < readEnd { readahead.read(offset..<readEnd, of: chunks, offsets: starts, store: store) }
            var out: [UInt8] = []
            // The last chunk starting at or before `offset`, then on until `size` bytes.
            var i = max(0, (starts.firstIndex { $0 > offset } ?? starts.count) - 1)
            // Content of a tree held on demand: what this read touches and this node lacks, in one fetch.
            let end = starts.firstIndex { $0 >= offset + UInt64(size) } ?? chunks.count
            if end - i > 1 { _ = try? store.fetchAbsent(chunks[i..<end].filter { !$0.isHole }.map(\.id)) }
            while i < chunks.count, out.count < size {
                let from = offset + UInt64(out.count) - starts[i]
                if chunks[i].isHole {
                    let zeros = from < chunks[i].length ? min(chunks[i].length - from, UInt64(size - out.count)) : 0
                    out += repeatElement(0, count: Int(zeros))
                    i += 1
                    continue
                }
                let bytes: [UInt8]
                do { bytes = try store.readChunk(chunks[i]) } catch {
                    throw fail(error, "read revision of document \(document)")
                }
                if from < bytes.count { out += bytes[Int(from)..<min(bytes.count, Int(from) + size - out.count)] }
                i += 1
            }
            return out
        }
    }

    func addHandle(_ handle: Handle) -> UInt64 {
        state.withLock { s in
            let h = s.nextHandle
            s.nextHandle += 1
            s.handles[h] = handle
            return h
        }
    }

    /// The reader behind an open `/.hypernet/events`, for the FUSE adapter's asynchronous read.
    public func eventReader(handle: UInt64) -> EventReader? {
        state.withLock { s in
            guard case .events(let reader)? = s.handles[handle] else { return nil }
            return reader
        }
    }
}
