import Glibc
import HypernetCrypto
import HypernetModel
import HypernetStore
import Synchronization

/// `/@NAME/`: another identity's tree (NAME a contact, or the identity token) as far as it is shared with this
/// one, read from the revisions this node holds of it (it pins the tree). Its top level lists the documents
/// whose current permission block seals a key to this identity (or is public), by the label their admin gave,
/// leaving out those found below another; below them the directories' listings name the rest. A name whose
/// revision this identity cannot open still lists, with no permission bits, and reading it fails with EACCES.
/// A change fails with EACCES where the chain does not grant this identity the right; where it does, it is made
/// as a revision of the other tree signed by this identity (ForeignWrites.swift). docs/design.md, "Other
/// identities' trees".
enum ForeignTree {
    static let flag: UInt64 = 1 << 61
    static let prefix = "@"
    /// How many directories the top level's nesting check visits at most.
    static let walkLimit = 10_000
    /// A file of another tree open for writing is held in memory: this bounds it.
    static let maximumFileSize = 256 << 20

    static func contains(_ inode: UInt64) -> Bool { inode & VirtualTree.flag != 0 && inode & flag != 0 }

    /// One shown document of a foreign tree, or (document nil) the tree's top level.
    struct Target: Hashable {
        var tree: SigningPublicKey
        var document: DocumentID?
    }
}

/// The inode numbers handed out for foreign documents: the virtual flag, `ForeignTree.flag`, and a counter.
/// Kept for the life of the mount, so that an inode the kernel holds always means the same document.
final class ForeignInodes: Sendable {
    private struct Table {
        var targets: [UInt64: (target: ForeignTree.Target, kind: RevisionKind)] = [:]
        var inodes: [ForeignTree.Target: UInt64] = [:]
        var next: UInt64 = 1
    }

    private let table = Mutex(Table())
    /// Each tree's top level, with the end of its log it was computed at: it walks every shared directory,
    /// so it is computed again only when the tree's log has grown.
    let topLevels = Mutex<[SigningPublicKey: (seq: Int64, entries: [(name: String, inode: UInt64)])]>([:])
    /// The path below `/@NAME/` of each document shown of a tree, with the inodes from `/@NAME` down to it, for
    /// events; likewise computed again only once the tree's log has grown.
    let paths = Mutex<[SigningPublicKey: (seq: Int64, byDocument: [DocumentID: (path: String, inodes: [UInt64])])]>([:])

    func inode(for target: ForeignTree.Target, kind: RevisionKind) -> UInt64 {
        table.withLock { t in
            if let inode = t.inodes[target] {
                t.targets[inode]?.kind = kind
                return inode
            }
            let inode = VirtualTree.flag | ForeignTree.flag | t.next
            t.next += 1
            t.inodes[target] = inode
            t.targets[inode] = (target, kind)
            return inode
        }
    }

    /// Makes `inode` the one of `target` (a rename over it moved `inode` to the target's name in the kernel).
    /// The target's former inode keeps naming it, for the kernel's references to it.
    func rebind(_ inode: UInt64, to target: ForeignTree.Target) {
        table.withLock { t in
            guard let old = t.targets[inode] else { return }
            t.inodes.removeValue(forKey: old.target)
            t.inodes[target] = inode
            t.targets[inode] = (target, old.kind)
        }
    }

    /// The document and the kind its directory's listing gave it.
    func target(of inode: UInt64) -> (target: ForeignTree.Target, kind: RevisionKind)? {
        table.withLock { $0.targets[inode] }
    }
}

extension VirtualFileSystem {
    /// `/@NAME` at the root, for a contact name or identity token whose tree this node holds (not its own).
    func foreignRoot(named name: String) -> UInt64? {
        guard name.hasPrefix(ForeignTree.prefix), let tree = foreignTree(String(name.dropFirst())) else { return nil }
        return foreign.inode(for: .init(tree: tree, document: nil), kind: .directory)
    }

