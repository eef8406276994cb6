import Dispatch
import Foundation
import GRDB
import Glibc
import HypernetCrypto
import HypernetFailpoint
import HypernetModel
import Logging
import Synchronization

/// The current state of one document as the catalog keeps it (a materialized view of its visible head
/// plus local changes not yet in a revision).
public struct DocumentRecord: Sendable {
    public var inode: UInt64
    public var id: DocumentID
    public var kind: RevisionKind
    public var head: RevisionID?
    public var metadata: RevisionMetadata
    public var atimeSeconds: Int64
    public var atimeNanoseconds: UInt32
    /// The directory listing changed since `head` (a directory revision is due).
    public var dirty: Bool

    public init(
        inode: UInt64, id: DocumentID, kind: RevisionKind, head: RevisionID?, metadata: RevisionMetadata,
        atimeSeconds: Int64, atimeNanoseconds: UInt32, dirty: Bool
    ) {
        self.inode = inode
        self.id = id
        self.kind = kind
        self.head = head
        self.metadata = metadata
        self.atimeSeconds = atimeSeconds
        self.atimeNanoseconds = atimeNanoseconds
        self.dirty = dirty
    }
}

public struct EntryRecord: Sendable {
    public var parent: UInt64
    public var name: String
    public var child: UInt64
}

/// One revision as `hypernet log` shows it.
public struct RevisionSummary: Sendable {
    public var id: RevisionID
    public var time: HLCTime
    public var kind: RevisionKind
    public var size: UInt64
    public var author: SigningPublicKey
    public var parents: [RevisionID]
    public var isHead: Bool
    /// Made invalid by a permission block this node learnt after storing it: not in the view, not served.
    public var isRefused = false
    /// Its content was released by the retention policy (docs/design.md, "Retention decisions"): the record stays.
    public var isReleased = false
}

/// A document's content as an ordered chunk list plus the manifest nodes that describe it. Keeping the
/// nodes lets the next revision reuse every leaf whose chunks did not change, and store a changed node as a
/// delta against the node at its position.
public struct ManifestTree: Sendable {
    public private(set) var chunks: [ChunkReference]
    public private(set) var root: ManifestReference?
    /// The nodes of each level in order, leaves first (one leaf per `ManifestNode.fanout` chunks); the last
    /// level holds the root alone.
    private(set) var levels: [[ChunkReference]]

    public static let empty = ManifestTree(chunks: [], root: nil, levels: [])
    public var length: UInt64 { root?.node.length ?? 0 }
    fileprivate var leaves: [ChunkReference] { levels.first ?? [] }

    /// The node at `index` of `level`, if this tree has one: the delta base for the node replacing it (one
    /// base: a leaf shifted by an insertion lacks one 72-byte reference of its neighbour, too little to name it).
    fileprivate func nodes(level: Int, index: Int) -> [ChunkReference] {
        level < levels.count && index < levels[level].count ? [levels[level][index]] : []
    }
}

/// A node's durable local state: the SQLite catalog and the chunk packs under `Home.storeDirectory`.
public final class Store: Sendable {
    public let home: Home
    public let keyring: Keyring
    let catalog: Catalog
    let packs: PackStore
    private let cache = Mutex(ChunkCache(capacity: 96))
    /// The tree of the xattr list written last: the next set on that document need not load it
    /// (`writeXattrList`).
    private let lastXattrList = Mutex<ManifestTree?>(nil)
    /// Chunk locations already looked up: a sequential read would otherwise query SQLite per chunk.
    /// A repaired chunk's new record is remembered as it is appended, and the packs send a record that compaction
    /// moved to its copy, so an entry is stale only when it names a record compaction dropped: `record(of:)` then
    /// looks the chunk up again. The map is simply dropped when it grows large.
    let locations = Mutex<[ChunkID: ChunkLocation]>([:])
    private static let maximumCachedLocations = 1 << 18
    private let clock: Mutex<HybridLogicalClock>
    let logger: Logger
    private let observers = Mutex<[@Sendable ([AddedRevision]) -> Void]>([])
    private let durableObservers = Mutex<[@Sendable ([RevisionID]) -> Void]>([])
    /// Chunks whose stored record failed verification, until a peer's copy replaces it (`Store+Repair.swift`).
    let damaged = Mutex<Set<ChunkID>>([])
    let damageObservers = Mutex<[@Sendable () -> Void]>([])
    let repairObservers = Mutex<[@Sendable () -> Void]>([])
    /// Fetches absent chunks from peers (`Store+Demand.swift`); nil until the sync node starts.
    let contentSource = Mutex<(@Sendable ([ChunkID]) -> [ChunkLocation])?>(nil)
    /// The chunks fetched on demand, within `--cache-size`; nil until `setCacheBound` (nothing is evicted).
    let contentCache = Mutex<ContentCache?>(nil)
    /// What `hypernet status` shows of the cache, since the daemon started.
    let cacheCounters = Mutex(CacheCounters())
    /// Revisions made here and committed since the last sync began: the next sync makes them durable.
    private let unsyncedLocal = Mutex<[RevisionID]>([])
    private static let maximumUnsyncedLocal = 100_000
    /// Epoch keys opened from permission blocks.
    let epochKeys = EpochKeyCache()
    /// Identities named in stored blocks, by signing key (`authorName`).
    let identities = Mutex<[SigningPublicKey: IdentityToken]>([:])
    /// Remote nodes known to hold each revision durably, and the fsyncs waiting on them.
    let replicas = ReplicaTracker()
    /// Writes the catalog rows of recorded replicas, in the order they were recorded.
    let replicaRows = DispatchQueue(label: "hypernet.store.replicas")
    /// This store's log identity: a peer's position in our log is valid only for the same `storeID`.
    public let storeID: String
    /// The seq up to which the log may be sent to peers: durably recorded past every seq sent (`publish`).
    let publishable: Mutex<Int64>
    /// Set by the first sync that failed, for the life of this process: a later sync's success would prove
    /// nothing (Linux may have dropped the pages the failed one did not write, and clears the error), so every
    /// later sync and checkpoint fails too, and nothing more is acknowledged until the store is opened again.
    let syncFailed = Atomic<Bool>(false)
    /// What writes in flight reference without appending it, kept by a release (`Store+Retention.swift`).
    let inFlight = Mutex(InFlight())
    /// One garbage collection pass at a time (`collectGarbage`); `stopCollecting` ends a running one early.
    let collecting = Mutex(())
    let stopCollecting = Atomic<Bool>(false)
    /// `--max-store-size` in bytes; 0: no limit (`admit`).
    let maximumSize = Atomic<Int64>(0)
    /// Set by the first write that found the disk full, cleared by the next commit: a full disk is logged once,
    /// not at each retry of the once-a-second passes.
    let full = Atomic<Bool>(false)

