import Dispatch
import Glibc
import HypernetCrypto
import HypernetModel
import HypernetStore
import Logging
import Synchronization

/// The filesystem as the kernel sees it, without the kernel: inode numbers, open handles, write
/// staging and the xattr namespace, on top of a `Store`. Every method is thread-safe; the FUSE
/// adapter calls them from its worker threads and replies with the result or the `VFSError`.
///
/// Inode numbers are the catalog's document rows: stable for the life of the store and never reused, so
/// the FUSE generation is always 0. The root directory is inode 1 (`FUSE_ROOT_ID`).
///
/// Revisions are made when a written file is flushed (close) or fsynced, on a path truncate and every
/// xattr change, on rename-over (the target document gets the source's content and keeps its id and
/// history), for files held open while written every 250 ms (a small change, like a log's) or second, and whenever a
/// file grew by 16 MiB (`FileContent.streamBytes`). chmod, chown and utimens are committed
/// to the catalog at once and versioned by the next revision, which the once-a-second pass makes if
/// nothing else does; the same pass writes directory revisions (their listings). The catalog's rows are
/// committed with each operation, so nothing waits for that pass to be durable (docs/design.md).
public final class VirtualFileSystem: Sendable {
    public static let rootInode: UInt64 = 1
    static let nameMax = 255
    static let commitInterval: Duration = .seconds(1)
    /// How often a file held open while written becomes a revision when at most `smallChange` bytes changed
    /// (a log): followers on other nodes (`tail -f`) see appended lines this soon after they are written.
    /// Larger changes wait for `commitInterval`.
    static let openFileCommitInterval: Duration = .milliseconds(250)
    static let smallChange: UInt64 = 1 << 20

    enum Handle {
        /// `writes`: opened for writing, truncating or creating; a `flush` of any other commits nothing.
        case file(inode: UInt64, writes: Bool)
        case directory(inode: UInt64, entries: [(name: String, inode: UInt64)])
        /// A file of `/.hypernet/` other than `events`.
        case virtual(VirtualTree.Content)
        case events(EventReader)
        /// A directory of `/@NAME/`: its entries with their attributes, listed at opendir.
        case listed([DirectoryEntry])
        /// A file of `/@NAME/` open for writing.
        case foreignFile(ForeignFile)
    }

    struct State {
        var nodes: [UInt64: Node] = [:]
        var handles: [UInt64: Handle] = [:]
        var nextHandle: UInt64 = 1
        var dirtyDirectories: Set<UInt64> = []
        /// Shown directories with same-named directories merged into them (`Node.mergedDirectories` not empty).
        var merging: Set<UInt64> = []
        /// Inodes whose content is attached (open, or being truncated): what the timer's pass visits.
        var openFiles: Set<UInt64> = []
        /// Chunk lists of recently closed files: reopening a large file (an append) skips reloading its manifest.
        var recentTrees = TreeCache()
        /// Files and symlinks whose catalog row is ahead of their head revision (a pending metadata change).
        var pendingRevisions: Set<UInt64> = []
        /// Files just renamed to a backup name, by the place they left (`Saves.swift`).
        var renamedAway = RenamedAway()
        /// Directories whose listing cannot be read (`showUnreadable`): `EIO` for their names.
        var unreadable: Set<UInt64> = []
    }

    let store: Store
    let configuration: VFSConfiguration
    let logger: Logger
    /// Lock order: a `FileContent.state` lock may be held when taking this one, never the reverse.
    let state: Mutex<State>
    let timer: CommitTimer
    let kernelCache = Mutex<(any KernelCache)?>(nil)
    let statusProvider = Mutex<(@Sendable () -> [String])?>(nil)
    let searchViews = SearchViews()
    let events = EventHub()
    let foreign = ForeignInodes()
    /// Files of other identities' trees open for writing, by inode.
    let foreignFiles = Mutex<[UInt64: ForeignFile]>([:])
    /// The periodic passes whose last run failed (`passEnded`).
    let failingPasses = Mutex<Set<String>>([])
    /// Directory revisions whose invalid names were logged (`shownEntries`), so each is logged once.
    let invalidListings = Mutex<Set<RevisionID>>([])
    /// Passes over the kept subtrees (Keeping.swift).
    let keeper = Keeper()

