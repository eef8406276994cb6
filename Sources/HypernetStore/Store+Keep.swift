import Foundation
import GRDB
import HypernetCrypto
import HypernetModel

/// Kept subtrees (`hypernet keep`, docs/store-format.md, "Partial replicas"): the content of the current revisions
/// of the files at or below a kept document is fetched and never evicted. The VFS walks the subtrees; the store
/// records the roots, fetches what they need and takes it out of the cache.
extension Store {
    /// Records (`kept`) or forgets the keep of `document`, a root of a kept subtree; false if nothing changed.
    @discardableResult
    public func setKept(_ document: DocumentID, tree: SigningPublicKey, _ kept: Bool) throws(StoreError) -> Bool {
        try catalog.write { db in
            if kept {
                try db.execute(
                    sql: "INSERT OR IGNORE INTO kept (document, tree) VALUES (?, ?)",
                    arguments: [Data(document.bytes), Data(tree.bytes)])
            } else {
                try db.execute(sql: "DELETE FROM kept WHERE document = ?", arguments: [Data(document.bytes)])
            }
            return db.changesCount > 0
        }
    }

    /// The roots of the kept subtrees, with their trees.
    public func keptRoots() throws(StoreError) -> [(document: DocumentID, tree: SigningPublicKey)] {
        try catalog.read { db in
            try Row.fetchAll(db, sql: "SELECT document, tree FROM kept").compactMap {
                row -> (document: DocumentID, tree: SigningPublicKey)? in
                guard let document = try? DocumentID(bytes: Array(row[0] as Data)),
                    let tree = try? SigningPublicKey(bytes: Array(row[1] as Data))
                else { return nil }
                return (document, tree)
            }
        }
    }

    /// Fetches what the content and xattr list of `metadata` need (manifest nodes, data chunks and, recursively,
    /// their delta bases) and adds their ids to `found`, with the bytes fetched and how many are not held. Without
    /// `fetching` it only finds what is held. What it found before an error stays in `found`.
    public func keptObjects(of metadata: RevisionMetadata, fetching: Bool, into found: inout KeptObjects)
        throws(StoreError)
    {
        for root in [metadata.content, metadata.xattrList].compactMap({ $0 }) {
            guard fetching || holds(root.node.id) else {
                found.missing += 1
                continue
            }
            if fetching { try fetchManifest(root, into: &found) }
            let tree = try loadManifest(root)
            var pending = tree.chunks.filter { !$0.isHole } + tree.levels.joined()
            while !pending.isEmpty {
                let fresh = pending.filter { found.ids.insert($0.id).inserted }
                if fetching {
                    let arrived = try fetchAbsent(fresh.map(\.id), caching: false)
                    found.fetchedIDs.formUnion(arrived.keys)
                    found.fetched += arrived.values.reduce(0) { $0 + $1.length }
                }
                pending = []
                for reference in fresh {
                    guard holds(reference.id) else {
                        found.missing += 1
                        continue
                    }
                    if case .delta(let delta) = try opened(reference) { pending += delta.bases }
                }
            }
        }
    }

    /// Fetches the manifest nodes below `root` that are not held, level by level, without caching them.
    private func fetchManifest(_ root: ManifestReference, into found: inout KeptObjects) throws(StoreError) {
        var nodes = [root.node]
        for level in stride(from: Int(root.level), through: 0, by: -1) {
            let arrived = try fetchAbsent(nodes.map(\.id), caching: false)
            found.fetchedIDs.formUnion(arrived.keys)
            found.fetched += arrived.values.reduce(0) { $0 + $1.length }
            guard level > 0 else { return }
            var children: [ChunkReference] = []
            for node in nodes { children += try manifestNode(node).children }
            nodes = children
        }
    }

