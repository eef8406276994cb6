import Dispatch
import Glibc
import HypernetCrypto
import HypernetModel
import HypernetStore
import Synchronization

/// Progress of a pass over the kept subtrees: files whose content is checked, of how many, and bytes fetched.
public struct KeepProgress: Codable, Sendable {
    public var files: Int
    public var of: Int
    public var fetched: Int64
}

/// What a pass over the kept subtrees found (`hypernet keep`, docs/cli.md).
public struct KeepSummary: Codable, Sendable {
    /// The kept files (every kept subtree's), and the bytes of their current revisions.
    public var files = 0
    public var bytes: Int64 = 0
    /// Bytes fetched from peers by this pass.
    public var fetched: Int64 = 0
    /// Kept files whose content is not all here: no reachable peer sent it (a later pass fetches it).
    public var incomplete = 0
}

/// One pass over the kept subtrees at a time; a wake while one runs or waits runs one more after it.
final class Keeper: Sendable {
    let pass = Mutex(())
    let queued = Atomic<Bool>(false)
    /// The last pass left kept files without their content: no reachable peer sent it.
    let incomplete = Atomic<Bool>(false)
    let queue = DispatchQueue(label: "hypernet.keep", qos: .utility)
}

/// Kept subtrees ("available offline", docs/design.md, "Content on demand"): `keep` records a file or directory
/// of any tree this node shows, and a pass fetches the content of the current revisions of the files at or below
/// it and takes it out of the cache. A pass runs at `keep` and `unkeep`, after revisions of other trees arrive (a
/// new file below a kept folder, a new revision of a kept file), and when a peer connects after a pass that could
/// not fetch everything.
extension VirtualFileSystem {
    /// Keeps (or stops keeping) the file or directory at `path` (relative to the mount's root), then runs a pass.
    /// ENOENT: no such path; EINVAL: not a document (`/@NAME` itself, `/.hypernet`), or unkeeping a path kept
    /// only through a kept folder above it.
    public func keep(path: String, _ on: Bool, progress: (KeepProgress) -> Void = { _ in }) throws(VFSError)
        -> KeepSummary
    {
        try setKept(shownDocument(path: path), on)
        return try keepPass(progress: progress)
    }

    /// `user.hypernet.keep` set (1) or removed (0) on `inode`: recorded now, the content fetched in the background.
    func setKept(inode: UInt64, _ on: Bool) throws(VFSError) {
        try setKept(keptTarget(inode), on)
        wakeKeeper()
    }

    private func setKept(_ target: (tree: SigningPublicKey, document: DocumentID), _ on: Bool) throws(VFSError) {
        let changed: Bool
        do { changed = try store.setKept(target.document, tree: target.tree, on) } catch {
            throw fail(error, on ? "keep" : "unkeep")
        }
        if !on, !changed, isKept(target) { throw VFSError(EINVAL) }
    }

    /// Revisions of `trees` arrived: a pass runs if a subtree of one of them is kept.
    public func wakeKeeper(for trees: Set<SigningPublicKey>) {
        guard !trees.isEmpty, ((try? store.keptRoots()) ?? []).contains(where: { trees.contains($0.tree) }) else {
            return
        }
        wakeKeeper()
    }

    /// A peer connected: if the last pass lacked content no peer sent, a pass runs again (this one may send it).
    public func peerConnected() {
        if keeper.incomplete.load(ordering: .acquiring) { wakeKeeper() }
    }

    /// Runs a pass soon on the keeper's queue, unless one is already waiting.
    func wakeKeeper() {
        guard !keeper.queued.exchange(true, ordering: .acquiringAndReleasing) else { return }
        keeper.queue.asyncAfter(deadline: .now() + 0.2) { [self] in
            keeper.queued.store(false, ordering: .releasing)
            do { _ = try keepPass() } catch { logger.error("keeping content available offline failed: \(error)") }
        }
    }