    /// Starts the filesystem on `store`, including its commit timer for files held open.
    public init(store: Store, configuration: VFSConfiguration, logger: Logger) throws(StoreError) {
        self.store = store
        self.configuration = configuration
        self.logger = logger
        var s = State()
        for record in try store.loadDocuments() where record.kind != .tombstone {
            s.nodes[record.inode] = Node(record: record, parent: Self.rootInode, name: "")
        }
        if s.nodes[Self.rootInode] == nil {
            try Self.createRoot(store: store, into: &s)
        } else if var root = s.nodes[Self.rootInode], root.record.id != store.rootDocument {
            // Format-1 stores chose the root at random; it is now derived from the identity, so that every
            // node holding it shows one tree. The listing moves to the derived document with its next
            // revision; the old root's history stays in the store.
            logger.notice("root document now derived from the identity", metadata: ["was": "\(root.record.id)"])
            root.record.id = store.rootDocument
            root.record.head = nil
            root.record.dirty = true
            let record = root.record
            try store.transaction { tx in try tx.updateDocument(record) }
            s.nodes[Self.rootInode] = root
        }
        var named = Set<UInt64>()
        let entries = try store.loadEntries()
        for e in entries {
            guard s.nodes[e.parent] != nil, s.nodes[e.child] != nil else {
                logger.warning("catalog entry points at a missing document", metadata: ["name": "\(e.name)"])
                continue
            }
            s.nodes[e.parent]!.children[e.name] = e.child
            if named.insert(e.child).inserted {
                s.nodes[e.child]!.parent = e.parent
                s.nodes[e.child]!.name = e.name
            } else {
                s.nodes[e.child]!.otherNames.append(Link(parent: e.parent, name: e.name))
            }
            if s.nodes[e.child]!.isDirectory { s.nodes[e.parent]!.subdirectories += 1 }
        }
        let gone = try Self.retireUnnamed(&s, listed: Set(entries.map(\.child)), store: store)
        if gone > 0 {
            logger.notice("files opened with O_TMPFILE and never named are gone", metadata: ["count": "\(gone)"])
        }
        // A row is dirty when it is ahead of its head revision (made here, never for a document received
        // from a peer that has no revision yet).
        s.dirtyDirectories = Set(s.nodes.values.filter { $0.isDirectory && $0.record.dirty }.map(\.inode))
        // Files whose last state was made durable without a revision (a crash between close and
        // release) get that revision now.
        let pending = s.nodes.values.filter { !$0.isDirectory && $0.record.dirty }.map(\.inode)
        for inode in pending {
            do { try Self.appendRevision(&s.nodes[inode]!, locations: [], store: store) } catch {
                logger.error("pending revision failed: \(error)", metadata: ["inode": "\(inode)"])
            }
        }
        state = Mutex(s)
        timer = CommitTimer()
        timer.source.setEventHandler { [weak self] in self?.commitDue() }
        timer.source.resume()
        // A new root (or directories changed just before a crash) get their revision before any request,
        // and revisions received while no mount ran (or before a crash) are shown.
        commitDirectories()
        do { applyRemote(try store.documentsBehindHeads()) } catch {
            logger.error("reading received revisions: \(error)")
        }
        logger.info("filesystem ready", metadata: ["documents": "\(s.nodes.count)"])
    }

    private static func createRoot(store: Store, into s: inout State) throws(StoreError) {
        let metadata = RevisionMetadata.new(mode: S_IFDIR | 0o755, uid: getuid(), gid: getgid())
        // Derived from the identity: every node holding it shows the same tree.
        let id = store.rootDocument
        let inode = try store.transaction { tx in
            try tx.insertDocument(id: id, kind: .directory, metadata: metadata, dirty: true, rights: nil)
        }
        guard inode == rootInode else { throw .corrupt(object: "catalog", reason: "root document is inode \(inode)") }
        let now = Timestamp.now()
        s.nodes[inode] = Node(
            record: DocumentRecord(
                inode: inode, id: id, kind: .directory, head: nil, metadata: metadata, atimeSeconds: now.seconds,
                atimeNanoseconds: UInt32(now.nanoseconds), dirty: true),
            parent: inode, name: "")
    }