    /// Makes the cache match the kept subtrees, whose content is `found` (`keptObjects`): those chunks leave it, and
    /// those an earlier pass took out of it or fetched that are no longer kept (an unkept subtree, an earlier
    /// revision of a kept file) join it again. Content held for another reason (this identity's writes, a tree once
    /// held in full, which acked it) never joins it. Returns the bytes of kept content held here.
    @discardableResult
    public func settleKept(_ found: KeptObjects) throws(StoreError) -> Int64 {
        var leaving: [ChunkID] = []
        var joining: [(id: ChunkID, length: Int64)] = []
        var responsible = found.ids.intersection(found.fetchedIDs)
        var keptBytes: Int64 = 0
        try catalog.read { db in
            let isCached = try db.cachedStatement(sql: "SELECT 1 FROM cached WHERE id = ?")
            let length = try db.cachedStatement(sql: "SELECT length FROM chunks WHERE id = ?")
            for id in found.ids {
                if try Int.fetchOne(isCached, arguments: [Data(id.bytes)]) != nil { leaving.append(id) }
                keptBytes += try Int64.fetchOne(length, arguments: [Data(id.bytes)]) ?? 0
            }
            for row in try Row.fetchAll(db, sql: "SELECT id FROM keeping") {
                guard let id = try? Digest(bytes: row[0] as Data) else { continue }
                if found.ids.contains(id) {
                    responsible.insert(id)
                } else if let bytes = try Int64.fetchOne(length, arguments: [Data(id.bytes)]) {
                    joining.append((id, bytes))
                }
            }
        }
        responsible.formUnion(leaving)
        cacheCounters.withLock { $0.keptBytes = keptBytes }
        try transaction { tx in
            try tx.uncache(leaving)
            try tx.cache(joining.map(\.id))
            try tx.db.execute(sql: "DELETE FROM keeping")
            let insert = try tx.db.cachedStatement(sql: "INSERT INTO keeping (id) VALUES (?)")
            for id in responsible { try insert.execute(arguments: [Data(id.bytes)]) }
        }
        let now = Self.seconds()
        try evict(
            contentCache.withLock { cache in
                for id in leaving { cache?.remove(id) }
                return joining.flatMap { cache?.insert($0.id, length: $0.length, at: now) ?? [] }
            })
        return keptBytes
    }

    /// The bytes of the content of `metadata` stored here (holes need nothing), and its size. A manifest node not
    /// held counts its whole subtree as not held.
    public func heldBytes(of metadata: RevisionMetadata) -> (held: UInt64, total: UInt64) {
        guard let root = metadata.content else { return (0, 0) }
        func held(_ reference: ChunkReference, level: UInt8) -> UInt64 {
            guard holds(reference.id), let node = try? manifestNode(reference) else { return 0 }
            return node.children.reduce(0) { sum, child in
                sum + (level > 0 ? held(child, level: level - 1) : child.isHole || holds(child.id) ? child.length : 0)
            }
        }
        return (held(root.node, level: root.level), root.node.length)
    }
}

/// What a kept file's revision needs (`Store.keptObjects`).
public struct KeptObjects: Sendable {
    public init() {}
    public var ids = Set<ChunkID>()
    /// Those fetched from peers now, and their bytes.
    public var fetchedIDs = Set<ChunkID>()
    public var fetched: Int64 = 0
    /// Chunks no reachable peer sent.
    public var missing = 0
}

/// The cache's figures since the daemon started (`hypernet status`).
struct CacheCounters {
    var hits = 0
    var misses = 0
    var fetchedBytes: Int64 = 0
    var evictions = 0
    var evictedBytes: Int64 = 0
    var keptBytes: Int64 = 0
}

/// What `hypernet status` shows of the cache of content fetched on demand (docs/cli.md, status).
public struct CacheStatus: Codable, Sendable {
    /// `--cache-size`, and the bytes of chunks it holds now.
    public var bound: Int64
    public var bytes: Int64
    /// Bytes of kept content held here (never evicted), as the last pass over the kept subtrees found them.
    public var keptBytes: Int64
    /// Reads of a chunk the cache held, and chunks fetched for a read; the hit rate is hits / (hits + misses).
    public var hits: Int
    public var misses: Int
    public var fetchedBytes: Int64
    /// Bytes of chunks sent to peers that asked for them (`want`).
    public var servedBytes: Int64
    public var evictions: Int
    public var evictedBytes: Int64
}

extension Store {
    /// The cache's status now; counters since the daemon started. `served`: what the sync layer sent to peers.
    public func cacheStatus(served: Int64) -> CacheStatus {
        let use = cacheUse ?? (0, 0)
        let c = cacheCounters.withLock { $0 }
        return CacheStatus(
            bound: use.bound, bytes: use.bytes, keptBytes: c.keptBytes, hits: c.hits, misses: c.misses,
            fetchedBytes: c.fetchedBytes, servedBytes: served, evictions: c.evictions,
            evictedBytes: c.evictedBytes)
    }
}