    /// `@NAME` for each contact whose tree this node holds, for the root's listing.
    func foreignRoots() -> [(name: String, inode: UInt64)] {
        guard let contacts = try? Contacts.load(store.home) else { return [] }
        let held = Set((try? store.trees()) ?? [])
        return contacts.list.filter {
            held.contains($0.identity.signing) && $0.identity.signing != store.keyring.identity.publicKey
        }
        .map {
            (
                ForeignTree.prefix + $0.name,
                foreign.inode(for: .init(tree: $0.identity.signing, document: nil), kind: .directory)
            )
        }
    }

    /// Where another identity's document shows: `/@NAME/…` (NAME its contact name, else its identity token), and
    /// who may see it there (the attributes of the mount root, `/@NAME` and the directories down to it); nil if it
    /// does not show (not readable here, not listed by a shared directory, or no name for the tree).
    func foreignLocation(of document: DocumentID, in tree: SigningPublicKey)
        -> (path: String, visibility: Visibility)?
    {
        guard let (path, inodes) = foreignInodes(in: tree)?[document] else { return nil }
        let root = state.withLock { s in Permission(s.nodes[Self.rootInode]!.record.metadata) }
        var permissions = [root]
        for inode in inodes {
            guard let a = try? foreignAttributes(inode) else { return nil }
            permissions.append(Permission(a))
        }
        return (path, Visibility(directories: Array(permissions.dropLast()), document: permissions.last!))
    }

    /// Where each document of `tree` this identity can reach shows, and the inodes on its way.
    func foreignInodes(in tree: SigningPublicKey) -> [DocumentID: (path: String, inodes: [UInt64])]? {
        guard let seq = try? store.lastSeq(tree: tree) else { return nil }
        if let cached = foreign.paths.withLock({ $0[tree] }), cached.seq == seq { return cached.byDocument }
        let contact = (try? Contacts.load(store.home))?.list.first { $0.identity.signing == tree }?.name
        guard let name = contact ?? store.knownIdentity(tree)?.description,
            let top = try? foreignTopLevel(tree)
        else { return nil }
        let treeInode = foreign.inode(for: .init(tree: tree, document: nil), kind: .directory)
        // Breadth first from the top level, as far as the listings this identity can read go.
        var found: [DocumentID: (path: String, inodes: [UInt64])] = [:]
        let treePath = "/" + ForeignTree.prefix + name + "/"
        var pending = top.map { (path: treePath + $0.name, inodes: [treeInode, $0.inode]) }
        var next = 0
        while next < pending.count, found.count < ForeignTree.walkLimit {
            let (path, inodes) = pending[next]
            next += 1
            guard let (target, kind) = foreign.target(of: inodes.last!), let id = target.document, found[id] == nil
            else { continue }
            found[id] = (path, inodes)
            if kind == .directory, let children = try? foreignChildren(inodes.last!) {
                pending += children.map { (path + "/" + $0.name, inodes + [$0.inode]) }
            }
        }
        foreign.paths.withLock { $0[tree] = (seq, found) }
        return found
    }

    private func foreignTree(_ who: String) -> SigningPublicKey? {
        let token = IdentityToken(who) ?? (try? Contacts.load(store.home))?.identity(named: who)
        guard let tree = token?.signing, tree != store.keyring.identity.publicKey,
            (try? store.trees())?.contains(tree) == true
        else { return nil }
        return tree
    }

    private func foreignTarget(_ inode: UInt64) throws(VFSError) -> (target: ForeignTree.Target, kind: RevisionKind) {
        guard let found = foreign.target(of: inode) else { throw VFSError(ENOENT) }
        return found
    }

    /// The winning head of a foreign document; EACCES when this identity holds no key for it.
    func foreignWinner(_ document: DocumentID) throws(VFSError) -> Winner {
        let w: Winner?
        do { w = try winner(of: document) } catch {
            if case .rights = error { throw VFSError(EACCES) }
            throw fail(error, "read shared document")
        }
        guard let w, w.revision.kind != .tombstone else { throw VFSError(ENOENT) }
        return w
    }

    /// The entries of a foreign directory (or of a tree's top level), each with its inode.
    func foreignChildren(_ inode: UInt64) throws(VFSError) -> [(name: String, inode: UInt64)] {
        let (target, _) = try foreignTarget(inode)
        guard let document = target.document else { return try foreignTopLevel(target.tree) }
        let w = try foreignWinner(document)
        guard w.revision.kind == .directory else { throw VFSError(ENOTDIR) }
        return try listing(w).map {
            ($0.name, foreign.inode(for: .init(tree: target.tree, document: $0.document), kind: $0.kind))
        }
    }