    /// Opens the store of `home`, creating it if missing.
    public init(home: Home, keyring: Keyring, logger: Logger) throws(StoreError) {
        self.home = home
        self.keyring = keyring
        self.logger = logger
        try Home.makeDirectory(home.storeDirectory)
        for path in try home.makePrivate() {
            logger.notice("made private: it was readable by group or others", metadata: ["path": "\(path)"])
        }
        catalog = try Catalog(path: home.catalogPath)
        packs = try PackStore(directory: home.packsDirectory)
        if let damaged = packs.damagedLast {
            logger.error(
                "corrupt pack \(packs.path(of: damaged)): bad header; its chunks read as corrupt, new ones go to the next"
            )
        }
        let last = try catalog.read { db in try Int64.fetchOne(db, sql: "SELECT MAX(time) FROM revisions") ?? 0 }
        clock = Mutex(HybridLogicalClock(last: HLCTime(rawValue: UInt64(bitPattern: last))))
        storeID =
            try catalog.read { db in try String.fetchOne(db, sql: "SELECT value FROM settings WHERE key = 'store-id'") }
            ?? ""
        publishable = Mutex(try Self.openLog(catalog))
    }

    /// `body` runs after each committed transaction that added revisions (on the committing thread).
    public func observeRevisions(_ body: @escaping @Sendable ([AddedRevision]) -> Void) {
        observers.withLock { $0.append(body) }
    }

    /// `body` runs after each sync that made revisions made here durable, with their ids (on the syncing thread).
    public func observeDurableLocalRevisions(_ body: @escaping @Sendable ([RevisionID]) -> Void) {
        durableObservers.withLock { $0.append(body) }
    }

    func notify(_ added: [AddedRevision]) {
        let local = added.filter(\.isLocal).map(\.id)
        if !local.isEmpty {
            // Bounded: past the limit the oldest go unannounced (peers still learn of them from echoes).
            unsyncedLocal.withLock { u in
                u += local
                if u.count > Self.maximumUnsyncedLocal { u.removeFirst(u.count - Self.maximumUnsyncedLocal) }
            }
        }
        for o in observers.withLock({ $0 }) { o(added) }
    }

    /// A time seen on a received revision: local times made after it are later.
    func observe(_ time: HLCTime) {
        clock.withLock { $0.observe(time) }
    }

    /// The root directory document of this node's identity's tree.
    public var rootDocument: DocumentID { DocumentID.root(of: keyring.identity.publicKey) }

    /// How an author is shown: its identity token if known (ours, or a member of a stored permission block),
    /// else its signing key.
    public func authorName(_ key: SigningPublicKey) -> String {
        if key == keyring.identity.publicKey { return keyring.identityToken.description }
        return knownIdentity(key)?.description ?? "ed25519:" + Hex.encode(key.bytes)
    }

    // MARK: Content

    /// Seals the plaintext `ranges` of `buffer` (in parallel) and appends the new ones to the packs.
    /// Returns the references in order and the locations to record in the committing transaction.
    ///
    /// `bases[i]` (when given) lists the objects range i replaces, in content order: the previous revision's
    /// chunks it overlaps, or the manifest node at its position. A piece that is not stored already is stored
    /// as a delta against the first `ChunkSealer.maximumDeltaBases` of them when that is at most half the full
    /// object's size, or as one of them when equal to it.
    public func writeChunks(
        _ buffer: UnsafeRawBufferPointer, ranges: [Range<Int>], bases: [[ChunkReference]] = [], key: SecureBytes
    ) throws(StoreError) -> (references: [ChunkReference], locations: [ChunkLocation]) {
        guard !ranges.isEmpty else { return ([], []) }
        precondition(bases.isEmpty || bases.count == ranges.count, "one base list (maybe empty) per range")
        nonisolated(unsafe) let source = buffer
        var sealed = Self.parallelMap(ranges.count) { i in
            ChunkSealer.seal(UnsafeRawBufferPointer(rebasing: source[ranges[i]]), epochKey: key)
        }
        if Failpoint.hit("store.seal") { throw .io(path: home.packsDirectory, errno: EIO) }
        // Noted before the checks, so that a release keeps what they find stored (`InFlight`).
        var noted = sealed.map(\.reference)
        inFlight.withLock { $0.check(noted) }
        var known = Set<ChunkID>()
        do {
            known = try catalog.existing(noted.map(\.id))
            let candidates = bases.indices.filter { !bases[$0].isEmpty && !known.contains(sealed[$0].reference.id) }
            if !candidates.isEmpty {
                let full = sealed
                let replacements = Self.parallelMap(candidates.count) { j in
                    let i = candidates[j]
                    return self.delta(
                        UnsafeRawBufferPointer(rebasing: source[ranges[i]]), bases: bases[i], full: full[i], key: key)
                }
                for (j, replacement) in replacements.enumerated() {
                    if let replacement { sealed[candidates[j]] = replacement }
                }
                let replacing = candidates.map { sealed[$0].reference }
                inFlight.withLock { $0.check(replacing) }
                noted += replacing
                known.formUnion(try catalog.existing(replacing.map(\.id)))
            }
        } catch {
            inFlight.withLock { [noted] in $0.checked(noted, found: []) }
            throw error
        }
        inFlight.withLock { [noted, known] in $0.checked(noted, found: known) }
        var written = Set<ChunkID>()
        let new = sealed.filter { !known.contains($0.reference.id) && written.insert($0.reference.id).inserted }
        try admit(new.reduce(0) { $0 + Int64($1.ciphertext.count + PackStore.recordHeaderSize) })
        var locations: [ChunkLocation] = []
        do {
            for s in new {
                locations.append(try packs.append(id: s.reference.id, ciphertext: s.ciphertext))
            }
        } catch {
            discard(locations)
            throw error
        }
        remember(locations)
        return (sealed.map(\.reference), locations)
    }

    /// `body(0..<count)` on all cores; each call fills its own slot.
    private static func parallelMap<T>(_ count: Int, _ body: @Sendable (Int) -> T) -> [T] {
        [T](unsafeUninitializedCapacity: count) { out, initialized in
            // Each iteration writes its own slot of `out`; concurrentPerform returns only when all are done.
            nonisolated(unsafe) let slots = out
            if count == 1 {
                slots.baseAddress!.initialize(to: body(0))
            } else {
                DispatchQueue.concurrentPerform(iterations: count) { i in
                    (slots.baseAddress! + i).initialize(to: body(i))
                }
            }
            initialized = count
        }
    }

