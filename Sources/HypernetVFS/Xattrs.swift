import Glibc
import HypernetCrypto
import HypernetModel
import HypernetStore

/// The `user.hypernet.*` names (docs/xattrs.md). Other `user.*` names are stored and versioned;
/// names outside `user.` are refused with ENOTSUP and never stored.
enum HypernetXattr: String, CaseIterable {
    case id = "user.hypernet.id"
    case revision = "user.hypernet.revision"
    case history = "user.hypernet.history"
    case conflicts = "user.hypernet.conflicts"
    case replicas = "user.hypernet.replicas"
    case quorum = "user.hypernet.quorum"
    case rights = "user.hypernet.rights"
    case retention = "user.hypernet.retention"
    case local = "user.hypernet.local"
    case keep = "user.hypernet.keep"

    static let prefix = "user.hypernet."
    /// Write-only (not listed, ENODATA on read): `setfattr -n user.hypernet.resolve -v REV` merges every head.
    static let resolve = "user.hypernet.resolve"
    /// Write-only: `WHO ROLE[,ROLE…]` adds roles, `WHO[ ROLE,…]` removes them (needs admin; a new epoch).
    static let grant = "user.hypernet.grant"
    static let revoke = "user.hypernet.revoke"
}

extension VirtualFileSystem {
    public func getxattr(inode: UInt64, name: String) throws(VFSError) -> [UInt8] {
        guard name.hasPrefix("user.") else { throw VFSError(ENOTSUP) }
        if ForeignTree.contains(inode) { return try foreignXattr(inode, name: name) }
        if VirtualTree.contains(inode) { throw VFSError(ENODATA) }
        if name.hasPrefix(HypernetXattr.prefix) {
            guard let known = HypernetXattr(rawValue: name) else { throw VFSError(ENODATA) }
            return Array(try hypernetValue(known, inode: inode).utf8)
        }
        return try state.withLock { (s) throws(VFSError) in
            let node = try Self.node(inode, in: s)
            guard let value = node.record.metadata.xattrs.value(of: name) else { throw VFSError(ENODATA) }
            return value
        }
    }

    private func hypernetValue(_ name: HypernetXattr, inode: UInt64) throws(VFSError) -> String {
        let (node, quorum, retention) = try state.withLock { (s) throws(VFSError) in
            (
                try Self.node(inode, in: s), Self.quorum(of: inode, in: s, default: configuration.quorum),
                Self.retention(of: inode, in: s)
            )
        }
        switch name {
        case .id: return node.record.id.description
        case .revision: return node.record.head?.hex ?? ""
        case .history:
            return try history(of: node).map { "\($0.revision) \($0.time) \($0.author) \($0.size)\n" }.joined()
        case .conflicts: return try conflicts(of: node).map { "\($0.revision) \($0.time) \($0.author)\n" }.joined()
        case .replicas:
            guard let head = node.record.head else { return "0" }
            do { return "\(try store.replicaCount(head) + 1)" } catch { throw fail(error, "replicas", inode: inode) }
        case .quorum: return "\(quorum)"
        case .rights: return try membership(of: node).text
        case .retention: return "\(retention)"
        case .local: return localBytes((store.keyring.identity.publicKey, node.record.id))
        case .keep: return isKept((store.keyring.identity.publicKey, node.record.id)) ? "1" : "0"
        }
    }

    public func listxattr(inode: UInt64) throws(VFSError) -> [String] {
        if VirtualTree.contains(inode) { return [] }
        return try state.withLock { (s) throws(VFSError) in
            let node = try Self.node(inode, in: s)
            // Only `user.*` names: the metadata also holds `RevisionMetadata.retentionEntry`.
            let stored = node.record.metadata.xattrs.lazy.map(\.name).filter { $0.hasPrefix("user.") }
            // Not `local` and `keep`: on a directory they walk its subtree, which `cp -a` or `getfattr -d` of a
            // large tree would do at every directory.
            return HypernetXattr.allCases.filter { $0 != .local && $0 != .keep }.map(\.rawValue) + stored
        }
    }

