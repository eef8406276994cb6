import GRDB
import Glibc
import HypernetFailpoint

/// A full disk (docs/store-format.md, "A full disk"): logged once, deletes go on thanks to a reserve, and what
/// failed writes appended to the packs is given back (at once when it is at their end, else at the next start).
extension Store {
    /// Room kept in `Home.reservePath` for deletes on a full disk: each costs a catalog transaction (a few pages
    /// of WAL) and, a second later, its directory's revision.
    public static let reserveBytes: Int64 = 4 << 20
    /// What a store at `--max-store-size` evicts from the cache at least (`makeRoom`; an eighth of the limit if that
    /// is less): each time it does, it rewrites a pack, so not for every write.
    static let roomMargin: Int64 = 8 << 20

    /// The store's bound (`--max-store-size`): new writes past it fail with ENOSPC. nil: none.
    public func limitSize(to bytes: Int64?) {
        maximumSize.store(bytes ?? 0, ordering: .relaxed)
    }

    /// Free space a node keeps on the file system holding its store: 1 % of it, at least 8 MiB and at most
    /// 256 MiB. New records that would leave less fail with ENOSPC, so that the catalog (deletes, metadata) and
    /// compaction still have room.
    public static func keptFree(fileSystemBytes: Int64) -> Int64 {
        min(256 << 20, max(8 << 20, fileSystemBytes / 100))
    }

    /// What the limit counts: the packs and the catalog's database file (not its WAL, which a checkpoint empties
    /// into it once it passes 16 MiB).
    func storeBytes() -> Int64 {
        var st = stat()
        let catalogBytes = stat(home.catalogPath, &st) == 0 ? Int64(st.st_size) : 0
        return Int64(packs.totalSize()) + catalogBytes
    }

    /// The file system's free bytes (for an unprivileged writer) and its size, or nil if it cannot be read.
    func fileSystemSpace() -> (free: Int64, size: Int64)? {
        var fs = statvfs()
        guard statvfs(home.storeDirectory, &fs) == 0 else { return nil }
        return (Int64(fs.f_bavail) * Int64(fs.f_frsize), Int64(fs.f_blocks) * Int64(fs.f_frsize))
    }

    /// Refuses `bytes` of new records with ENOSPC when they would take the store past its size limit or leave the
    /// disk with less than `keptFree`; logged once until a transaction commits again. Compaction does not ask:
    /// it frees more than it takes.
    func admit(_ bytes: Int64) throws(StoreError) {
        let limit = maximumSize.load(ordering: .relaxed)
        if limit > 0 {
            var used = storeBytes()
            if used + bytes > limit {
                try makeRoom(used + bytes - limit, limit: limit)
                used = storeBytes()
            }
            if used + bytes > limit {
                try refuse(
                    "the store reached its size limit (--max-store-size \(limit) bytes, \(used) used): new writes fail "
                        + "with ENOSPC until `hypernet gc` frees space; reads go on")
            }
        }
        if let space = fileSystemSpace() {
            let kept = Self.keptFree(fileSystemBytes: space.size)
            if space.free - bytes < kept {
                try refuse(
                    "the disk holding the store is nearly full (\(space.free) bytes free, \(kept) kept free): new "
                        + "writes fail with ENOSPC until space is freed; reads go on")
            }
        }
    }

    /// Gives back at least `room` bytes of the store, if it can, for a write past `--max-store-size`: evicts the
    /// least valuable content of the cache (never kept, pinned or unreplicated content: it is not cached), then
    /// rewrites the packs holding the most dead bytes. Compaction writes its copies past the limit for a moment.
    private func makeRoom(_ room: Int64, limit: Int64) throws(StoreError) {
        let shed = contentCache.withLock { $0?.shed(max(room, min(Self.roomMargin, limit / 8))) ?? [] }
        guard !shed.isEmpty else { return }
        try evict(shed)
        try compact(freeing: room)
    }

    private func refuse(_ why: String) throws(StoreError) {
        if !full.exchange(true, ordering: .relaxed) { logger.warning("\(why)") }
        throw .io(path: home.storeDirectory, errno: ENOSPC)
    }

    /// Logs, once until a transaction commits again, that `operation` found the disk full.
    public func noteNoSpace(_ operation: String, _ error: StoreError) {
        if !full.exchange(true, ordering: .relaxed) {
            logger.warning("\(operation): the disk holding the store is full: \(error)")
        }
    }

    /// Gives back the space of records just appended that no catalog row will name (the write that appended them
    /// failed, typically on a full disk): the pack is cut back if they are its last records; otherwise they stay,
    /// garbage like any other.
    public func discard(_ appended: [ChunkLocation]) {
        guard !appended.isEmpty else { return }
        locations.withLock { map in for l in appended { map.removeValue(forKey: l.id) } }
        packs.discard(appended)
    }

    /// Frees the reserve so that a delete can commit on a full disk; false when it was freed already.
    public func releaseReserve() -> Bool {
        guard unlink(home.reservePath) == 0 else { return false }
        logger.warning("the disk holding the store is full: released the store's reserve so that deletes go on")
        return true
    }

    /// Run at start, before anything is appended (the caller holds the home lock): cuts off the end of the pack
    /// being appended to where no catalog row names a record (what writes that failed, typically on a full disk,
    /// or never committed left), removes older packs no row names (`finishCompaction`), then makes the reserve if
    /// it is missing. Failures are logged, not thrown: a
    /// node must start on a full disk, so that files can be deleted.
    public func reclaimSpace() {
        let number = packs.appendingPack
        do {
            let last = try catalog.read { db in
                let sql = "SELECT MAX(offset + length) FROM chunks WHERE pack = ?"
                return try Int64.fetchOne(db, sql: sql, arguments: [number])
            }
            let end = last.map { $0 + Int64(PackStore.recordHeaderSize) } ?? Int64(PackStore.header.count)
            if Failpoint.hit("pack.trim") { throw StoreError.io(path: packs.path(of: number), errno: EIO) }
            let freed = try packs.trimTail(to: end)
            if freed > 0 {
                logger.notice(
                    "cut records no catalog row names off the end of \(packs.path(of: number))",
                    metadata: ["bytes": "\(freed)"])
            }
        } catch {
            logger.error("reclaiming the unreferenced end of \(packs.path(of: number)) failed: \(error)")
        }
        do { try finishCompaction() } catch { logger.error("finishing a compaction failed: \(error)") }
        let fd = open(home.reservePath, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            return logger.warning("cannot create the store's reserve: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        let result = posix_fallocate(fd, 0, off_t(Self.reserveBytes))
        if result != 0 {
            unlink(home.reservePath)
            logger.warning(
                "no room for the store's reserve (\(String(cString: strerror(result)))): deletes may fail with ENOSPC")
        }
    }
}