    /// What replaces `full` (a piece not stored yet) when stored against `candidates`: one of them if the
    /// plaintexts are equal (a chunk that was a delta has no full id to deduplicate against), a delta against
    /// the first few (as many as `ChunkSealer` allows) if clearly smaller, else nil (store `full`). A base at
    /// the depth limit is swapped for its ancestor at half the limit along its deepest bases, so a chunk that
    /// grows by appends costs about twice the appended bytes every half-limit revisions instead of a whole
    /// chunk. A base that cannot be read costs the delta only (logged).
    private func delta(
        _ plaintext: UnsafeRawBufferPointer, bases candidates: [ChunkReference], full: ChunkSealer.Sealed,
        key: SecureBytes
    ) -> ChunkSealer.Sealed? {
        do {
            var bases: [ChunkReference] = []
            var prefix: [UInt8] = []
            var depth = 0
            for candidate in candidates.prefix(ChunkSealer.maximumDeltaBases) {
                var base = candidate
                var object = try self.object(base)
                // memcmp: the generic elementsEqual went byte by byte (15 % of the CPU of a 4 KiB append + fsync).
                let same = object.plaintext.withUnsafeBytes { old in
                    old.count == plaintext.count
                        && (old.isEmpty || memcmp(old.baseAddress!, plaintext.baseAddress!, old.count) == 0)
                }
                if same {
                    return ChunkSealer.Sealed(reference: base, ciphertext: [])
                }
                if object.depth >= ChunkSealer.maximumDeltaDepth {
                    while object.depth > ChunkSealer.maximumDeltaDepth / 2, let older = object.deepestBase {
                        base = older
                        object = try self.object(older)
                    }
                }
                // Two bases can reach the same ancestor; a prefix past the limit would be refused on read.
                guard !bases.contains(where: { $0.id == base.id }),
                    prefix.count + object.plaintext.count <= ChunkSealer.maximumDeltaPrefix
                else { continue }
                base.length = UInt64(object.plaintext.count)
                bases.append(base)
                prefix += object.plaintext
                depth = max(depth, object.depth)
            }
            return ChunkSealer.sealDelta(
                plaintext, bases: bases, prefix: prefix, baseDepth: depth, limit: full.ciphertext.count / 2,
                epochKey: key)
        } catch {
            logger.warning("storing a chunk whole: a delta base is unreadable: \(error)")
            return nil
        }
    }

    /// The plaintext of one chunk; EIO-worthy `StoreError.corrupt` naming it if it is missing or damaged.
    public func readChunk(_ reference: ChunkReference) throws(StoreError) -> [UInt8] {
        try readChunk(reference, isData: true)
    }

    func readChunk(_ reference: ChunkReference, isData: Bool) throws(StoreError) -> [UInt8] {
        let plaintext = try object(reference).plaintext
        // For a manifest node the reference's length is the subtree's.
        guard !isData || UInt64(plaintext.count) == reference.length else {
            throw .corrupt(
                object: "chunk \(reference.id.hex)", reason: "length \(plaintext.count), expected \(reference.length)")
        }
        return plaintext
    }

    /// One stored object, a delta applied to its bases (recursively: the depth strictly decreases along every
    /// path, so a path has at most `maximumDeltaDepth` + 1 objects). Reconstructed plaintexts are cached.
    func object(_ reference: ChunkReference) throws(StoreError) -> StoredObject {
        accessed(reference.id)
        if let hit = cache.withLock({ $0.get(reference.id) }) { return hit }
        guard try heldLocation(of: reference.id) != nil else {
            throw .corrupt(object: "chunk \(reference.id.hex)", reason: "not held here, and no reachable peer sent it")
        }
        let result: StoredObject
        switch try opened(reference) {
        case .full(let plaintext):
            result = StoredObject(plaintext: plaintext, depth: 0, deepestBase: nil)
        case .delta(let delta):
            let object = "chunk \(reference.id.hex)"
            var prefix: [UInt8] = []
            var deepest: (reference: ChunkReference, depth: Int)?
            for expected in delta.bases {
                guard try heldLocation(of: expected.id) != nil else {
                    throw .corrupt(object: object, reason: "its delta base \(expected.id.hex) is not stored here")
                }
                let base = try self.object(expected)
                guard base.depth < delta.depth, UInt64(base.plaintext.count) == expected.length else {
                    throw .corrupt(
                        object: object,
                        reason: "delta base \(expected.id.hex) does not match the delta (depth or length)")
                }
                prefix += base.plaintext
                if base.depth > deepest?.depth ?? -1 { deepest = (expected, base.depth) }
            }
            let plaintext = try ChunkSealer.apply(delta, prefix: prefix, object: reference.id)
            result = StoredObject(plaintext: plaintext, depth: delta.depth, deepestBase: deepest?.reference)
        }
        cache.withLock { $0.put(reference.id, result) }
        return result
    }

    /// The chunk's record opened; one that fails verification (its bytes differ from the id) is noted damaged.
    func opened(_ reference: ChunkReference) throws(StoreError) -> ChunkSealer.Opened {
        let sealed: [UInt8]
        do throws(StoreError) {
            guard let found = try record(of: reference.id) else {
                throw StoreError.notFound("chunk \(reference.id.hex) (removed from the catalog meanwhile)")
            }
            sealed = found
        } catch {
            if case .corrupt = error { noteDamaged(reference.id, error) }
            throw error
        }
        do { return try ChunkSealer.open(sealed, reference: reference) } catch {
            if BLAKE2b.hash(sealed) != reference.id { noteDamaged(reference.id, error) }
            throw error
        }
    }

    /// The stored bytes of chunk `id`; nil when it is not stored. A location remembered before compaction removed
    /// its pack, naming a record that was not copied (a duplicate no row named), is looked up again.
    func record(of id: ChunkID) throws(StoreError) -> [UInt8]? {
        guard let location = try location(of: id) else { return nil }
        do { return try packs.read(location) } catch {
            guard packs.wasRemoved(location) else { throw error }
            locations.withLock { _ = $0.removeValue(forKey: id) }
            guard let found = try catalog.location(of: id) else { return nil }
            remember([found])
            return try packs.read(found)
        }
    }

    func location(of id: ChunkID) throws(StoreError) -> ChunkLocation? {
        if let known = locations.withLock({ $0[id] }) { return known }
        guard let found = try catalog.location(of: id) else { return nil }
        remember([found])
        return found
    }

    /// Forgets the chunks a release deleted: their remembered locations (not a record appended anew since) and
    /// plaintexts.
    func forget(_ released: [ChunkLocation]) {
        locations.withLock { map in
            for l in released where map[l.id] == l { map.removeValue(forKey: l.id) }
        }
        cache.withLock { c in for l in released { c.remove(l.id) } }
    }

    /// Where chunks just appended to the packs are: peers ask for them next.
    func remember(_ found: [ChunkLocation]) {
        locations.withLock { map in
            if map.count + found.count > Self.maximumCachedLocations { map.removeAll(keepingCapacity: true) }
            for l in found { map[l.id] = l }
        }
    }