    // MARK: Errors

    /// Store failures become EIO (ENOSPC when the disk is full), with a log line naming the object.
    func fail(_ error: any Error, _ operation: String, inode: UInt64? = nil) -> VFSError {
        if let e = error as? VFSError { return e }
        if let e = error as? StoreError, case .rights(let why) = e {
            logger.notice("\(operation) refused: \(why)", metadata: inode.map { ["inode": "\($0)"] } ?? [:])
            return VFSError(EACCES)
        }
        if let e = error as? StoreError, e.isNoSpace {
            store.noteNoSpace(operation, e)
            return VFSError(ENOSPC)
        }
        logger.error("\(operation) failed: \(error)", metadata: inode.map { ["inode": "\($0)"] } ?? [:])
        return VFSError(EIO)
    }

    /// `appended`: records just appended that `body` names; discarded if it fails.
    func persist<T>(_ operation: String, appended: [ChunkLocation] = [], _ body: (StoreTransaction) throws -> T)
        throws(VFSError) -> T
    {
        do { return try store.transaction(appended: appended, body) } catch { throw fail(error, operation) }
    }

    // MARK: Names and attributes

    /// Looks `name` up in directory `parent`; on success the inode's lookup count grows by one. `caller` counts only
    /// in `/.hypernet/revisions/` (`dependsOnCaller`): elsewhere the kernel checks permissions.
    public func lookup(parent: UInt64, name: String, caller: Caller) throws(VFSError) -> Attributes {
        if VirtualTree.contains(parent) { return try virtualLookup(parent: parent, name: name, caller: caller) }
        if parent == Self.rootInode, name == VirtualTree.name { return try virtualAttributes(VirtualTree.directory) }
        if parent == Self.rootInode, let foreignRoot = foreignRoot(named: name) {
            return try foreignAttributes(foreignRoot)
        }
        return try state.withLock { (s) throws(VFSError) in
            let dir = try Self.directory(parent, in: s)
            guard FileName.byteCount(name) <= Self.nameMax else { throw VFSError(ENAMETOOLONG) }
            guard let child = dir.children[name] else { throw VFSError(ENOENT) }
            s.nodes[child]!.lookups += 1
            return s.nodes[child]!.attributes()
        }
    }

    /// The kernel dropped `count` references to `inode` (FUSE `forget`).
    public func forget(inode: UInt64, count: UInt64) {
        if VirtualTree.contains(inode) { return }
        state.withLock { s in
            guard var node = s.nodes[inode] else { return }
            node.lookups -= min(count, node.lookups)
            s.nodes[inode] = node
            Self.dropIfUnreferenced(inode, in: &s)
        }
    }

    /// Counts one more kernel reference, for each entry that `readdirplus` returns (not `.`/`..`).
    public func retain(inode: UInt64) {
        state.withLock { s in s.nodes[inode]?.lookups += 1 }
    }

    public func getattr(inode: UInt64) throws(VFSError) -> Attributes {
        if VirtualTree.contains(inode) { return try virtualAttributes(inode) }
        return try state.withLock { (s) throws(VFSError) in try Self.node(inode, in: s).attributes() }
    }

