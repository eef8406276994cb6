import HypernetModel
import HypernetStore

/// Saves that rename the original away and write the file anew (vim's and emacs's backup by rename, JetBrains'
/// safe write): the new file continues the original's document (docs/design.md, "Saves that rename the
/// original away"). What is remembered: for `window`, the directory and name a regular file left for a backup
/// name of it. In memory only: after a restart such a save makes a new document, as before.
struct RenamedAway {
    static let window: Duration = .seconds(2)

    private struct Place: Hashable {
        var parent: UInt64
        var name: String
    }

    private var departures: [Place: (inode: UInt64, at: ContinuousClock.Instant)] = [:]
    /// Expired departures are dropped at most once a window, so renaming many files costs O(1) each.
    private var pruned = ContinuousClock.now

    /// A backup name of `name`: longer, and holding it (`f~`, `f.bak`, `f___jb_old___`, `#dir#f~`).
    static func isBackupName(_ newName: String, of name: String) -> Bool {
        newName.count > name.count && newName.contains(name)
    }

    /// Regular file `inode` left `parent/name` for a backup name of it.
    mutating func note(_ inode: UInt64, left parent: UInt64, name: String) {
        let now = ContinuousClock.now
        if now - pruned >= Self.window {
            departures = departures.filter { now - $0.value.at < Self.window }
            pruned = now
        }
        departures[Place(parent: parent, name: name)] = (inode, now)
    }

    /// The file that left `parent/name` within the window; asking forgets it.
    mutating func take(parent: UInt64, name: String) -> UInt64? {
        guard let d = departures.removeValue(forKey: Place(parent: parent, name: name)),
            ContinuousClock.now - d.at < Self.window
        else { return nil }
        return d.inode
    }
}

extension VirtualFileSystem {
    /// Regular file `inode` has just arrived at `parent/name` (created, or renamed to the free name). If a regular
    /// file left that name for a backup name within `RenamedAway.window` and is still linked, `inode` continues
    /// its document: it takes its id, head and chain (its next revision is the document's next), and the
    /// renamed-away file becomes a new document whose first revision the next pass (or its commit) makes.
    /// `inode`'s own document, if it has revisions (a temporary file renamed there), ends in a tombstone, as the
    /// source's does in a rename-over. Returns the catalog work for the caller's transaction, or nil.
    func continuationLocked(at parent: UInt64, _ name: String, by inode: UInt64, in s: inout State)
        -> ((StoreTransaction) throws -> Void)?
    {
        guard let away = s.renamedAway.take(parent: parent, name: name), away != inode,
            var original = s.nodes[away], original.linked, original.kind == .file,
            var successor = s.nodes[inode], successor.kind == .file
        else { return nil }
        let own = successor.record
        let fresh = DocumentID.random()
        successor.record.id = original.record.id
        successor.record.head = original.record.head
        successor.record.dirty = true
        successor.metadataChanged = true
        original.record.id = fresh
        original.record.head = nil
        original.record.dirty = true
        original.metadataChanged = true
        s.nodes[inode] = successor
        s.nodes[away] = original
        // An open file's first revision comes with its commit.
        if original.content == nil { s.pendingRevisions.insert(away) }
        s.dirtyDirectories.formUnion([original.parent, parent])
        return { tx in
            if let head = own.head {
                _ = try tx.appendRevision(document: own.id, kind: .tombstone, metadata: own.metadata, parents: [head])
            }
            try tx.handOverDocument(of: away, to: inode, renamingTo: fresh)
        }
    }
}