    /// Builds (and stores) the manifest tree for `chunks`, reusing `previous`'s unchanged leaves.
    /// `unchangedPrefix`: how many leading chunks the caller knows equal `previous`'s; their full leaves are
    /// reused without comparing, so an append costs the same on a 1 GiB file as on a small one.
    public func writeManifest(
        chunks: [ChunkReference], previous: ManifestTree, unchangedPrefix: Int = 0, key: SecureBytes
    )
        throws(StoreError) -> (tree: ManifestTree, locations: [ChunkLocation])
    {
        guard !chunks.isEmpty else { return (.empty, []) }
        let fanout = ManifestNode.fanout
        var leaves: [ChunkReference?] = []
        var encoded: [[UInt8]] = []
        var fresh: [Int] = []
        for (n, start) in stride(from: 0, to: chunks.count, by: fanout).enumerated() {
            let group = chunks[start..<min(start + fanout, chunks.count)]
            let full = group.count == fanout || start + group.count == previous.chunks.count
            if n < previous.leaves.count, start + group.count <= previous.chunks.count, full,
                start + group.count <= unchangedPrefix
                    || previous.chunks[start..<start + group.count].elementsEqual(group)
            {
                leaves.append(previous.leaves[n])
            } else {
                leaves.append(nil)
                fresh.append(n)
                encoded.append(ManifestNode(level: 0, children: Array(group)).encoded())
            }
        }
        var locations: [ChunkLocation] = []
        let (refs, locs) = try writeBlobs(encoded, bases: fresh.map { previous.nodes(level: 0, index: $0) }, key: key)
        locations += locs
        for (i, n) in fresh.enumerated() {
            leaves[n] = ChunkReference(
                id: refs[i].id, key: refs[i].key,
                length: chunks[(n * fanout)..<min((n + 1) * fanout, chunks.count)].reduce(0) { $0 + $1.length })
        }
        var level: UInt8 = 0
        var current = leaves.map { $0! }
        var levels = [current]
        while current.count > 1 {
            level += 1
            let groups = stride(from: 0, to: current.count, by: fanout).map {
                Array(current[$0..<min($0 + fanout, current.count)])
            }
            let upper: [ChunkReference]
            do {
                let locs: [ChunkLocation]
                (upper, locs) = try writeBlobs(
                    groups.map { ManifestNode(level: level, children: $0).encoded() },
                    bases: groups.indices.map { previous.nodes(level: Int(level), index: $0) }, key: key)
                locations += locs
            } catch {
                discard(locations)
                throw error
            }
            current = zip(upper, groups).map {
                ChunkReference(id: $0.id, key: $0.key, length: $1.reduce(0) { $0 + $1.length })
            }
            levels.append(current)
        }
        let holes = chunks.reduce(0) { $0 + ($1.isHole ? $1.length : 0) }
        let root = ManifestReference(node: current[0], level: level, holeBytes: holes)
        return (ManifestTree(chunks: chunks, root: root, levels: levels), locations)
    }

    private func writeBlobs(_ blobs: [[UInt8]], bases: [[ChunkReference]], key: SecureBytes) throws(StoreError)
        -> ([ChunkReference], [ChunkLocation])
    {
        guard !blobs.isEmpty else { return ([], []) }
        let joined = blobs.flatMap { $0 }
        var ranges: [Range<Int>] = []
        var offset = 0
        for b in blobs {
            ranges.append(offset..<offset + b.count)
            offset += b.count
        }
        let result = try joined.withBytes { (buffer) throws(StoreError) in
            try writeChunks(buffer, ranges: ranges, bases: bases, key: key)
        }
        return (result.references, result.locations)
    }

    /// Loads the chunk list below `root`.
    public func loadManifest(_ root: ManifestReference?) throws(StoreError) -> ManifestTree {
        guard let root else { return .empty }
        var chunks: [ChunkReference] = []
        var levels = [[ChunkReference]](repeating: [], count: Int(root.level) + 1)
        func walk(_ ref: ChunkReference, level: UInt8) throws(StoreError) {
            let node = try manifestNode(ref)
            guard node.level == level else {
                throw .corrupt(object: "manifest node \(ref.id.hex)", reason: "wrong level")
            }
            levels[Int(level)].append(ref)
            if level == 0 {
                chunks += node.children
            } else {
                for child in node.children { try walk(child, level: level - 1) }
            }
        }
        try walk(root.node, level: root.level)
        // The metadata's count of hole bytes must be the tree's (st_blocks is computed from it).
        var length: UInt64? = 0
        var holes: UInt64 = 0
        for c in chunks {
            length = length.flatMap { contentLength(adding: $0, c.length) }
            if c.isHole { holes &+= c.length }  // within `length` unless that overflowed (then refused)
        }
        guard length == root.node.length, holes == root.holeBytes else {
            throw .corrupt(object: "manifest node \(root.node.id.hex)", reason: "lengths differ from the revision's")
        }
        return ManifestTree(chunks: chunks, root: root, levels: levels)
    }

    func manifestNode(_ reference: ChunkReference) throws(StoreError) -> ManifestNode {
        do { return try ManifestNode(decoding: try readChunk(reference, isData: false)) } catch let e as StoreError {
            throw e
        } catch {
            throw .corrupt(object: "manifest node \(reference.id.hex)", reason: "\(error)")
        }
    }

    /// Stores a small whole value (a directory listing) as content: chunked, then a manifest. `previous`: the
    /// tree of the value it replaces, whose nodes are the delta bases of the new ones at their positions.
    public func writeContent(
        _ bytes: [UInt8], key: SecureBytes, chunker: Chunker = .standard, previous: ManifestTree = .empty
    ) throws(StoreError) -> (root: ManifestReference?, locations: [ChunkLocation]) {
        var ranges: [Range<Int>] = []
        var start = 0
        try bytes.withBytes { (all) throws(StoreError) in
            while start < all.count {
                let rest = UnsafeRawBufferPointer(rebasing: all[start...])
                let n = chunker.firstChunkLength(in: rest, atEnd: true) ?? rest.count
                ranges.append(start..<start + n)
                start += n
            }
        }
        let (refs, locations) = try bytes.withBytes { (b) throws(StoreError) in
            try writeChunks(b, ranges: ranges, key: key)
        }
        do {
            let (tree, more) = try writeManifest(chunks: refs, previous: previous, key: key)
            return (tree.root, locations + more)
        } catch {
            discard(locations)
            throw error
        }
    }

    /// The most `readContent` returns: a sparse file may be far larger than memory.
    public static let maximumWholeContent: UInt64 = 1 << 30

    /// A whole content in memory (a listing, an old revision for `hypernet cat`), holes read as zeros.
    public func readContent(_ root: ManifestReference?) throws(StoreError) -> [UInt8] {
        if let root, root.node.length > Self.maximumWholeContent {
            throw .invalid("content of \(root.node.length) bytes is too large to read whole")
        }
        var out: [UInt8] = []
        try streamContent(root) {
            out += $0
            return true
        }
        return out
    }

    /// How xattr lists are cut: small chunks, so a set rewrites about a kilobyte of the list.
    public static let xattrChunker = Chunker(minimum: 256, average: 1 << 10, maximum: 8 << 10)

