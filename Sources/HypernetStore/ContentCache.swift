import HypernetModel

/// Which chunks fetched on demand to evict, within a bound in bytes: a segmented LRU (Karedla, Love, Wherry,
/// 1994). A chunk enters the probation segment; a second access moves it to the protected one, which holds at
/// most `protectedShare` of the bound (its least recently used fall back to probation). Evictions take the least
/// recently used of probation first, so one long scan of chunks read once cycles through probation and leaves
/// what was read twice in place. Accesses less than `correlationPeriod` apart are one (2Q's correlated
/// references: the read after a fetch, a chunk that two reads of one scan share). Pure: the store applies the
/// evictions and passes the time in.
struct ContentCache {
    let bound: Int64
    static let protectedShare = 0.8
    static let correlationPeriod = 1.0
    private var probation = LRUList()
    private var protected = LRUList()
    /// When each chunk was last accessed (seconds).
    private var lastAccess: [ChunkID: Double] = [:]

    init(bound: Int64) { self.bound = max(0, bound) }

    var bytes: Int64 { probation.bytes + protected.bytes }
    var count: Int { probation.count + protected.count }
    func contains(_ id: ChunkID) -> Bool { probation.contains(id) || protected.contains(id) }

    /// A chunk fetched (`length` bytes): it enters probation. Returns the chunks to evict to stay in the bound
    /// (possibly this one, if it alone passes it).
    mutating func insert(_ id: ChunkID, length: Int64, at now: Double) -> [ChunkID] {
        guard !contains(id) else {
            access(id, at: now)
            return []
        }
        probation.pushFront(id, length: length)
        lastAccess[id] = now
        return evict()
    }

    /// A cached chunk was read at `now`: a second access protects it; later ones keep it recent. Whether it was a
    /// hit: the chunk is cached and this access is not correlated with the one before (not the same read).
    @discardableResult
    mutating func access(_ id: ChunkID, at now: Double) -> Bool {
        guard let last = lastAccess[id] else { return false }
        lastAccess[id] = now
        let separate = now - last >= Self.correlationPeriod
        if protected.contains(id) {
            protected.moveToFront(id)
        } else if !separate {
            probation.moveToFront(id)
        } else if let length = probation.remove(id) {
            protected.pushFront(id, length: length)
            let limit = Int64(Double(bound) * Self.protectedShare)
            while protected.bytes > limit, let (old, size) = protected.popBack() {
                probation.pushFront(old, length: size)
            }
        }
        return separate
    }

    /// A chunk no longer cached (evicted by the store, or its tree is now kept in full).
    mutating func remove(_ id: ChunkID) {
        lastAccess.removeValue(forKey: id)
        if probation.remove(id) == nil { _ = protected.remove(id) }
    }

    /// Chunks to evict, least valuable first, to give back at least `room` bytes (the store is full).
    mutating func shed(_ room: Int64) -> [ChunkID] {
        evict(downTo: bytes - room)
    }

    private mutating func evict(downTo limit: Int64? = nil) -> [ChunkID] {
        var evicted: [ChunkID] = []
        while bytes > limit ?? bound {
            guard let (id, _) = probation.popBack() ?? protected.popBack() else { break }
            lastAccess.removeValue(forKey: id)
            evicted.append(id)
        }
        return evicted
    }
}

/// Chunks in recency order (front: most recent), with their total length. O(1) per operation.
private struct LRUList {
    private struct Entry {
        var length: Int64
        var newer: ChunkID?
        var older: ChunkID?
    }
    private var entries: [ChunkID: Entry] = [:]
    private var newest: ChunkID?
    private var oldest: ChunkID?
    private(set) var bytes: Int64 = 0

    var count: Int { entries.count }
    func contains(_ id: ChunkID) -> Bool { entries[id] != nil }

    mutating func pushFront(_ id: ChunkID, length: Int64) {
        entries[id] = Entry(length: length, newer: nil, older: newest)
        if let n = newest { entries[n]!.newer = id }
        newest = id
        if oldest == nil { oldest = id }
        bytes += length
    }

    @discardableResult
    mutating func remove(_ id: ChunkID) -> Int64? {
        guard let e = entries.removeValue(forKey: id) else { return nil }
        if let n = e.newer { entries[n]!.older = e.older } else { newest = e.older }
        if let o = e.older { entries[o]!.newer = e.newer } else { oldest = e.newer }
        bytes -= e.length
        return e.length
    }

    mutating func moveToFront(_ id: ChunkID) {
        if let length = remove(id) { pushFront(id, length: length) }
    }

    mutating func popBack() -> (ChunkID, Int64)? {
        guard let id = oldest, let length = remove(id) else { return nil }
        return (id, length)
    }
}
