import Dispatch
import Glibc
import HypernetCrypto
import HypernetFailpoint
import HypernetModel
import HypernetStore
import Synchronization

/// The kernel's caches of names and attributes/pages, which a revision from another node makes stale
/// (FUSE `notify_inval_entry` / `notify_inval_inode`). Called without any VFS lock held.
public protocol KernelCache: Sendable {
    func invalidate(inode: UInt64)
    func invalidate(parent: UInt64, name: String)
}

/// The visible state of a document: its winning head, with every head for directories to merge.
struct Winner {
    var id: RevisionID
    var revision: Revision
    var metadata: RevisionMetadata
    var heads: [RevisionID]
}

extension VirtualFileSystem {
    public func setKernelCache(_ cache: any KernelCache) {
        kernelCache.withLock { $0 = cache }
    }

    /// Revisions of these documents arrived from peers: shows their winning heads in the tree (new files,
    /// changed content, renames, deletions) and tells the kernel what it must forget. A document with a
    /// local change not yet in a revision keeps it; its next revision forks from what it was based on.
    public func applyRemote(_ documents: [DocumentID]) {
        var invalid = Invalidations()
        state.withLock { s in
            // Local changes become revisions first: the placement rules below compare stored listings, and a
            // document's count of names (hard links) comes before the listings naming it, as in the timer's pass.
            commitPendingLocked(&s)
            for inode in s.dirtyDirectories.sorted() {
                do { try commitDirectoryLocked(inode, in: &s) } catch {
                    logger.error("directory revision failed", metadata: ["inode": "\(inode)"])
                }
            }
            var directories: [DocumentID] = []
            var seen = Set<DocumentID>()
            // A delete undone by an edit that arrived after the listing that removed the document: the listing
            // that still names it shows it again.
            var relisted = documents.contains { d in
                guard let record = try? store.document(d), s.nodes[record.inode]?.linked != true else { return false }
                return (try? isUndeleted(d)) ?? false
            }
            for d in documents where seen.insert(d).inserted {
                do {
                    guard let w = try winner(of: d) else { continue }
                    // A directory's tombstone changes what the placement gives it too (a tombstone keeps the mode).
                    if w.revision.kind == .directory || w.metadata.mode & S_IFMT == S_IFDIR {
                        directories.append(d)
                    } else {
                        try applyFile(d, w, in: &s, &invalid)
                        // Names of a document with several: the listings naming it may have come first.
                        relisted = try relisted || hasSeveralNames(d)
                    }
                } catch {
                    logger.error("applying a received revision failed: \(error)", metadata: ["document": "\(d)"])
                }
            }
            if !directories.isEmpty || relisted {
                do {
                    // Where every document shows is decided from the stored listings as a whole, then each
                    // directory received, and each whose shown entries differ from that, is shown anew: the
                    // same tree whatever the order revisions arrived in.
                    // A link made here whose revision the next pass makes: its names stay meanwhile.
                    let linking = Set(
                        s.nodes.values.filter { $0.metadataChanged && !$0.otherNames.isEmpty }.map(\.record.id))
                    invalid.placement = try placement(linking: linking)
                    let unreadable = invalid.placement.unreadable
                    for d in directories + stale(s, invalid.placement) where unreadable[d] == nil {
                        do { try applyDirectory(d, in: &s, &invalid) } catch {
                            logger.error(
                                "applying a received directory failed: \(error)", metadata: ["document": "\(d)"])
                        }
                    }
                    showUnreadable(unreadable, in: &s, &invalid)
                    if !invalid.placement.rescued.isEmpty { markRescued(in: &s) }
                    noteMerged(invalid.placement, in: &s)
                } catch {
                    logger.error("placing received directories failed: \(error)")
                }
            }
            for inode in invalid.removed { Self.dropIfUnreferenced(inode, in: &s) }
        }
        if !invalid.busy.isEmpty {
            // Shown once their content is free (a read or a commit held it), not at the next arrival.
            let busy = invalid.busy
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(5)) { [self] in applyRemote(busy) }
        }
        // The tree shows the change; the kernel forgets what it cached only from here (a stall widens the gap).
        _ = Failpoint.hit("vfs.show")
        guard let cache = kernelCache.withLock({ $0 }) else { return }
        for (parent, name) in invalid.entries { cache.invalidate(parent: parent, name: name) }
        for inode in invalid.inodes { cache.invalidate(inode: inode) }
    }

    struct Invalidations {
        var inodes: Set<UInt64> = []
        var entries: [(UInt64, String)] = []
        /// Directories shown in this pass: each once.
        var applying: Set<DocumentID> = []
        /// Nodes taken out of a directory in this pass; dropped at its end unless shown elsewhere by then (a
        /// directory moved out of another may be the one being shown).
        var removed: [UInt64] = []
        var placement = Placement()
        /// Files whose open content was locked when their revision was to be shown: tried again shortly.
        var busy: [DocumentID] = []
    }

    /// Where each document shows: in the directory listing it with the latest stamp (the directory revision
    /// that decided the entry, by HLC time then id), so that a document listed by two directories after
    /// concurrent moves shows once; a document whose winner has several names (hard links) under every name the
    /// listings give it. Computed from every stored listing, never from what is shown, so every node computes the
    /// same (docs/design.md, "Placement", "Hard links").
    struct Placement {
        /// Per directory document, the entries it shows, every name once.
        var entries: [DocumentID: [DirectoryListing.Entry]] = [:] {
            didSet { names = Self.spots(entries) }
        }
        /// Per document, the names it shows under: (directory document, name) pairs.
        private(set) var names: [DocumentID: Set<Spot>] = [:]
        /// Directories moved to the root to break a cycle; the root's next revision records them there.
        var rescued: [DocumentID] = []
        /// Per directory shown, the same-named directories merged into it, with the heads whose merge showed.
        var merged: [DocumentID: [DocumentID: [RevisionID]]] = [:]
        /// Directories a listing of which cannot be read (a damaged chunk), with the error: they keep what they show.
        var unreadable: [DocumentID: String] = [:]

        init(
            entries: [DocumentID: [DirectoryListing.Entry]] = [:], rescued: [DocumentID] = [],
            merged: [DocumentID: [DocumentID: [RevisionID]]] = [:]
        ) {
            self.entries = entries
            self.rescued = rescued
            self.merged = merged
            names = Self.spots(entries)
        }

        /// One name of a document: its directory's document and the name's bytes.
        struct Spot: Hashable {
            var directory: DocumentID
            var name: [UInt8]
        }

        func shows(_ document: DocumentID, in directory: DocumentID, as name: String) -> Bool {
            names[document]?.contains(Spot(directory: directory, name: Array(name.utf8))) ?? false
        }

        private static func spots(_ entries: [DocumentID: [DirectoryListing.Entry]]) -> [DocumentID: Set<Spot>] {
            var out: [DocumentID: Set<Spot>] = [:]
            for (directory, list) in entries {
                for e in list {
                    out[e.document, default: []].insert(Spot(directory: directory, name: Array(e.name.utf8)))
                }
            }
            return out
        }
    }

    /// `linking`: documents with several names whose revision saying so is not made yet.
    func placement(linking: Set<DocumentID> = []) throws -> Placement {
        var times: [RevisionID: HLCTime] = [:]
        func order(_ id: RevisionID) throws -> (HLCTime, RevisionID) {
            if let t = times[id] { return (t, id) }
            let t = try store.revision(id).revision.time
            times[id] = t
            return (t, id)
        }
        let root = store.rootDocument
        var spots: [DocumentID: (directory: DocumentID, entry: DirectoryListing.Entry, stamp: RevisionID)] = [:]
        var heads: [DocumentID: [RevisionID]] = [:]
        // Every name listed for a document named more than once: kept when its winner says it has several.
        var listed: [DocumentID: [(directory: DocumentID, entry: DirectoryListing.Entry)]] = [:]
        var unreadable: [DocumentID: String] = [:]
        for d in try store.directoryDocuments() {
            // One directory whose listing cannot be read (until its chunk is repaired from a peer) is left as it
            // shows; the others are placed.
            do {
                guard let w = try winner(of: d), w.revision.kind == .directory else { continue }
                let listing = try mergedListing(w)
                heads[d] = w.heads
                for (entry, stamp) in listing where entry.document != root {
                    listed[entry.document, default: []].append((d, entry))
                    // Stamps are revisions of the listing directory: two directories never tie.
                    if let other = spots[entry.document], try order(other.stamp) > order(stamp) { continue }
                    spots[entry.document] = (d, entry, stamp)
                }
            } catch {
                unreadable[d] = "\(error)"
            }
        }
        // Directories have one name: one listed twice was moved concurrently.
        let links = try listed.filter { $0.value.count > 1 && $0.value[0].entry.kind != .directory }.filter {
            try linking.contains($0.key) || hasSeveralNames($0.key)
        }
        try keptAgainstDeletes(&spots, &unreadable)
        // Concurrent moves that form a cycle (x into y, y into x): the root reaches none of it. The edge with the
        // oldest stamp gives way; its directory shows at the root.
        var cuts: [DocumentID] = []
        var visited: Set<DocumentID> = []
        for start in spots.keys {
            var path: [DocumentID] = []
            var current = start
            while visited.insert(current).inserted, let spot = spots[current] {
                path.append(current)
                current = spot.directory
            }
            if let i = path.firstIndex(of: current) {
                cuts.append(try path[i...].min { try order(spots[$0]!.stamp) < order(spots[$1]!.stamp) }!)
            }
        }
        var taken = Set(spots.values.filter { $0.directory == root }.map { Array($0.entry.name.utf8) })
        for cut in cuts.sorted(by: { $0.bytes.lexicographicallyPrecedes($1.bytes) }) {
            var entry = spots[cut]!.entry
            if !taken.insert(Array(entry.name.utf8)).inserted {
                entry.name = DirectoryMerge.conflictName(entry.name, cut)
            }
            spots[cut] = (root, entry, spots[cut]!.stamp)
        }
        var entries: [DocumentID: [DirectoryListing.Entry]] = [:]
        for (document, spot) in spots where links[document] == nil {
            entries[spot.directory, default: []].append(spot.entry)
        }
        for name in links.values.joined() { entries[name.directory, default: []].append(name.entry) }
        let same = DirectoryMerge.sameNamed(root: root, entries: entries)
        // A loser already deleted (shown again for what was kept in it) needs no tombstone: it has no heads here.
        let merged = same.merged.mapValues { losers in
            Dictionary(uniqueKeysWithValues: losers.compactMap { l in heads[l].map { (l, $0) } })
        }
        // Entries placed from several listings (a kept document's latest, a merged directory's) may share a name.
        var placement = Placement(
            entries: same.entries.mapValues(DirectoryMerge.names), rescued: cuts, merged: merged)
        placement.unreadable = unreadable
        return placement
    }

    /// Places documents kept against a concurrent delete (`isUndeleted`) that no current listing names, as when
    /// their directory was deleted too: each where the latest stored listing naming it put it. A deleted
    /// directory that so shows one is shown again, placed the same way, up to a directory that is not deleted.
    private func keptAgainstDeletes(
        _ spots: inout [DocumentID: (directory: DocumentID, entry: DirectoryListing.Entry, stamp: RevisionID)],
        _ unreadable: inout [DocumentID: String]
    ) throws {
        var pending = Set(try store.forkedDeletes().filter { try spots[$0] == nil && isUndeleted($0) })
        guard !pending.isEmpty else { return }
        let revisions = try store.directoryRevisions()
        var listings: [RevisionID: DirectoryListing] = [:]
        var homes: Set<DocumentID> = []
        while !pending.isEmpty {
            var found: Set<DocumentID> = []
            // Newest first: the first listing naming a document is the latest.
            for (id, directory) in revisions where !pending.isEmpty {
                let listing: DirectoryListing
                do { listing = try listings[id] ?? self.listing(of: id) } catch {
                    unreadable[directory] = "\(error)"
                    continue
                }
                listings[id] = listing
                for entry in listing.entries where pending.remove(entry.document) != nil {
                    spots[entry.document] = (directory, entry, id)
                    found.insert(directory)
                }
            }
            found.subtract(homes)
            homes.formUnion(found)
            pending = try found.filter { try spots[$0] == nil && winner(of: $0)?.revision.kind == .tombstone }
        }
    }

    /// Whether a head of `document` was written with several names: its listings then name it on purpose (a link
    /// made concurrently with another change of the document counts, whichever head wins).
    private func hasSeveralNames(_ document: DocumentID) throws -> Bool {
        try store.heads(of: document).contains { try store.revision($0).metadata.links > 1 }
    }

    /// Directories whose listing cannot be read give `EIO` until it can (docs/errno.md), each logged as it becomes
    /// so; those readable again answer as before.
    private func showUnreadable(_ unreadable: [DocumentID: String], in s: inout State, _ invalid: inout Invalidations) {
        var inodes: Set<UInt64> = []
        for (d, why) in unreadable {
            guard let inode = try? store.document(d)?.inode, s.nodes[inode] != nil else { continue }
            inodes.insert(inode)
            if !s.unreadable.contains(inode) {
                logger.warning("directory inode \(inode): a listing cannot be read (\(why)): EIO until it is repaired")
            }
        }
        invalid.inodes.formUnion(inodes.symmetricDifference(s.unreadable))
        s.unreadable = inodes
    }

    /// Damaged chunks were repaired from a peer: every directory is placed again, those that could not be read too.
    public func applyRepaired() {
        applyRemote([store.rootDocument])
    }

    /// The shown directories whose entries differ from `placement`'s.
    private func stale(_ s: State, _ placement: Placement) -> [DocumentID] {
        s.nodes.values.filter { $0.isDirectory && $0.linked }.compactMap { dir in
            let wanted = placement.entries[dir.record.id] ?? []
            let same =
                wanted.count == dir.children.count
                && wanted.allSatisfy { e in dir.children[e.name].flatMap { s.nodes[$0]?.record.id } == e.document }
            return same ? nil : dir.record.id
        }
    }

    func winner(of document: DocumentID) throws(StoreError) -> Winner? {
        let heads = try store.heads(of: document)
        var best: (node: RevisionGraph.Node, winner: Winner)?
        for h in heads {
            let (revision, metadata) = try store.revision(h)
            let node = RevisionGraph.Node(
                id: h, parents: revision.parents, time: revision.time, isTombstone: revision.kind == .tombstone)
            if best.map({ RevisionGraph.winsOver(node, $0.node) }) ?? true {
                best = (node, Winner(id: h, revision: revision, metadata: metadata, heads: heads))
            }
        }
        return best?.winner
    }

    private func applyFile(_ document: DocumentID, _ w: Winner, in s: inout State, _ invalid: inout Invalidations)
        throws
    {
        guard let record = try store.document(document) else { return }  // its directory's listing brings it in
        guard var node = s.nodes[record.inode] else {
            // Not in the tree (removed here): the catalog row follows, so a later listing shows it current.
            guard !record.dirty, record.head != w.id else { return }
            try store.transaction { tx in try tx.updateDocument(Self.record(record, showing: w)) }
            return
        }
        guard node.record.head != w.id, !node.record.dirty, !node.metadataChanged else { return }
        if let content = node.content {
            // Lock order forbids waiting for the content lock here; a busy content is being committed.
            let refreshed = content.state.withLockIfAvailable { c -> Bool in
                guard !c.modified else { return false }
                guard let tree = try? store.loadManifest(w.metadata.content) else { return false }
                content.committed(&c, tree: tree)
                c.size = tree.length
                return true
            }
            guard let refreshed else { return invalid.busy.append(document) }
            // Unsaved local writes stay; their revision forks from what they were based on.
            guard refreshed else { return }
        }
        node.record = Self.record(node.record, showing: w)
        node.stagedHoleBytes = nil
        if w.revision.kind != .tombstone, w.revision.kind != node.record.kind {
            node.record.kind = w.revision.kind
            // The parent's next listing names the new kind: its stored page is out of date.
            if node.linked { s.nodes[node.parent]?.children.changed(node.name) }
        }
        let updated = node.record
        try store.transaction { tx in try tx.updateDocument(updated) }
        s.nodes[node.inode] = node
        invalid.inodes.insert(node.inode)
    }

    static func record(_ record: DocumentRecord, showing w: Winner) -> DocumentRecord {
        var r = record
        r.head = w.id
        r.metadata = w.metadata
        r.dirty = false
        return r
    }

    /// Shows directory `document`, then each directory it shows for the first time, and so on down: a worklist,
    /// not recursion, so a tree of any depth costs no stack (a chain of thousands of directories from a peer).
    private func applyDirectory(_ document: DocumentID, in s: inout State, _ invalid: inout Invalidations) throws {
        var pending = [document]
        while let next = pending.popLast() { try showDirectory(next, in: &s, &invalid, then: &pending) }
    }

    /// Shows in directory `document` the entries `invalid.placement` gives it: the merge of every head's listing,
    /// less documents placed elsewhere, plus directories rescued from a cycle at the root. Directories it links
    /// that are to be filled go to `pending`.
    private func showDirectory(
        _ document: DocumentID, in s: inout State, _ invalid: inout Invalidations, then pending: inout [DocumentID]
    ) throws {
        guard invalid.applying.insert(document).inserted else { return }
        guard let record = try store.document(document), s.nodes[record.inode] != nil else { return }
        let inode = record.inode
        // A directory whose winner is a tombstone shows only what the placement still gives it.
        guard let w = try winner(of: document), s.nodes[inode]?.isDirectory == true else { return }
        let shown = invalid.placement.entries[document] ?? []
        // Entries that changed: removed or pointing at another document. The directory changes in place
        // (`s.nodes[inode]!…`): changing a copy would copy all its entries per entry.
        let wanted = Dictionary(shown.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for (name, child) in s.nodes[inode]!.children.sorted where wanted[name]?.document != s.nodes[child]?.record.id {
            s.nodes[inode]!.children.removeValue(forKey: name)
            if var c = s.nodes[child], c.names.contains(Link(parent: inode, name: name)) {
                if c.isDirectory { s.nodes[inode]!.subdirectories -= 1 }
                if c.otherNames.isEmpty {
                    c.linked = false
                    if try winner(of: c.record.id)?.revision.kind == .tombstone { c.record.kind = .tombstone }
                    invalid.removed.append(child)
                } else {
                    c.rename(Link(parent: inode, name: name), to: nil)
                    invalid.inodes.insert(child)
                }
                s.nodes[child] = c
            }
            let gone = s.nodes[child]?.record
            try store.transaction { tx in
                try tx.removeEntry(parent: inode, name: name)
                if let gone, gone.kind == .tombstone { try tx.updateDocument(gone) }
            }
            invalid.entries.append((inode, name))
        }
        for entry in shown where s.nodes[inode]!.children[entry.name] == nil {
            let child = try linkDocument(entry, into: inode, in: &s, &invalid, then: &pending)
            s.nodes[inode]!.children[entry.name] = child
            if s.nodes[child]!.isDirectory { s.nodes[inode]!.subdirectories += 1 }
            invalid.entries.append((inode, entry.name))
        }
        let merged = try Self.buildingOn(w.heads, store: store)
        var updated = Self.record(s.nodes[inode]!.record, showing: w)
        updated.metadata.size = UInt64(DirectoryListing(entries: shown).encoded().count)
        try store.transaction { [updated] tx in try tx.updateDocument(updated) }
        s.nodes[inode]!.mergedHeads = merged
        s.nodes[inode]!.record = updated
        invalid.inodes.insert(inode)
    }

    /// The listing of the winner, or the three-way merge of every head's listing against their base; with each
    /// entry, the directory revision that decided it (the entry's stamp: later stamps win placements).
    func mergedListing(_ w: Winner) throws -> [(entry: DirectoryListing.Entry, stamp: RevisionID)] {
        guard w.heads.count > 1 else {
            // A delete in this revision that lost to a concurrent edit elsewhere: the document stays.
            let entries = try listing(of: w.id).entries
            let listed = Set(entries.map(\.document))
            var names = Set(entries.map(\.name))
            var kept: [DirectoryListing.Entry] = []
            for parent in w.revision.parents {
                for e in try listing(of: parent).entries where !listed.contains(e.document) && !names.contains(e.name) {
                    if try isUndeleted(e.document) {
                        kept.append(e)
                        names.insert(e.name)
                    }
                }
            }
            return (entries + kept).map { ($0, w.id) }
        }
        let graph = RevisionGraph(
            try store.revisions(of: w.revision.document).map {
                RevisionGraph.Node(id: $0.id, parents: $0.parents, time: $0.time)
            })
        let baseID = graph.mergeBase(of: w.heads)
        let base = try baseID.map(listing(of:))
        let order = graph.ordered(w.heads)
        let heads = try order.map(headListing)
        // Documents some head lists and another does not: removed there, by a move or by a delete.
        let listed = heads.map { Set($0.entries.map(\.document)) }
        let disputed = listed.reduce(Set<DocumentID>()) { $0.union($1) }.subtracting(
            listed.dropFirst().reduce(listed[0]) { $0.intersection($1) })
        let undeleted = try Set(disputed.filter(isUndeleted))
        return DirectoryMerge.placements(base: base, heads: heads, undeleted: undeleted).map { p in
            (p.entry, p.head.map { order[$0] } ?? baseID ?? w.id)
        }
    }

    /// What a head of a directory lists, for its merge. A tombstone among live heads is the directory's own delete,
    /// which lost: it removed what was deleted with it, not what lives on (edited, or resolved since), so it counts
    /// as what it built on less the documents whose winner is a tombstone.
    private func headListing(_ id: RevisionID) throws -> DirectoryListing {
        let revision = try store.revision(id).revision
        guard revision.kind == .tombstone else { return try listing(of: id) }
        var seen = Set<DocumentID>()
        return DirectoryListing(
            entries: try revision.parents.flatMap { try listing(of: $0).entries }.filter {
                try seen.insert($0.document).inserted && winner(of: $0.document)?.revision.kind != .tombstone
            })
    }

    /// The entries a revision lists: none for a tombstone.
    func listing(of id: RevisionID) throws -> DirectoryListing {
        let (revision, metadata) = try store.revision(id)
        guard revision.kind == .directory else { return DirectoryListing(entries: []) }
        var listing = try DirectoryListing(decoding: store.readContent(metadata.content))
        listing.entries = shownEntries(listing, of: id)
        return listing
    }

    /// The entries of directory revision `id` this node may show: those whose names a file can have. A writer's
    /// modified node can list any name (`..`, `a/b`, empty); the others are left out, logged once per revision.
    func shownEntries(_ listing: DirectoryListing, of id: RevisionID) -> [DirectoryListing.Entry] {
        guard !listing.entries.allSatisfy({ FileName.isValid($0.name) }) else { return listing.entries }
        let shown = listing.entries.filter { FileName.isValid($0.name) }
        if invalidListings.withLock({ $0.insert(id).inserted }) {
            let left = listing.entries.count - shown.count
            logger.warning("directory revision \(id.hex) lists \(left) names no file may have: left out")
        }
        return shown
    }

    /// What the next revision of a directory showing the merge of `heads` builds on: its live heads, or, for a
    /// directory shown after its delete (every head a tombstone), what the tombstones built on. So the delete stays a
    /// head and the directory stays kept against it; a revision over the tombstone would end that, and a listing's
    /// removal of its entry (the delete's) would then win: the directory, and what was written in it, would vanish.
    static func buildingOn(_ heads: [RevisionID], store: Store) throws(StoreError) -> [RevisionID] {
        let revisions = try heads.map { (id) throws(StoreError) in try store.revision(id).revision }
        let live = zip(heads, revisions).filter { $0.1.kind != .tombstone }.map(\.0)
        return live.isEmpty ? Array(Set(revisions.flatMap(\.parents))) : live
    }

    /// Whether `document`'s delete lost to a concurrent change: its winner is not a tombstone, another head is.
    func isUndeleted(_ document: DocumentID) throws -> Bool {
        guard let w = try winner(of: document), w.revision.kind != .tombstone, w.heads.count > 1 else { return false }
        return try w.heads.contains { try store.revision($0).revision.kind == .tombstone }
    }

    /// The inode showing `entry`'s document under `parent`: an existing one moved here, or a new row
    /// (showing its winner, or empty until its first revision arrives).
    private func linkDocument(
        _ entry: DirectoryListing.Entry, into parent: UInt64, in s: inout State, _ invalid: inout Invalidations,
        then pending: inout [DocumentID]
    ) throws -> UInt64 {
        let w = try winner(of: entry.document)
        var record: DocumentRecord
        if let existing = try store.document(entry.document) {
            record = existing
            if let w, !existing.dirty { record = Self.record(existing, showing: w) }
        } else {
            let metadata = w?.metadata ?? RevisionMetadata.new(mode: Self.defaultMode(entry.kind), uid: 0, gid: 0)
            let inode = try store.transaction { tx in
                try tx.insertDocument(
                    id: entry.document, kind: entry.kind, metadata: metadata, dirty: false,
                    rights: w?.revision.rights ?? s.nodes[parent].flatMap { try tx.rightsForChildren(of: $0.record.id) }
                )
            }
            record = DocumentRecord(
                inode: inode, id: entry.document, kind: entry.kind, head: w?.id, metadata: metadata,
                atimeSeconds: metadata.mtimeSeconds, atimeNanoseconds: metadata.mtimeNanoseconds, dirty: false)
        }
        if let k = w?.revision.kind, k != .tombstone {
            record.kind = k
        } else if record.kind == .tombstone {
            record.kind = entry.kind
        }
        let fresh = s.nodes[record.inode] == nil
        var node = s.nodes[record.inode] ?? Node(record: record, parent: parent, name: entry.name)
        // Its names elsewhere that the placement no longer gives it go (a move); the others stay (hard links).
        let here = Link(parent: parent, name: entry.name)
        var kept: [Link] = []
        for old in node.names where old != here {
            if let dir = s.nodes[old.parent], invalid.placement.shows(entry.document, in: dir.record.id, as: old.name) {
                kept.append(old)
            } else {
                unlinkMoved(node, old, in: &s, &invalid)
                try store.transaction { tx in try tx.removeEntry(parent: old.parent, name: old.name) }
            }
        }
        let first = kept.first ?? here
        node.record = record
        node.parent = first.parent
        node.name = first.name
        node.otherNames = Array(kept.dropFirst()) + (kept.isEmpty ? [] : [here])
        node.linked = true
        invalid.inodes.insert(record.inode)
        let shown = record
        try store.transaction { tx in
            try tx.updateDocument(shown)
            try tx.setEntry(parent: parent, name: entry.name, child: shown.inode)
        }
        s.nodes[record.inode] = node
        // A directory not shown yet when this pass reached it has no entries: fill it next.
        if fresh { invalid.applying.remove(entry.document) }
        if node.isDirectory, w != nil { pending.append(entry.document) }
        return record.inode
    }

    /// Takes the name `link` of `node` out of its directory (that directory's own revision may not have arrived yet).
    private func unlinkMoved(_ node: Node, _ link: Link, in s: inout State, _ invalid: inout Invalidations) {
        guard s.nodes[link.parent]?.children[link.name] == node.inode else { return }
        s.nodes[link.parent]!.children.removeValue(forKey: link.name)
        if node.isDirectory { s.nodes[link.parent]!.subdirectories -= 1 }
        invalid.entries.append((link.parent, link.name))
        invalid.inodes.insert(link.parent)
    }

    /// Records on each shown directory the same-named directories merged into it: the next directory revision
    /// this node writes makes them one in the stored revisions too (`commitMerges`).
    private func noteMerged(_ placement: Placement, in s: inout State) {
        for inode in s.merging { s.nodes[inode]?.mergedDirectories = [:] }
        s.merging = []
        for (survivor, losers) in placement.merged where !losers.isEmpty {
            guard let inode = try? store.document(survivor)?.inode, s.nodes[inode]?.linked == true else { continue }
            s.nodes[inode]!.mergedDirectories = losers
            s.merging.insert(inode)
        }
    }

    /// Ends directories merged into a survivor whose revision now lists their entries (or which was removed,
    /// empty): a tombstone over the heads whose merge showed, so a later write into one elsewhere, concurrent
    /// with it, brings it back, to merge again (docs/design.md, "Same-named directories").
    func endMerged(_ losers: [DocumentID: [RevisionID]], in s: inout State) throws(VFSError) {
        for (loser, heads) in losers.sorted(by: { $0.key.bytes.lexicographicallyPrecedes($1.key.bytes) }) {
            do {
                guard let w = try winner(of: loser) else { continue }
                let existing = try store.document(loser)
                let record = try store.transaction { tx in
                    // Its revision is sealed under the chain the document's row names: a loser never shown here
                    // gets the row its winner states.
                    var record =
                        try existing
                        ?? DocumentRecord(
                            inode: tx.insertDocument(
                                id: loser, kind: .directory, metadata: w.metadata, dirty: false,
                                rights: w.revision.rights),
                            id: loser, kind: .directory, head: w.id, metadata: w.metadata,
                            atimeSeconds: w.metadata.mtimeSeconds, atimeNanoseconds: w.metadata.mtimeNanoseconds,
                            dirty: false)
                    record.head = try tx.appendRevision(
                        document: loser, kind: .tombstone, metadata: w.metadata, parents: heads.sorted())
                    record.kind = .tombstone
                    try tx.updateDocument(record)
                    return record
                }
                if s.nodes[record.inode] != nil { s.nodes[record.inode]!.record = record }
            } catch {
                throw fail(error, "ending a merged directory")
            }
        }
    }

    /// The root shows directories rescued from a cycle: its next revision records them there, with a stamp later
    /// than the cycle's, which ends the cycle in the stored listings too.
    private func markRescued(in s: inout State) {
        s.nodes[Self.rootInode]!.record.dirty = true
        s.dirtyDirectories.insert(Self.rootInode)
    }

    static func defaultMode(_ kind: RevisionKind) -> UInt32 {
        switch kind {
        case .directory: S_IFDIR | 0o755
        case .symlink: S_IFLNK | 0o777
        default: S_IFREG | 0o644
        }
    }
}