    /// Stores `metadata.xattrs` as a list of its own (`RevisionMetadata.xattrList`) when they take more than
    /// `inlineXattrBytes` and no stored list holds them yet. The list is cut by content, so only the chunks
    /// around a changed entry are new, and its manifest nodes are stored as deltas of those of `previous` (the
    /// list of the revision it follows). When the xattrs were read from or written as `previous`, the chunks
    /// before and after the bytes they changed since (`XattrList.stored`) are taken from it without reading,
    /// cutting or sealing them again, so a set costs the same at any length. Returns the locations to record.
    public func writeXattrList(_ metadata: inout RevisionMetadata, previous: ManifestReference?, key: SecureBytes)
        throws(StoreError) -> [ChunkLocation]
    {
        guard metadata.xattrList == nil, metadata.xattrs.space > RevisionMetadata.inlineXattrBytes else { return [] }
        var cached = lastXattrList.withLock { $0 }
        if cached?.root?.node.id != previous?.node.id { cached = nil }
        // A base that does not read costs the delta only.
        let base = cached ?? (try? loadManifest(previous)) ?? .empty
        var change: (old: ManifestTree, prefix: Int, suffix: Int)?
        if let stored = metadata.xattrs.stored, let previous, stored.root == previous.node.id, base.root != nil {
            change = (base, stored.unchangedPrefix, stored.unchangedSuffix)
        }
        let (chunks, kept, locations) = try cutXattrList(metadata.xattrs.encoded, change: change, key: key)
        let tree: ManifestTree
        let more: [ChunkLocation]
        do { (tree, more) = try writeManifest(chunks: chunks, previous: base, unchangedPrefix: kept, key: key) } catch {
            discard(locations)
            throw error
        }
        lastXattrList.withLock { $0 = tree }
        metadata.xattrs.stored = tree.root.map { ($0.node.id, Int.max, Int.max) }
        metadata.xattrList = tree.root
        return locations + more
    }

    /// The chunks of `bytes` as `xattrChunker` cuts them, and how many leading ones are those of the list it
    /// changes (`change.old`, whose first `prefix` and last `suffix` bytes it kept). Only the part from the first
    /// chunk that holds a change to the first cut past it that is also one of the old list's is cut and sealed: a
    /// cut depends on the bytes since the previous one only, so equal bytes from an equal cut on give its chunks.
    private func cutXattrList(
        _ bytes: [UInt8], change: (old: ManifestTree, prefix: Int, suffix: Int)?, key: SecureBytes
    ) throws(StoreError) -> (chunks: [ChunkReference], kept: Int, locations: [ChunkLocation]) {
        let oldChunks = change?.old.chunks ?? []
        let oldCount = Int(change?.old.length ?? 0)
        let shortest = min(oldCount, bytes.count)
        let prefix = min(change?.prefix ?? 0, shortest)
        let suffix = min(change?.suffix ?? 0, shortest - prefix)
        var head = 0
        var start = 0
        // Not the last: the end of the old list cut it, which `bytes` may not end at.
        while head < oldChunks.count - 1, start + Int(oldChunks[head].length) <= prefix {
            start += Int(oldChunks[head].length)
            head += 1
        }
        // Where each later chunk of the old list begins, by its offset in `bytes` were it unchanged.
        var starts: [Int: Int] = [:]
        var offset = start + bytes.count - oldCount
        for i in head..<oldChunks.count {
            starts[offset] = i
            offset += Int(oldChunks[i].length)
        }
        var ranges: [Range<Int>] = []
        var tail: ArraySlice<ChunkReference> = []
        try bytes.withBytes { (all) throws(StoreError) in
            var at = start
            while at < all.count {
                let rest = UnsafeRawBufferPointer(rebasing: all[at...])
                let n = Self.xattrChunker.firstChunkLength(in: rest, atEnd: true) ?? rest.count
                ranges.append(at..<at + n)
                at += n
                if at >= all.count - suffix, let i = starts[at] {
                    tail = oldChunks[i...]
                    break
                }
            }
        }
        let (refs, locations) = try bytes.withBytes { (b) throws(StoreError) in
            try writeChunks(b, ranges: ranges, key: key)
        }
        return (Array(oldChunks[..<head]) + refs + tail, head, locations)
    }

    /// Reads the list `metadata` names into its `xattrs` (nothing to do for inline ones).
    func readXattrList(_ metadata: inout RevisionMetadata) throws(StoreError) {
        guard let list = metadata.xattrList else { return }
        do {
            let bytes = try readContent(list)
            metadata.xattrs = try XattrList(decoding: bytes)
            // The list's own bytes: the next set cuts only around its change (all of a list read out of order).
            metadata.xattrs.stored = (list.node.id, Int.max, Int.max)
        } catch let error as StoreError {
            throw error
        } catch {
            throw .corrupt(object: "xattr list \(list.node.id.hex)", reason: "\(error)")
        }
        metadata.xattrList = list
    }

    /// Reads every stored chunk of a content (for fsck), one at a time.
    func verifyContent(_ root: ManifestReference?) throws(StoreError) {
        for c in try loadManifest(root).chunks where !c.isHole { _ = try readChunk(c) }
    }

    // MARK: Catalog

    /// Every live document. A row that does not decode is left out with a log line naming it (never
    /// deleted): the rest of the tree still mounts, and `hypernet fsck` reports it.
    public func loadDocuments() throws(StoreError) -> [DocumentRecord] {
        let rows = try catalog.read { db in
            try Row.fetchAll(
                db,
                sql:
                    "SELECT inode, id, kind, head, metadata, atime_s, atime_ns, dirty FROM documents WHERE id IS NOT NULL"
            )
        }
        return rows.compactMap { row in
            do {
                var document = try Self.document(row)
                // Unreadable xattrs cost the xattrs only: the list stays named, so later revisions keep it.
                do { try readXattrList(&document.metadata) } catch {
                    logger.error("document inode \(document.inode): its xattrs are unreadable: \(error)")
                }
                return document
            } catch {
                logger.error("corrupt catalog row for document inode \(row[0] as Int64): \(error)")
                return nil
            }
        }
    }

    public func loadEntries() throws(StoreError) -> [EntryRecord] {
        try catalog.read { db in
            try Row.fetchAll(db, sql: "SELECT parent, name, child FROM entries").map {
                EntryRecord(parent: UInt64($0[0] as Int64), name: $0[1], child: UInt64($0[2] as Int64))
            }
        }
    }

