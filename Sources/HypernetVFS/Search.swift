import Glibc
import HypernetCrypto
import HypernetModel
import HypernetStore

/// The revision a document shows (the winner of its heads), for the search index.
public struct ShownRevision: Sendable {
    public var id: RevisionID
    public var revision: Revision
    public var metadata: RevisionMetadata
    public var headCount: Int
}

extension VirtualFileSystem {
    /// Where `document` of `tree` shows in the mount now ("/a/b.txt", "/@alice/share/doc.txt"), or nil when it does
    /// not: deleted, not readable by this identity (revoked, never granted), or not linked into a listing yet.
    public func shownPath(of document: DocumentID, tree: SigningPublicKey) -> String? {
        guard tree == store.keyring.identity.publicKey else { return foreignLocation(of: document, in: tree)?.path }
        guard let inode = try? store.document(document)?.inode else { return nil }
        return state.withLock { s in
            guard s.nodes[inode]?.linked == true else { return nil }
            return Self.location(of: inode, in: s)?.path
        }
    }

    /// `shownPath` of several documents of `tree` (those it shows): another identity's tree is walked once for all,
    /// where one by one each would walk it again after every arrival.
    public func shownPaths(of documents: [DocumentID], tree: SigningPublicKey) -> [DocumentID: String] {
        var paths: [DocumentID: String] = [:]
        guard tree != store.keyring.identity.publicKey else {
            for d in documents { paths[d] = shownPath(of: d, tree: tree) }
            return paths
        }
        guard let all = foreignInodes(in: tree) else { return [:] }
        // As `foreignLocation`: shown if every directory down to it, and it, has attributes here (once each).
        var shows: [UInt64: Bool] = [:]
        for d in documents {
            guard let (path, inodes) = all[d] else { continue }
            let reachable = inodes.allSatisfy { inode in
                if let known = shows[inode] { return known }
                let answer = (try? foreignAttributes(inode)) != nil
                shows[inode] = answer
                return answer
            }
            if reachable { paths[d] = path }
        }
        return paths
    }

    /// The documents of another identity's `tree` that show directly in its directory at `path` ("/@alice/a").
    public func shownDocuments(in path: String, tree: SigningPublicKey) -> [DocumentID] {
        (foreignInodes(in: tree) ?? [:]).compactMap { document, location in
            location.path.hasPrefix(path + "/") && !location.path.dropFirst(path.count + 1).contains("/")
                ? document : nil
        }
    }

    /// Whether another identity may read `document`: one of another identity's tree, or one of this identity's
    /// governed by a chain (its own or inherited) with another member or public.
    public func isShared(_ document: DocumentID, tree: SigningPublicKey) -> Bool {
        guard tree == store.keyring.identity.publicKey else { return true }
        guard let inode = try? store.document(document)?.inode, let node = state.withLock({ $0.nodes[inode] }),
            let membership = try? membership(of: node)
        else { return false }
        return membership.isPublic || membership.members.contains { $0.identity.signing != tree }
    }

    /// The regular files at `path` (relative to the mount root, in this identity's tree) or below it, depth first,
    /// each directory's entries in byte order of their names: what `hypernet grep` searches. Symlinks are not
    /// followed. Paths are relative too.
    public func files(below path: String) throws(VFSError) -> [(path: String, document: DocumentID)] {
        if let files = try foreignFiles(below: path) { return files }
        let top = try resolve(path: path)
        return state.withLock { s in
            var found: [(path: String, document: DocumentID)] = []
            func walk(_ node: Node, _ path: String) {
                if node.kind == .file { found.append((path, node.record.id)) }
                guard node.isDirectory else { return }
                // A stored `.hypernet` at the root is hidden by the virtual directory.
                for (name, inode) in node.children.sorted where node.inode != Self.rootInode || name != VirtualTree.name
                {
                    if let child = s.nodes[inode] { walk(child, path.isEmpty ? name : path + "/" + name) }
                }
            }
            walk(top, path)
            return found
        }
    }

    /// The same below `@NAME/…`, another identity's tree as far as it shows to this one; nil for a path of this
    /// identity's tree.
    private func foreignFiles(below path: String) throws(VFSError) -> [(path: String, document: DocumentID)]? {
        let parts = path.split(separator: "/").filter { $0 != "." }
        guard let first = parts.first, let root = foreignRoot(named: String(first)) else { return nil }
        guard let tree = foreign.target(of: root)?.target.tree, let shown = foreignInodes(in: tree) else {
            throw VFSError(ENOENT)
        }
        let top = parts.joined(separator: "/")
        var found: [(path: String, document: DocumentID)] = []
        for (document, place) in shown {
            let relative = String(place.path.dropFirst())
            guard relative == top || relative.hasPrefix(top + "/"),
                foreign.target(of: place.inodes.last!)?.kind == .file
            else { continue }
            found.append((relative, document))
        }
        guard !found.isEmpty || shown.values.contains(where: { String($0.path.dropFirst()) == top }) || parts.count == 1
        else { throw VFSError(ENOENT) }
        return found.sorted { Array($0.path.utf8).lexicographicallyPrecedes(Array($1.path.utf8)) }
    }

    /// The revision `document` shows (its heads' winner), or nil if none opens with a key this identity holds.
    public func shownRevision(of document: DocumentID) -> ShownRevision? {
        guard let w = try? winner(of: document) else { return nil }
        return ShownRevision(id: w.id, revision: w.revision, metadata: w.metadata, headCount: w.heads.count)
    }
}