    private func listing(_ w: Winner) throws(VFSError) -> [DirectoryListing.Entry] {
        do {
            return shownEntries(try DirectoryListing(decoding: store.readContent(w.metadata.content)), of: w.id)
        } catch {
            throw fail(error, "read shared directory")
        }
    }

    /// The readable chains' documents that no other one's directories list (a folder shared inside a shared
    /// folder shows inside it), by label; a repeated label gets the document id's first 8 digits appended.
    private func foreignTopLevel(_ tree: SigningPublicKey) throws(VFSError) -> [(name: String, inode: UInt64)] {
        let seq: Int64
        do { seq = try store.lastSeq(tree: tree) } catch { throw fail(error, "shared documents") }
        if let cached = foreign.topLevels.withLock({ $0[tree] }), cached.seq == seq { return cached.entries }
        let entries = try computeTopLevel(tree)
        foreign.topLevels.withLock { $0[tree] = (seq, entries) }
        return entries
    }

    private func computeTopLevel(_ tree: SigningPublicKey) throws(VFSError) -> [(name: String, inode: UInt64)] {
        let chains: [(document: DocumentID, label: String?)]
        do { chains = try store.readableChains(tree: tree) } catch { throw fail(error, "shared documents") }
        var below = Set<DocumentID>()
        var pending = chains.map(\.document)
        var visited = Set<DocumentID>()
        while let next = pending.popLast(), visited.count < ForeignTree.walkLimit {
            guard visited.insert(next).inserted, let w = try? foreignWinner(next), w.revision.kind == .directory,
                let entries = try? listing(w)
            else { continue }
            for e in entries {
                below.insert(e.document)
                pending.append(e.document)
            }
        }
        var seen = Set<String>()
        return chains.filter { !below.contains($0.document) }.compactMap { chain in
            guard let w = try? foreignWinner(chain.document) else { return nil }
            var name =
                chain.label.flatMap { FileName.byteCount($0) <= Self.nameMax && !$0.contains("/") ? $0 : nil }
                ?? chain.document.description
            if !seen.insert(name).inserted { name += " (\(chain.document.description.prefix(8)))" }
            return (name, foreign.inode(for: .init(tree: tree, document: chain.document), kind: w.revision.kind))
        }
    }

    func foreignLookup(parent: UInt64, name: String) throws(VFSError) -> Attributes {
        guard let child = try foreignChildren(parent).first(where: { $0.name == name }) else { throw VFSError(ENOENT) }
        return try foreignAttributes(child.inode)
    }

    /// Owned like the mount's root, read-only; permission bits from the revision (none when it cannot be read).
    func foreignAttributes(_ inode: UInt64) throws(VFSError) -> Attributes {
        let root = state.withLock { s in s.nodes[Self.rootInode]!.attributes() }
        let (target, kind) = try foreignTarget(inode)
        var a = Attributes(
            inode: inode, mode: S_IFDIR | 0o555, nlink: 2, uid: root.uid, gid: root.gid, size: 0, blocks: 0,
            atime: root.mtime, mtime: root.mtime, ctime: root.mtime)
        guard let document = target.document else { return a }
        let typeBits: UInt32 = kind == .directory ? S_IFDIR : kind == .symlink ? S_IFLNK : S_IFREG
        a.nlink = kind == .directory ? 2 : 1
        do throws(VFSError) {
            let open = openForeignMetadata(inode)
            let m: RevisionMetadata
            if let open { m = open.metadata } else { m = try foreignWinner(document).metadata }
            a.mode = (kind == .special ? m.mode & S_IFMT : typeBits) | (m.mode & (writable(inode) ? 0o7777 : 0o7555))
            a.rdev = m.rdev
            a.size = open?.size ?? (kind == .symlink ? UInt64(m.symlinkTarget.count) : m.size)
            a.mtime = Timestamp(seconds: m.mtimeSeconds, nanoseconds: Int32(m.mtimeNanoseconds))
            a.ctime = Timestamp(seconds: m.ctimeSeconds, nanoseconds: Int32(m.ctimeNanoseconds))
            a.atime = a.mtime
        } catch  where error.errno == EACCES {
            a.mode = typeBits
        }
        a.blocks = (a.size + 511) / 512
        return a
    }