    static func document(_ row: Row) throws -> DocumentRecord {
        let idData: Data = row[1]
        guard let kind = RevisionKind(rawValue: UInt8(row[2] as Int)) else {
            throw StoreError.corrupt(object: "document row \(row[0] as Int64)", reason: "kind")
        }
        let headData: Data? = row[3]
        let metadataData: Data = row[4]
        return DocumentRecord(
            inode: UInt64(row[0] as Int64), id: try DocumentID(bytes: Array(idData)), kind: kind,
            head: try headData.map { try Digest(bytes: $0) },
            metadata: try RevisionMetadata(decoding: Array(metadataData)),
            atimeSeconds: row[5], atimeNanoseconds: UInt32(row[6] as Int64), dirty: row[7])
    }

    /// Runs `body` in one catalog write transaction: all of it is committed, or none. Observers learn of
    /// the revisions it added once it is committed.
    /// `appended`: records appended for this transaction to name; discarded if it fails.
    public func transaction<T>(
        appended: [ChunkLocation] = [], _ body: (StoreTransaction) throws -> T
    ) throws(StoreError) -> T {
        let added = AddedRevisions()
        let result: T
        do {
            result = try catalog.write { db in
                added.list.removeAll()  // GRDB may retry the closure
                added.recorded.removeAll()
                let result = try body(StoreTransaction(db: db, store: self, added: added))
                if Failpoint.hit("catalog.commit") { throw StoreError.io(path: home.catalogPath, errno: EIO) }
                return result
            }
        } catch {
            discard(appended)
            throw error
        }
        if full.load(ordering: .relaxed), full.exchange(false, ordering: .relaxed) {
            logger.notice("the disk holding the store has room again")
        }
        packs.settle(added.recorded)
        if !added.list.isEmpty { notify(added.list) }
        return result
    }

    func nextTime() -> HLCTime {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let ms = UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec / 1_000_000)
        return clock.withLock { $0.now(wallMilliseconds: ms) }
    }

    public func revisions(of document: DocumentID) throws(StoreError) -> [RevisionSummary] {
        try catalog.read { db in
            let heads = Set(
                try Data.fetchAll(
                    db, sql: "SELECT revision FROM heads WHERE document = ?", arguments: [Data(document.bytes)]))
            return try Row.fetchAll(
                db,
                sql: """
                    SELECT id, record, size, id IN (SELECT revision FROM refused), id IN (SELECT revision FROM released)
                    FROM revisions WHERE document = ? ORDER BY time DESC, id DESC
                    """,
                arguments: [Data(document.bytes)]
            ).map { row in
                let record: Data = row[1]
                let signed = try SignedRevision(record: Array(record))
                let r = signed.revision
                return RevisionSummary(
                    id: signed.id, time: r.time, kind: r.kind, size: UInt64(row[2] as Int64), author: r.author,
                    parents: r.parents, isHead: heads.contains(row[0]), isRefused: row[3], isReleased: row[4])
            }
        }
    }

    /// A stored revision and its unsealed metadata.
    /// `readingXattrs` false leaves a stored xattr list unread (`xattrs` empty, `xattrList` set).
    public func revision(_ id: RevisionID, readingXattrs: Bool = true) throws(StoreError) -> (
        revision: Revision, metadata: RevisionMetadata
    ) {
        guard let (r, tree) = try sealedRevision(id) else { throw .notFound("revision \(id.hex)") }
        guard let key = epochKey(tree: tree, rights: r.rights, epoch: r.epoch) else { throw .rights(.noKey) }
        var metadata: RevisionMetadata
        do { metadata = try RevisionMetadata(unsealing: r.sealedMetadata, epochKey: key, document: r.document) } catch {
            throw .corrupt(object: "revision \(id.hex)", reason: "\(error)")
        }
        if readingXattrs { try readXattrList(&metadata) }
        return (r, metadata)
    }

    /// A stored revision as signed, and its tree, without opening anything (no key needed); nil when not stored.
    public func sealedRevision(_ id: RevisionID) throws(StoreError) -> (revision: Revision, tree: SigningPublicKey)? {
        let row = try catalog.readStatement { db in
            try Row.fetchOne(
                db.cachedStatement(sql: "SELECT record, tree FROM revisions WHERE id = ?"), arguments: [Data(id.bytes)])
        }
        guard let row else { return nil }
        do {
            return (
                try SignedRevision(record: Array(row[0] as Data)).revision,
                try SigningPublicKey(bytes: Array(row[1] as Data))
            )
        } catch {
            throw .corrupt(object: "revision \(id.hex)", reason: "\(error)")
        }
    }

    // MARK: Durability

    /// Makes everything committed so far durable: the packs and the catalog's WAL (fsync of the WAL file is
    /// exactly what SQLite's `synchronous=FULL` does at commit). Both at once: ordering them would add no
    /// guarantee, since WAL frames written at commit can reach the disk through writeback before pack bytes
    /// do anyway. Rows whose chunks a power failure loses were never acknowledged (no sync had returned).
    public func sync() throws(StoreError) {
        try refuseAfterFailedSync()
        if Failpoint.hit("store.sync") {
            syncFailed.store(true, ordering: .relaxed)
            throw .io(path: home.catalogPath, errno: EIO)
        }
        // Committed before the syncs below begin, so made durable by them.
        let local = unsyncedLocal.withLock { u in
            defer { u.removeAll() }
            return u
        }
        let wal = home.catalogPath + "-wal"
        let results = Mutex<[StoreError]>([])
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            do throws(StoreError) {
                if i == 0 { try packs.sync() } else { try Self.fdatasync(path: wal) }
            } catch {
                results.withLock { $0.append(error) }
            }
        }
        if let first = results.withLock({ $0.first }) {
            syncFailed.store(true, ordering: .relaxed)
            if !local.isEmpty { unsyncedLocal.withLock { $0.insert(contentsOf: local, at: 0) } }
            throw first
        }
        if !local.isEmpty { for o in durableObservers.withLock({ $0 }) { o(local) } }
    }

    private func refuseAfterFailedSync() throws(StoreError) {
        if syncFailed.load(ordering: .relaxed) { throw .io(path: home.catalogPath, errno: EIO) }
    }

    /// The packs synced before the catalog moves past them (a checkpoint): never after a failed sync, which may
    /// have lost pack bytes that the checkpoint would make the catalog name for good.
    private func syncPacksForCheckpoint() throws(StoreError) {
        try refuseAfterFailedSync()
        do { try packs.sync() } catch {
            syncFailed.store(true, ordering: .relaxed)
            throw error
        }
    }

    private static func fdatasync(path: String) throws(StoreError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return }
            throw .io(path: path, errno: errno)
        }
        defer { close(fd) }
        if Glibc.fdatasync(fd) != 0 { throw .io(path: path, errno: errno) }
    }

    /// The WAL size past which the once-a-second pass checkpoints it.
    public static let walLimit: Int64 = 16 << 20

    /// Moves the WAL into the database file once it passes `walLimit`, after syncing the packs, so the
    /// catalog never becomes durable ahead of the chunks it names. Called by the once-a-second pass.
    public func checkpointIfNeeded(walLimit: Int64 = Store.walLimit) {
        var st = stat()
        guard stat(home.catalogPath + "-wal", &st) == 0, Int64(st.st_size) > walLimit else { return }
        do throws(StoreError) {
            try syncPacksForCheckpoint()
            if Failpoint.hit("catalog.checkpoint") { throw .io(path: home.catalogPath, errno: EIO) }
            try catalog.checkpoint()
        } catch {
            if error.isNoSpace { return noteNoSpace("catalog checkpoint", error) }
            logger.error("catalog checkpoint failed: \(error)")
        }
    }

    /// At a clean stop: the packs synced, then the WAL moved into the database file and truncated, so that a
    /// stopped store holds no earlier state of a row (its frames) beside the current one (security.md, "Threat
    /// model").
    public func checkpointAtStop() {
        do {
            try syncPacksForCheckpoint()
            try catalog.checkpoint(.truncate)
        } catch {
            logger.error("catalog checkpoint at stop failed: \(error)")
        }
    }

    // MARK: Checks

    /// Checks every chunk against its id, every revision's signature, and every document's content.
    /// Reports problems, never deletes. Empty result: consistent.
    public func check() -> [String] {
        var damaged: Set<ChunkID> = []
        return check(damaged: &damaged)
    }

    /// `check()`, also giving the chunks it found damaged (noted for repair).
    public func check(damaged: inout Set<ChunkID>) -> [String] {
        var problems: [String] = []
        do {
            let chunkRows = try catalog.read { db in
                try Row.fetchAll(db, sql: "SELECT id, pack, offset, length FROM chunks")
            }
            for row in chunkRows {
                let idData: Data = row[0]
                guard let id = try? Digest(bytes: idData) else {
                    problems.append("chunk row with a malformed id")
                    continue
                }
                let location = ChunkLocation(id: id, pack: row[1], offset: row[2], length: row[3])
                do {
                    let ciphertext = try packs.read(location)
                    if BLAKE2b.hash(ciphertext) != id {
                        let error = StoreError.corrupt(object: "chunk \(id.hex)", reason: "bytes do not match its id")
                        noteDamaged(id, error)
                        damaged.insert(id)
                        problems.append("\(error)")
                    }
                } catch {
                    if case .corrupt = error {
                        noteDamaged(id, error)
                        damaged.insert(id)
                    }
                    problems.append("\(error)")
                }
            }
            let revisionRows = try catalog.read { db in try Row.fetchAll(db, sql: "SELECT id, record FROM revisions") }
            for row in revisionRows {
                let idData: Data = row[0]
                let record: Data = row[1]
                do {
                    let signed = try SignedRevision(record: Array(record))
                    if Array(idData) != signed.id.bytes {
                        problems.append("revision \(Hex.encode(idData)): id mismatch")
                    }
                } catch {
                    problems.append("revision \(Hex.encode(idData)): \(error)")
                }
            }
            let rows = try catalog.read { db in
                try Row.fetchAll(
                    db,
                    sql:
                        "SELECT inode, id, kind, head, metadata, atime_s, atime_ns, dirty FROM documents WHERE id IS NOT NULL"
                )
            }
            for row in rows {
                do { _ = try Self.document(row) } catch {
                    problems.append("catalog row for document inode \(row[0] as Int64): \(error)")
                }
            }
            // A damaged document is named by its path too: that is what its owner knows it by.
            var names: [UInt64: (parent: UInt64, name: String)] = [:]
            for e in try loadEntries() { names[e.child] = (e.parent, e.name) }
            func path(_ inode: UInt64) -> String {
                var parts: [String] = []
                var current = inode
                while let entry = names[current], parts.count < names.count {
                    parts.append(entry.name)
                    current = entry.parent
                }
                return parts.isEmpty ? "" : ", /" + parts.reversed().joined(separator: "/")
            }
            for doc in try loadDocuments() {
                do {
                    try verifyContent(doc.metadata.content)
                    var metadata = doc.metadata
                    try readXattrList(&metadata)
                } catch {
                    problems.append("document \(doc.id) (inode \(doc.inode)\(path(doc.inode))): \(error)")
                }
            }
            problems += try checkRights()
        } catch {
            problems.append("\(error)")
        }
        return problems
    }

    /// Numbers for `hypernet status`.
    public func statistics() -> StoreStatistics {
        var s = StoreStatistics()
        _ = try? catalog.read { db in
            s.documents = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM documents WHERE id IS NOT NULL") ?? 0
            s.revisions = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM revisions") ?? 0
            s.chunks = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM chunks") ?? 0
        }
        s.packBytes = packs.totalSize()
        return s
    }
}