    /// Fetches what the kept files of trees held on demand lack, then settles the cache: kept content leaves it,
    /// content no longer kept joins it. Once a fetch comes back incomplete (no reachable peer), the rest of the
    /// pass fetches nothing more: it only finds what is held, so an offline pass does not wait out a timeout per
    /// file.
    func keepPass(progress: (KeepProgress) -> Void = { _ in }) throws(VFSError) -> KeepSummary {
        try keeper.pass.withLock { _ throws(VFSError) in
            let roots: [(document: DocumentID, tree: SigningPublicKey)]
            do { roots = try store.keptRoots() } catch { throw fail(error, "keep") }
            let files = subtree(roots.filter { store.content(of: $0.tree) == .onDemand }.map(\.document)).files
            var summary = KeepSummary(files: files.count, bytes: files.reduce(0) { $0 + Int64($1.size) })
            var found = KeptObjects()
            var fetching = true
            for (i, metadata) in files.enumerated() {
                let missing = found.missing
                do { try store.keptObjects(of: metadata, fetching: fetching, into: &found) } catch {
                    found.missing += 1
                }
                if found.missing > missing {
                    summary.incomplete += 1
                    fetching = false
                }
                progress(KeepProgress(files: i + 1, of: files.count, fetched: found.fetched))
            }
            summary.fetched = found.fetched
            keeper.incomplete.store(summary.incomplete > 0, ordering: .releasing)
            do { try store.settleKept(found) } catch { throw fail(error, "keep") }
            if summary.incomplete > 0 {
                logger.warning(
                    "\(summary.incomplete) kept file(s) not available offline: no reachable peer sent their content")
            }
            return summary
        }
    }

    /// The documents at or below `roots` (directories included) and the current metadata of the files among them,
    /// as far as this identity can read them.
    func subtree(_ roots: [DocumentID]) -> (documents: Set<DocumentID>, files: [RevisionMetadata]) {
        var documents = Set<DocumentID>()
        var files: [RevisionMetadata] = []
        var pending = roots
        while let document = pending.popLast() {
            guard documents.insert(document).inserted, let w = try? winner(of: document) else { continue }
            switch w.revision.kind {
            case .file: files.append(w.metadata)
            case .directory:
                if let listing = try? DirectoryListing(decoding: store.readContent(w.metadata.content)) {
                    pending += shownEntries(listing, of: w.id).map(\.document)
                }
            default: break
            }
        }
        return (documents, files)
    }

    /// Whether `target` is at or below a kept document of its tree.
    func isKept(_ target: (tree: SigningPublicKey, document: DocumentID)) -> Bool {
        let roots = ((try? store.keptRoots()) ?? []).filter { $0.tree == target.tree }.map(\.document)
        return roots.contains(target.document) || subtree(roots).documents.contains(target.document)
    }

    /// `user.hypernet.local`: the bytes of the current content of the file, or of the files at or below the
    /// directory, held here, and their total.
    func localBytes(_ target: (tree: SigningPublicKey, document: DocumentID)) -> String {
        let (held, total) = subtree([target.document]).files.map { store.heldBytes(of: $0) }
            .reduce((UInt64(0), UInt64(0))) { ($0.0 + $1.held, $0.1 + $1.total) }
        return "\(held) \(total)"
    }

    /// The tree and document shown at `path` (relative to the mount's root): this identity's, or below `/@NAME/`.
    func shownDocument(path: String) throws(VFSError) -> (tree: SigningPublicKey, document: DocumentID) {
        let parts = path.split(separator: "/").map(String.init)
        guard let first = parts.first, let top = foreignRoot(named: first) else {
            if parts.first == VirtualTree.name { throw VFSError(EINVAL) }
            return (store.keyring.identity.publicKey, try resolve(path: path).record.id)
        }
        var inode = top
        for name in parts.dropFirst() where name != "." {
            guard let child = try foreignChildren(inode).first(where: { $0.name == name }) else {
                throw VFSError(ENOENT)
            }
            inode = child.inode
        }
        return try keptTarget(inode)
    }

    /// The tree and document of `inode`; EINVAL for `/@NAME` itself and the virtual files.
    func keptTarget(_ inode: UInt64) throws(VFSError) -> (tree: SigningPublicKey, document: DocumentID) {
        if ForeignTree.contains(inode) {
            guard let target = foreign.target(of: inode)?.target, let document = target.document else {
                throw VFSError(EINVAL)
            }
            return (target.tree, document)
        }
        if VirtualTree.contains(inode) { throw VFSError(EINVAL) }
        let document = try state.withLock { (s) throws(VFSError) in try Self.node(inode, in: s).record.id }
        return (store.keyring.identity.publicKey, document)
    }
}