    func foreignOpendir(_ inode: UInt64) throws(VFSError) -> UInt64 {
        let children = try foreignChildren(inode)
        let parentAttributes = try foreignAttributes(inode)
        var entries = [DirectoryEntry(name: ".", attributes: parentAttributes, nextOffset: 1)]
        entries.append(DirectoryEntry(name: "..", attributes: parentAttributes, nextOffset: 2))
        for child in children {
            guard let a = try? foreignAttributes(child.inode) else { continue }
            entries.append(DirectoryEntry(name: child.name, attributes: a, nextOffset: UInt64(entries.count + 1)))
        }
        return addHandle(.listed(entries))
    }

    func foreignOpen(_ inode: UInt64, flags: Int32) throws(VFSError) -> UInt64 {
        if flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0 {
            return try openForeignForWriting(inode, flags: flags)
        }
        let (target, kind) = try foreignTarget(inode)
        guard let document = target.document, kind != .directory else { throw VFSError(EISDIR) }
        let w = try foreignWinner(document)
        guard w.revision.kind == .file else { throw VFSError(w.revision.kind == .symlink ? ELOOP : EISDIR) }
        return try openContent(w.metadata, of: document)
    }

    func foreignReadlink(_ inode: UInt64) throws(VFSError) -> String {
        guard let document = try foreignTarget(inode).target.document else { throw VFSError(EINVAL) }
        let w = try foreignWinner(document)
        guard w.revision.kind == .symlink else { throw VFSError(EINVAL) }
        return FileName.decode(w.metadata.symlinkTarget)
    }

    /// Whether this identity may write the document: its write bits show then.
    private func writable(_ inode: UInt64) -> Bool {
        guard let target = foreign.target(of: inode)?.target, let document = target.document,
            let block = foreignBlock(document, tree: target.tree)
        else { return false }
        return block.roles(of: store.keyring.identity.publicKey).contains(.write)
    }

    /// Why a change to a foreign inode fails: EACCES when this identity lacks `needs` in the chain that governs
    /// it (always at a tree's top level), else EROFS.
    func foreignWriteError(_ inode: UInt64, needs: Roles) -> VFSError {
        guard let document = foreign.target(of: inode)?.target.document,
            let block = foreignBlock(document, tree: foreign.target(of: inode)!.target.tree),
            block.roles(of: store.keyring.identity.publicKey).contains(needs)
        else { return VFSError(EACCES) }
        return VFSError(EROFS)
    }

    /// The current block of the chain a foreign document's heads were written under.
    private func foreignBlock(_ document: DocumentID, tree: SigningPublicKey) -> PermissionBlock? {
        guard let rights = try? store.governingChain(of: document) else { return nil }
        return (try? store.chain(of: rights, tree: tree))?.current?.block
    }

    /// `user.hypernet.id`, `.revision`, `.rights`, `.local` and `.keep` of a foreign document, and its user xattrs.
    func foreignXattr(_ inode: UInt64, name: String) throws(VFSError) -> [UInt8] {
        let (target, _) = try foreignTarget(inode)
        guard let document = target.document else { throw VFSError(ENODATA) }
        switch HypernetXattr(rawValue: name) {
        case .id?: return Array(document.description.utf8)
        case .revision?: return Array(try foreignWinner(document).id.hex.utf8)
        case .rights?:
            guard let block = foreignBlock(document, tree: target.tree) else { throw VFSError(EACCES) }
            return Array(Membership(members: block.members, isPublic: block.isPublic).text.utf8)
        case .local?: return Array(localBytes((target.tree, document)).utf8)
        case .keep?: return Array((isKept((target.tree, document)) ? "1" : "0").utf8)
        default:
            guard !name.hasPrefix(HypernetXattr.prefix),
                let value = try foreignWinner(document).metadata.xattrs.value(of: name)
            else { throw VFSError(ENODATA) }
            return value
        }
    }
}