/// Catalog writes inside one `Store.transaction`. Valid only inside the closure.
public struct StoreTransaction {
    let db: Database
    let store: Store
    let added: AddedRevisions

    /// Hot statements are prepared once per connection (GRDB's statement cache), not parsed per call.
    func run(_ sql: String, arguments: StatementArguments) throws {
        try db.cachedStatement(sql: sql).execute(arguments: arguments)
    }

    /// `rights`: the chain its revisions are written under (`rightsForChildren` of its directory for a new one).
    public func insertDocument(
        id: DocumentID, kind: RevisionKind, metadata: RevisionMetadata, dirty: Bool, rights: DocumentID?
    )
        throws -> UInt64
    {
        try run(
            "INSERT INTO documents (id, kind, metadata, dirty, rights) VALUES (?, ?, ?, ?, ?)",
            arguments: [
                Data(id.bytes), Int(kind.rawValue), Data(metadata.encoded()), dirty, rights.map { Data($0.bytes) },
            ])
        return UInt64(db.lastInsertedRowID)
    }

    public func updateDocument(_ d: DocumentRecord) throws {
        try run(
            "UPDATE documents SET id = ?, kind = ?, head = ?, metadata = ?, atime_s = ?, atime_ns = ?, dirty = ? WHERE inode = ?",
            arguments: [
                Data(d.id.bytes), Int(d.kind.rawValue), d.head.map { Data($0.bytes) }, Data(d.metadata.encoded()),
                d.atimeSeconds, Int64(d.atimeNanoseconds), d.dirty, Int64(d.inode),
            ])
    }

    /// The row stays (its inode number is never reused) but no longer names a document.
    public func retireDocument(inode: UInt64) throws {
        try run("UPDATE documents SET id = NULL WHERE inode = ?", arguments: [Int64(inode)])
    }