    public func setattr(inode: UInt64, changes: AttributeChanges, handle: UInt64?, caller: Caller)
        throws(VFSError) -> Attributes
    {
        if ForeignTree.contains(inode) { return try foreignSetattr(inode, changes: changes, caller: caller) }
        if VirtualTree.contains(inode) { throw writeError(inode, needs: .write) }
        let (kind, stale) = try state.withLock { (s) throws(VFSError) in
            let node = try Self.node(inode, in: s)
            return (node.kind, node.isStale)
        }
        if stale { throw VFSError(ESTALE) }
        if let size = changes.size {
            guard size <= ManifestNode.maximumLength else { throw VFSError(EFBIG) }
            if kind == .directory { throw VFSError(EISDIR) }
            if kind != .file { throw VFSError(EINVAL) }
        }
        try state.withLock { (s) throws(VFSError) in
            var node = try Self.node(inode, in: s)
            let now = Timestamp.now()
            var m = node.record.metadata
            if let mode = changes.mode { m.mode = (m.mode & S_IFMT) | (mode & 0o7777) }
            if let uid = changes.uid { m.uid = uid }
            if let gid = changes.gid { m.gid = gid }
            if changes.killSetID {
                m.mode &= ~S_ISUID
                if m.mode & S_IXGRP != 0 { m.mode &= ~S_ISGID }
            }
            switch changes.mtime {
            case .now?: (m.mtimeSeconds, m.mtimeNanoseconds) = (now.seconds, UInt32(now.nanoseconds))
            case .set(let t)?: (m.mtimeSeconds, m.mtimeNanoseconds) = (t.seconds, UInt32(t.nanoseconds))
            case nil: break
            }
            switch changes.atime {
            case .now?:
                (node.record.atimeSeconds, node.record.atimeNanoseconds) = (now.seconds, UInt32(now.nanoseconds))
            case .set(let t)?:
                (node.record.atimeSeconds, node.record.atimeNanoseconds) = (t.seconds, UInt32(t.nanoseconds))
            case nil: break
            }
            // A change that leaves the versioned fields as they were (vim's fchmod to the same mode,
            // an atime-only touch) moves ctime but makes no revision.
            if m != node.record.metadata { node.metadataChanged = true }
            (m.ctimeSeconds, m.ctimeNanoseconds) = (now.seconds, UInt32(now.nanoseconds))
            node.record.metadata = m
            s.nodes[inode] = node
        }
        if let size = changes.size { truncate(inode, try attachContent(inode), to: size, written: true) }
        defer { if changes.size != nil { detachContent(inode) } }
        if changes.size == nil {
            // chmod, chown, utimens: durable now, versioned by the next revision — the once-a-second
            // pass makes it if nothing else does — so `tar x` (create, write, close, chown, chmod,
            // utimens per file) pays for one signed revision per file, not four.
            try persistPending(inode)
        } else if handle == nil {
            try commit(inode)
        }
        // An ftruncate through an open handle is part of a save in progress (vim truncates, then writes):
        // its revision is the one made when that handle is flushed, not one more.
        return try getattr(inode: inode)
    }

    public func readlink(inode: UInt64) throws(VFSError) -> String {
        if VirtualTree.contains(inode) { return try virtualReadlink(inode) }
        return try state.withLock { (s) throws(VFSError) in
            let node = try Self.node(inode, in: s)
            guard node.kind == .symlink else { throw VFSError(EINVAL) }
            return FileName.decode(node.record.metadata.symlinkTarget)
        }
    }

    // MARK: Lookup helpers (call with the state lock held)

    static func node(_ inode: UInt64, in s: State) throws(VFSError) -> Node {
        guard let node = s.nodes[inode] else { throw VFSError(ENOENT) }
        return node
    }

    static func directory(_ inode: UInt64, in s: State) throws(VFSError) -> Node {
        let node = try node(inode, in: s)
        guard node.isDirectory else { throw VFSError(ENOTDIR) }
        guard node.linked else { throw VFSError(ENOENT) }
        guard !s.unreadable.contains(inode) else { throw VFSError(EIO) }
        return node
    }

    /// A new entry `name` may go into directory `parent`: `EEXIST` when the name is taken, `ENOSPC` when the
    /// directory is full (`DirectoryEntries.isFull`).
    static func checkNewEntry(_ name: String, in parent: UInt64, _ s: State) throws(VFSError) {
        guard let children = s.nodes[parent]?.children else { throw VFSError(ENOENT) }
        guard children[name] == nil else { throw VFSError(EEXIST) }
        guard !children.isFull else { throw VFSError(ENOSPC) }
    }

