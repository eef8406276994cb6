import Foundation
import GRDB
import Glibc
import HypernetCrypto
import HypernetModel

/// How much of a tree this node keeps (docs/store-format.md, "Partial replicas"): all its content, or its
/// metadata only, with file content fetched from peers when read.
public enum ContentMode: String, Sendable, CaseIterable {
    case all
    case onDemand = "on-demand"
}

/// Partial replicas: a revision of a tree held on demand is stored with the chunks of its file content recorded
/// as `absent`, and a read of one fetches it from the peers through the content source (the sync node).
extension Store {
    /// The content mode of each pin (`*` included).
    public func pinnedContent() throws(StoreError) -> [String: ContentMode] {
        try catalog.read { db in
            var modes: [String: ContentMode] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT who, content FROM pins") {
                modes[row[0]] = ContentMode(rawValue: row[1]) ?? .all
            }
            return modes
        }
    }

    /// How this node holds `tree`, nil if it does not follow it: its own identity's tree in full; a pinned tree
    /// (by token, else by `*`) as pinned; a contact's tree, not pinned, on demand (it shows under `/@NAME/` at once).
    public func content(of tree: SigningPublicKey) -> ContentMode? {
        if tree == keyring.identity.publicKey { return .all }
        let pins = (try? pinnedContent()) ?? [:]
        if let mode = pins.first(where: { IdentityToken($0.key)?.signing == tree })?.value { return mode }
        if let mode = pins["*"] { return mode }
        let contacts = (try? Contacts.load(home))?.list ?? []
        return contacts.contains { $0.identity.signing == tree } ? .onDemand : nil
    }

    /// Installs what fetches absent chunks from peers: it returns those that arrived, checked against their ids
    /// and appended to the packs, and gives up on the others after the fetch timeout.
    public func setContentSource(_ source: @escaping @Sendable ([ChunkID]) -> [ChunkLocation]) {
        contentSource.withLock { $0 = source }
    }

    /// Fetches those of `ids` that are absent here from the peers and records them (they read from now on);
    /// returns the locations of those that arrived. Not synced: a fetched chunk lost to a power loss is fetched
    /// again (its row is durable only with packs synced before it, `store-format.md`, "Durability").
    /// `caching`: the chunks join the bounded cache (a read), else they stay (a tree now held in full, a kept file).
    @discardableResult
    public func fetchAbsent(_ ids: [ChunkID], caching: Bool = true) throws(StoreError) -> [ChunkID: ChunkLocation] {
        var unheld: [ChunkID] = []
        for id in Set(ids) where try location(of: id) == nil { unheld.append(id) }
        guard !unheld.isEmpty else { return [:] }
        let absent = try catalog.read { db in
            let statement = try db.cachedStatement(sql: "SELECT 1 FROM absent WHERE id = ?")
            return try unheld.filter { try Int.fetchOne(statement, arguments: [Data($0.bytes)]) != nil }
        }
        guard !absent.isEmpty, let source = contentSource.withLock({ $0 }) else { return [:] }
        let arrived = source(absent)
        let now = Self.seconds()
        // Counted once per chunk: reads waiting for one fetch all get what it brought.
        var fresh = arrived
        var evicted: [ChunkID] = []
        if caching {
            contentCache.withLock { cache in
                fresh = arrived.filter { cache?.contains($0.id) == false }
                evicted = arrived.flatMap { cache?.insert($0.id, length: $0.length, at: now) ?? [] }
            }
        }
        // One transaction: the cache never holds more than its bound, even while other fetches (readahead) run.
        let evictions: (count: Int, bytes: Int64)
        do {
            evictions = try transaction { tx in
                try tx.recordChunks(arrived)
                if caching { try tx.cache(arrived.map(\.id)) }
                return try tx.evict(evicted)
            }
        } catch {
            contentCache.withLock { cache in for c in arrived { cache?.remove(c.id) } }
            throw error
        }
        remember(arrived)
        forgetLocations(of: evicted)
        cacheCounters.withLock { c in
            c.fetchedBytes += fresh.reduce(0) { $0 + $1.length }
            if caching { c.misses += fresh.count }
            c.evictions += evictions.count
            c.evictedBytes += evictions.bytes
        }
        return Dictionary(arrived.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
    }

    /// Whether chunk `id` is stored here (it reads without a peer).
    public func holds(_ id: ChunkID) -> Bool {
        ((try? location(of: id)) ?? nil) != nil
    }

    /// Where chunk `id` is, fetching it from the peers if it is absent; nil if it is neither stored nor fetched.
    func heldLocation(of id: ChunkID) throws(StoreError) -> ChunkLocation? {
        if let found = try location(of: id) { return found }
        return try fetchAbsent([id])[id]
    }
}

extension StoreTransaction {
    /// Records `chunks` of an on-demand `revision` that are not stored here as absent, listed by it first unless an
    /// earlier revision lists them.
    func recordAbsent(_ chunks: [ChunkID], for revision: RevisionID) throws {
        let statement = try db.cachedStatement(
            sql: """
                INSERT OR IGNORE INTO absent (id, revision)
                    SELECT ?1, ?2 WHERE NOT EXISTS (SELECT 1 FROM chunks WHERE id = ?1)
                """)
        for c in chunks { try statement.execute(arguments: [Data(c.bytes), Data(revision.bytes)]) }
    }

    /// Marks fetched chunks as cached (evictable).
    func cache(_ chunks: [ChunkID]) throws {
        let statement = try db.cachedStatement(sql: "INSERT OR IGNORE INTO cached (id) VALUES (?)")
        for c in chunks { try statement.execute(arguments: [Data(c.bytes)]) }
    }