    /// Row `successor` takes over the document row `inode` names: its id, head and the chain it is written
    /// under, so a save keeps a shared document shared as it was. Row `inode` then names the new document `id`,
    /// under the same chain and without a revision yet (dirty): an editor's save that renamed the original
    /// away (docs/design.md, "Saves that rename"); or, with `id` nil, no document (a rename-over).
    public func handOverDocument(of inode: UInt64, to successor: UInt64, renamingTo id: DocumentID?) throws {
        let row = try Row.fetchOne(
            db.cachedStatement(sql: "SELECT id, head, rights FROM documents WHERE inode = ?"),
            arguments: [Int64(inode)])
        guard let row, let old = row["id"] as Data? else {
            throw StoreError.corrupt(object: "catalog", reason: "no document at inode \(inode)")
        }
        if let id {
            try run(
                "UPDATE documents SET id = ?, head = NULL, dirty = 1 WHERE inode = ?",
                arguments: [Data(id.bytes), Int64(inode)])
        } else {
            try retireDocument(inode: inode)
        }
        try run(
            "UPDATE documents SET id = ?, head = ?, rights = ?, dirty = 1 WHERE inode = ?",
            arguments: [old, row["head"] as Data?, row["rights"] as Data?, Int64(successor)])
    }

    public func setEntry(parent: UInt64, name: String, child: UInt64) throws {
        try run(
            "INSERT OR REPLACE INTO entries (parent, name, child) VALUES (?, ?, ?)",
            arguments: [Int64(parent), name, Int64(child)])
    }

    public func removeEntry(parent: UInt64, name: String) throws {
        try run("DELETE FROM entries WHERE parent = ? AND name = ?", arguments: [Int64(parent), name])
    }

    /// Records appended chunks. One that was absent (`Store+Demand.swift`) keeps the revision that lists it first.
    public func recordChunks(_ locations: [ChunkLocation]) throws {
        // A record compaction copied since it was appended is recorded where its copy is.
        for l in locations.map(store.packs.current) {
            added.recorded.append(l)
            try run(
                """
                INSERT OR IGNORE INTO chunks (id, pack, offset, length, revision)
                    VALUES (?1, ?2, ?3, ?4, (SELECT revision FROM absent WHERE id = ?1))
                """,
                arguments: [Data(l.id.bytes), l.pack, l.offset, l.length])
            try run("DELETE FROM absent WHERE id = ?", arguments: [Data(l.id.bytes)])
        }
    }

    /// Signs a new revision of `document` by this node's identity, stores it and moves the heads. It lists
    /// every chunk recorded since the last revision, so those replicate with it (docs/protocol.md).
    /// `blindIndex`, written under the sealing the revision gets, is named by it (one made under an epoch that
    /// ended meanwhile is not: its tokens would not match the readers' trapdoors).
    public func appendRevision(
        document: DocumentID, kind: RevisionKind, metadata: RevisionMetadata, parents: [RevisionID],
        blindIndex: BlindIndexWrite? = nil
    ) throws -> RevisionID {
        let keyring = store.keyring
        let sealing = try Store.sealing(db, store: store, document: document)
        let index = blindIndex.flatMap { $0.rights == sealing.rights && $0.epoch == sealing.epoch ? $0.reference : nil }
        let revision = Revision(
            document: document, kind: kind, epoch: sealing.epoch, rights: sealing.rights, time: store.nextTime(),
            author: keyring.identity.publicKey, parents: parents,
            sealedMetadata: metadata.sealed(epochKey: sealing.key, document: document), blindIndex: index)
        // The rule every node applies to what it stores: a revision no peer would take (its chain took this
        // identity's write in a block another admin signed) is refused here, so close or fsync fails with EACCES
        // rather than the revision being stored to go nowhere.
        if try checkRights(revision, tree: keyring.identity.publicKey) != nil { throw StoreError.rights(.notAllowed) }
        let signed = revision.signed(by: keyring.identity)
        try insert(signed, tree: keyring.identity.publicKey, size: metadata.size)
        try run("UPDATE chunks SET revision = ? WHERE revision IS NULL", arguments: [Data(signed.id.bytes)])
        added.list.append(
            AddedRevision(id: signed.id, document: document, tree: keyring.identity.publicKey, isLocal: true))
        return signed.id
    }

    /// Stores a verified revision, gives it the next log sequence number and moves its document's heads.
    func insert(_ signed: SignedRevision, tree: SigningPublicKey, size: UInt64) throws {
        let revision = signed.revision
        let id = Data(signed.id.bytes)
        let doc = Data(revision.document.bytes)
        try run(
            "INSERT INTO revisions (id, document, time, kind, size, record, tree, seq, rights) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            arguments: [
                id, doc, Int64(bitPattern: revision.time.rawValue), Int(revision.kind.rawValue),
                Int64(size), Data(signed.record), Data(tree.bytes), try nextSeq(),
                revision.rights.map { Data($0.bytes) },
            ])
        for p in revision.parents {
            try run("DELETE FROM heads WHERE document = ? AND revision = ?", arguments: [doc, Data(p.bytes)])
        }
        try run("INSERT OR IGNORE INTO heads (document, revision) VALUES (?, ?)", arguments: [doc, id])
    }
}

/// Revisions added by one transaction, announced to observers after it commits.
final class AddedRevisions {
    var list: [AddedRevision] = []
    /// Records the transaction names in `chunks` rows: no longer in flight once it commits.
    var recorded: [ChunkLocation] = []
}

/// A revision a committed transaction added: made here, or received from a peer.
public struct AddedRevision: Sendable {
    public var id: RevisionID
    public var document: DocumentID
    public var tree: SigningPublicKey
    public var isLocal: Bool
    /// A permission block of `document`'s chain, not a revision of it.
    public var isBlock = false
    /// A release statement of `tree`'s owner (`document`: the tree's root), not a revision.
    public var isStatement = false
    /// Chunk ids listed with a received revision.
    public var chunkCount = 0
}

public struct StoreStatistics: Sendable, Codable {
    public var documents = 0
    public var revisions = 0
    public var chunks = 0
    public var packBytes: UInt64 = 0
    public init() {}
}

/// A stored object's plaintext (a delta applied), its delta depth (0: stored whole), and the delta base
/// that gave it that depth (the first such): the way to an older version of it at a smaller depth.
struct StoredObject: Sendable {
    var plaintext: [UInt8]
    var depth: Int
    var deepestBase: ChunkReference?
}

/// A small LRU of chunk plaintexts: sequential reads touch each chunk many times (kernel reads are ≤ 1 MiB),
/// and the chain below a delta is read again by the next delta on it.
struct ChunkCache {
    let capacity: Int
    private var entries: [ChunkID: (object: StoredObject, tick: UInt64)] = [:]
    private var tick: UInt64 = 0

    init(capacity: Int) { self.capacity = capacity }

    mutating func get(_ id: ChunkID) -> StoredObject? {
        guard let e = entries[id] else { return nil }
        tick += 1
        entries[id] = (e.object, tick)
        return e.object
    }

    mutating func remove(_ id: ChunkID) {
        entries.removeValue(forKey: id)
    }

    mutating func put(_ id: ChunkID, _ object: StoredObject) {
        tick += 1
        entries[id] = (object, tick)
        if entries.count > capacity, let oldest = entries.min(by: { $0.value.tick < $1.value.tick }) {
            entries.removeValue(forKey: oldest.key)
        }
    }
}