    /// Changes in `/.hypernet/` or `/@NAME/`, or to them, are refused: they are computed, not stored here.
    func refuseVirtual(_ parent: UInt64, _ name: String, needs: Roles = .write) throws(VFSError) {
        if VirtualTree.contains(parent) { throw writeError(parent, needs: needs) }
        if parent == Self.rootInode, name == VirtualTree.name || foreignRoot(named: name) != nil {
            throw VFSError(EROFS)
        }
    }

    /// EROFS for `/.hypernet/`; for `/@NAME/`, EACCES where this identity lacks the right (`ForeignTree`).
    func writeError(_ inode: UInt64, needs: Roles) -> VFSError {
        ForeignTree.contains(inode) ? foreignWriteError(inode, needs: needs) : VFSError(EROFS)
    }

    static func validate(name: String) throws(VFSError) {
        guard FileName.byteCount(name) <= nameMax else { throw VFSError(ENAMETOOLONG) }
        guard !name.isEmpty, name != ".", name != "..", !name.contains("/") else { throw VFSError(EINVAL) }
    }

    static func dropIfUnreferenced(_ inode: UInt64, in s: inout State) {
        guard let node = s.nodes[inode], !node.linked, node.lookups == 0, node.content == nil else { return }
        s.nodes.removeValue(forKey: inode)
    }

    /// Effective quorum: the nearest `user.hypernet.quorum` up the tree, else the mount's.
    static func quorum(of inode: UInt64, in s: State, default value: Int) -> Int {
        nearest(inode, in: s) { $0.quorum > 0 ? Int($0.quorum) : nil } ?? value
    }

    /// Effective retention policy: the nearest `user.hypernet.retention` up the tree, else the default.
    static func retention(of inode: UInt64, in s: State) -> RetentionPolicy {
        nearest(inode, in: s) { $0.retention } ?? .default
    }

    /// What `setting` finds in the metadata of `inode` or of the nearest directory above it that has one.
    private static func nearest<T>(_ inode: UInt64, in s: State, _ setting: (RevisionMetadata) -> T?) -> T? {
        var current = inode
        while let node = s.nodes[current] {
            if let value = setting(node.record.metadata) { return value }
            if current == rootInode || node.parent == current { break }
            current = node.parent
        }
        return nil
    }
}

/// The commit pass: every `openFileCommitInterval` for files held open, every `commitInterval` for the rest.
// @unchecked Sendable: a dispatch source is thread-safe (libdispatch documents every call as such); the
// reference itself never changes, and `ticks` is touched only on the source's serial queue.
final class CommitTimer: @unchecked Sendable {
    let source: DispatchSourceTimer
    var ticks: UInt64 = 0

    init() {
        source = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "hypernet.vfs.commit"))
        source.schedule(deadline: .now() + 0.25, repeating: 0.25, leeway: .milliseconds(25))
    }

    /// Counts a tick; true on every fourth (once a second).
    func tick() -> Bool {
        ticks &+= 1
        return ticks % 4 == 0
    }
}

/// Recently used chunk lists of large files, by inode, bounded by their total number of chunk references
/// (72 bytes each).
/// An entry is used only if its root still matches the document's, so a stale one costs nothing.
struct TreeCache {
    static let maximumChunks = 1 << 18
    private var entries: [UInt64: (tree: ManifestTree, tick: UInt64)] = [:]
    private var chunks = 0
    private var tick: UInt64 = 0

    mutating func take(_ inode: UInt64) -> ManifestTree? {
        guard let e = entries.removeValue(forKey: inode) else { return nil }
        chunks -= e.tree.chunks.count
        return e.tree
    }

    mutating func put(_ inode: UInt64, _ tree: ManifestTree) {
        _ = take(inode)
        // A list of one leaf reloads in one chunk read: only larger ones are worth keeping (and so the
        // cache holds few entries however many small files pass through).
        guard tree.chunks.count > ManifestNode.fanout, tree.chunks.count <= Self.maximumChunks else { return }
        tick += 1
        entries[inode] = (tree, tick)
        chunks += tree.chunks.count
        while chunks > Self.maximumChunks, let oldest = entries.min(by: { $0.value.tick < $1.value.tick }) {
            _ = take(oldest.key)
        }
    }
}
