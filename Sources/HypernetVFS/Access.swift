import Glibc
import HypernetModel

// What `/.hypernet/` shows a local user: the kernel's `default_permissions` checks only the attributes of the
// inode it is asked about, but a revision or an event shows a document found elsewhere in the tree, so the VFS
// applies the same POSIX rules to the document's live path itself (docs/security.md, "Local users").

/// The owner, group and mode of one inode, as far as permission checks go.
struct Permission: Sendable, Equatable {
    var uid: UInt32
    var gid: UInt32
    var mode: UInt32

    init(_ m: RevisionMetadata) {
        (uid, gid, mode) = (m.uid, m.gid, m.mode)
    }

    init(_ a: Attributes) {
        (uid, gid, mode) = (a.uid, a.gid, a.mode)
    }
}

/// Who may see a document: the permissions of every directory from the mount root down to it (search), and of
/// the document itself (read), as the tree has them.
struct Visibility: Sendable {
    var directories: [Permission]
    var document: Permission

    /// Whether `caller` could `stat` the document (search permission on every directory above it) and, with
    /// `read`, read it.
    func allows(_ caller: Caller, read: Bool) -> Bool {
        directories.allSatisfy { caller.may(X_OK, $0) } && (!read || caller.may(R_OK, document))
    }
}

extension Caller {
    /// Whether Linux's `generic_permission` (no ACLs) grants `access` (`R_OK`, `X_OK`) on an inode: owner bits
    /// for its owner, group bits for a member of its group, other bits for the rest. Root reads anything and
    /// searches any directory (CAP_DAC_OVERRIDE).
    func may(_ access: Int32, _ p: Permission) -> Bool {
        if uid == 0 { return access & X_OK == 0 || p.mode & S_IFMT == S_IFDIR || p.mode & 0o111 != 0 }
        let bits = UInt32(access & (R_OK | W_OK | X_OK))
        let granted: UInt32
        if uid == p.uid {
            granted = p.mode >> 6
        } else if gid == p.gid || groups.contains(p.gid) {
            granted = p.mode >> 3
        } else {
            granted = p.mode
        }
        return granted & bits == bits
    }

    /// Root, or the user the daemon runs as (who owns the store and can read all of it anyway): the only ones
    /// shown what is no longer in the tree, whose path and so whose reach is unknown.
    var ownsStore: Bool { uid == 0 || uid == getuid() }
}