    public func setxattr(inode: UInt64, name: String, value: [UInt8], flags: XattrFlags, caller: Caller)
        throws(VFSError)
    {
        guard name.hasPrefix("user.") else { throw VFSError(ENOTSUP) }
        if name == HypernetXattr.keep.rawValue {
            let text = String(decoding: value, as: UTF8.self).trimmingWhitespace()
            guard text == "1" || text == "0" else { throw VFSError(EINVAL) }
            return try setKept(inode: inode, text == "1")
        }
        let rightsChange = name == HypernetXattr.grant || name == HypernetXattr.revoke
        if VirtualTree.contains(inode) && !(ForeignTree.contains(inode) && rightsChange) {
            throw writeError(inode, needs: .write)
        }
        guard name.utf8.count <= RevisionMetadata.maximumXattrName, name.utf8.count > 5 else { throw VFSError(ERANGE) }
        if name == HypernetXattr.resolve {
            let node = try state.withLock { (s) throws(VFSError) in try Self.node(inode, in: s) }
            let revision = String(decoding: value, as: UTF8.self).trimmingWhitespace()
            do { _ = try resolveConflict(node, revision: revision) } catch {
                // Unknown, ambiguous or deleted revision, or a directory: all a bad value here (contract).
                throw [EIO, ENOSPC].contains(error.errno) ? error : VFSError(EINVAL)
            }
            return
        }
        if rightsChange {
            let text = String(decoding: value, as: UTF8.self).trimmingWhitespace()
            return try changeRights(inode: inode, value: text, grant: name == HypernetXattr.grant)
        }
        if name.hasPrefix(HypernetXattr.prefix) {
            let text = String(decoding: value, as: UTF8.self).trimmingWhitespace()
            switch HypernetXattr(rawValue: name) {
            case .quorum?:
                guard let quorum = UInt8(text), quorum >= 1 else { throw VFSError(EINVAL) }
                try changeMetadata(inode) { m throws(VFSError) in m.quorum = quorum }
            case .retention?:
                guard let policy = try? RetentionPolicy(parsing: text) else { throw VFSError(EINVAL) }
                try changeMetadata(inode) { m throws(VFSError) in m.retention = policy }
            default: throw VFSError(EINVAL)
            }
            return
        }
        try changeMetadata(inode) { m throws(VFSError) in
            let exists = m.xattrs.contains(name: name)
            if flags.contains(.create), exists { throw VFSError(EEXIST) }
            if flags.contains(.replace), !exists { throw VFSError(ENODATA) }
            do throws(RevisionMetadata.XattrRefusal) { try m.setXattr(name: name, value: value) } catch {
                switch error {
                case .nameTooLong: throw VFSError(ERANGE)
                case .valueTooBig: throw VFSError(E2BIG)
                case .noSpace: throw VFSError(ENOSPC)
                }
            }
        }
    }

    public func removexattr(inode: UInt64, name: String) throws(VFSError) {
        guard name.hasPrefix("user.") else { throw VFSError(ENOTSUP) }
        if HypernetXattr(rawValue: name) == .keep { return try setKept(inode: inode, false) }
        if VirtualTree.contains(inode) { throw writeError(inode, needs: .write) }
        if HypernetXattr(rawValue: name) == .retention {
            // The policy set here goes; the inherited one applies again.
            return try changeMetadata(inode) { m throws(VFSError) in
                guard m.retention != nil else { throw VFSError(ENODATA) }
                m.retention = nil
            }
        }
        // Computed or write-only, never stored: removing one is a bad write, as setting an unknown one is.
        if name.hasPrefix(HypernetXattr.prefix) { throw VFSError(EINVAL) }
        try changeMetadata(inode) { m throws(VFSError) in
            guard m.removeXattr(name: name) else { throw VFSError(ENODATA) }
        }
    }

    /// Applies `change` to the node's metadata, bumps ctime and commits a revision.
    private func changeMetadata(_ inode: UInt64, _ change: (inout RevisionMetadata) throws(VFSError) -> Void)
        throws(VFSError)
    {
        try state.withLock { (s) throws(VFSError) in
            // Out of the table while it changes: a copy left there would make the change copy the whole xattr list.
            guard var node = s.nodes.removeValue(forKey: inode) else { throw VFSError(ENOENT) }
            defer { s.nodes[inode] = node }
            try change(&node.record.metadata)
            node.touch(modified: false)
            node.metadataChanged = true
        }
        try commit(inode)
    }
}

extension String {
    func trimmingWhitespace() -> String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
            let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })
        else { return "" }
        return String(scalars[first...last])
    }
}