    /// Evicts `ids` from the cache (`Store.evict`): how many were still cached, and their bytes.
    func evict(_ ids: [ChunkID]) throws -> (count: Int, bytes: Int64) {
        var evicted: (count: Int, bytes: Int64) = (0, 0)
        for id in ids {
            let key = Data(id.bytes)
            try db.execute(sql: "DELETE FROM cached WHERE id = ?", arguments: [key])
            guard db.changesCount > 0 else { continue }
            evicted.count += 1
            evicted.bytes +=
                try Int64.fetchOne(db, sql: "SELECT length FROM chunks WHERE id = ?", arguments: [key]) ?? 0
            try db.execute(
                sql: "INSERT OR IGNORE INTO absent (id, revision) SELECT id, revision FROM chunks WHERE id = ?",
                arguments: [key])
            try db.execute(sql: "DELETE FROM chunks WHERE id = ? AND revision IS NOT NULL", arguments: [key])
        }
        return evicted
    }

    /// The chunks stay: a revision held in full lists them.
    func uncache(_ chunks: [ChunkID]) throws {
        let statement = try db.cachedStatement(sql: "DELETE FROM cached WHERE id = ?")
        for c in chunks { try statement.execute(arguments: [Data(c.bytes)]) }
    }
}

extension Store {
    /// The absent chunks of the trees now held in full (a pin that went from on-demand to all): to fetch.
    public func absentInFullTrees() throws(StoreError) -> [ChunkID] {
        let rows = try catalog.read { db in
            try Row.fetchAll(db, sql: "SELECT a.id, r.tree FROM absent a JOIN revisions r ON r.id = a.revision")
        }
        return inFullTrees(rows)
    }

    /// The chunk ids of rows (id, tree) whose tree is held in full.
    private func inFullTrees(_ rows: [Row]) -> [ChunkID] {
        var modes: [Data: ContentMode?] = [:]
        return rows.compactMap { row -> ChunkID? in
            let tree: Data = row[1]
            let mode = modes[tree] ?? (try? SigningPublicKey(bytes: Array(tree))).flatMap { content(of: $0) }
            modes[tree] = mode
            guard mode == .all else { return nil }
            return try? Digest(bytes: row[0] as Data)
        }
    }

    /// Bounds the cache of content fetched on demand (`--cache-size`): loads what it holds, in fetch order, and
    /// evicts past the bound.
    public func setCacheBound(_ bytes: Int64) throws(StoreError) {
        let rows = try catalog.read { db in
            try Row.fetchAll(
                db, sql: "SELECT k.id, c.length FROM cached k JOIN chunks c ON c.id = k.id ORDER BY k.rowid")
        }
        var cache = ContentCache(bound: bytes)
        var evicted: [ChunkID] = []
        for row in rows {
            if let id = try? Digest(bytes: row[0] as Data) { evicted += cache.insert(id, length: row[1], at: 0) }
        }
        contentCache.withLock { $0 = cache }
        try evict(evicted)
    }

    /// A read of chunk `id` (also from the plaintext cache): the content cache's recency.
    func accessed(_ id: ChunkID) {
        if contentCache.withLock({ $0?.access(id, at: Self.seconds()) }) == true {
            cacheCounters.withLock { $0.hits += 1 }
        }
    }

    /// Monotonic seconds, for the content cache.
    static func seconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// The cache's bound and the bytes it holds, if bounded.
    public var cacheUse: (bound: Int64, bytes: Int64)? { contentCache.withLock { $0.map { ($0.bound, $0.bytes) } } }

    /// Evicts `ids` (still in `cached`: a revision held in full may have claimed one since): their rows go back to
    /// `absent`, their pack records become dead space (for compaction).
    func evict(_ ids: [ChunkID]) throws(StoreError) {
        guard !ids.isEmpty else { return }
        let evicted = try transaction { tx in try tx.evict(ids) }
        cacheCounters.withLock { c in
            c.evictions += evicted.count
            c.evictedBytes += evicted.bytes
        }
        forgetLocations(of: ids)
    }

    private func forgetLocations(of ids: [ChunkID]) {
        locations.withLock { map in for id in ids { map.removeValue(forKey: id) } }
    }

    /// Takes the chunks cached of trees now held in full out of the cache: they stay.
    public func keepFullTrees() throws(StoreError) {
        let rows = try catalog.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT k.id, r.tree FROM cached k JOIN chunks c ON c.id = k.id JOIN revisions r ON r.id = c.revision
                    """)
        }
        let kept = inFullTrees(rows)
        guard !kept.isEmpty else { return }
        try transaction { tx in try tx.uncache(kept) }
        contentCache.withLock { cache in for id in kept { cache?.remove(id) } }
    }

    /// Whether a revision of `tree` lists a chunk not held here (held on demand now or before).
    public func hasAbsent(in tree: SigningPublicKey) throws(StoreError) -> Bool {
        try catalog.read { db in
            guard try Int.fetchOne(db, sql: "SELECT 1 FROM absent LIMIT 1") != nil else { return false }
            return try Int.fetchOne(
                db,
                sql: """
                    SELECT 1 FROM revisions r WHERE r.tree = ? AND EXISTS (SELECT 1 FROM absent WHERE revision = r.id)
                    LIMIT 1
                    """, arguments: [Data(tree.bytes)]) != nil
        }
    }

    /// The file revisions among `ids` (their content is fetched on demand in a tree held so).
    public func fileRevisions(_ ids: [RevisionID]) throws(StoreError) -> Set<RevisionID> {
        try catalog.read { db in
            let statement = try db.cachedStatement(sql: "SELECT 1 FROM revisions WHERE id = ? AND kind = ?")
            return Set(
                try ids.filter {
                    try Int.fetchOne(statement, arguments: [Data($0.bytes), RevisionKind.file.rawValue]) != nil
                })
        }
    }
}
