import Foundation
import GRDB
import HypernetCrypto
import HypernetFailpoint

/// Garbage collection and pack compaction (docs/store-format.md, "Compaction"): a record is dead when no catalog
/// row names it (a write that failed or was abandoned, a chunk pushed for a revision that never came, a damaged
/// copy a repair replaced); a pack whose dead share reaches `deadShareThreshold` is rewritten with its live records
/// and removed.
extension Store {
    /// A pack is rewritten once at least this share of its records' bytes is dead.
    public static let deadShareThreshold = 0.25
    /// How often a running node makes a background pass (throttled).
    public static let collectionInterval: TimeInterval = 600
    /// A record appended this long ago and still named by no row is dead (`PackStore.inFlight(in:abandonAfter:)`).
    static let abandonedAfter: Duration = .seconds(3600)
    /// Room a compaction keeps beside its copies, for the catalog's switch.
    static let switchRoom: Int64 = 1 << 20
    /// Live bytes copied between two throttle pauses of a background pass.
    static let compactionBatchBytes: Int64 = 8 << 20

    /// One pass: measures every pack and rewrites those past the threshold. `dryRun` only measures. `throttled`
    /// (the background pass) pauses after each batch as long as the batch took, so foreground writes and reads keep
    /// at least half the disk. `progress` is told each pack as it starts. Passes run one at a time.
    /// `retention`: the policies' rules (nil: keep every revision's content) and the time they are applied at (Unix
    /// milliseconds); the content they release (`releaseContent`; a dry run: its plan) goes first. Without them,
    /// `statements`: the tree owners' release statements are applied instead (`applyStatements`).
    public func collectGarbage(
        dryRun: Bool = false, throttled: Bool = false, retention: (rules: RetentionRules, now: UInt64)? = nil,
        statements: Bool = false, progress: (GarbageProgress) -> Void = { _ in }
    ) throws(StoreError) -> GarbageReport {
        try collecting.withLock { (_) throws(StoreError) -> GarbageReport in
            let start = ContinuousClock.now
            var report = GarbageReport(dryRun: dryRun)
            if let retention {
                // A release that cannot be made safely (a manifest that does not read) keeps everything; the packs'
                // other garbage still goes.
                do throws(StoreError) {
                    report.retention =
                        dryRun
                        ? try collectionPlan(rules: retention.rules, now: retention.now).summary
                        : try releaseContent(rules: retention.rules, now: retention.now)
                } catch {
                    logger.error("retention: nothing released: \(error)")
                    report.retentionError = "\(error)"
                }
            } else if statements {
                do throws(StoreError) { report.retention = try applyStatements(dryRun: dryRun) } catch {
                    logger.error("release statements: nothing released: \(error)")
                    report.retentionError = "\(error)"
                }
            }
            // What is dead: records no `chunks` row names.
            var usage = try packUsage()
            report.deadBytes = usage.reduce(0) { $0 + $1.dead }
            if !dryRun, usage.contains(where: { $0.isDue && $0.number == packs.appendingPack }) {
                // The pack appended to is compacted once appends have moved to the next one.
                try packs.roll()
                usage = try packUsage()
            }
            let due = usage.filter(\.isDue)
            report.packsDue = due.count
            for (i, pack) in due.enumerated() {
                if stopCollecting.load(ordering: .relaxed) { break }
                progress(GarbageProgress(pack: i + 1, of: due.count, bytes: pack.size))
                if dryRun {
                    report.bytesReclaimed += pack.dead
                    continue
                }
                guard let copied = try compact(pack.number, throttled: throttled) else { continue }
                report.packsRewritten += 1
                report.liveBytesCopied += copied
                report.bytesReclaimed += pack.size - copied
            }
            report.seconds = Double((ContinuousClock.now - start) / .milliseconds(1)) / 1000
            if !dryRun, report.packsRewritten > 0 {
                logger.notice(
                    "garbage collected",
                    metadata: [
                        "packs": "\(report.packsRewritten)", "reclaimed": "\(report.bytesReclaimed)",
                        "copied": "\(report.liveBytesCopied)",
                    ])
            }
            return report
        }
    }

    /// Rewrites the packs holding dead bytes, the most first, until `room` bytes are freed (`makeRoom`): evicted
    /// content frees nothing until its pack is rewritten, whatever its dead share.
    func compact(freeing room: Int64) throws(StoreError) {
        try collecting.withLock { (_) throws(StoreError) in
            var usage = try packUsage()
            if usage.contains(where: { $0.dead > 0 && $0.number == packs.appendingPack }) {
                try packs.roll()
                usage = try packUsage()
            }
            var freed: Int64 = 0
            for pack in usage.filter({ $0.dead > 0 }).sorted(by: { $0.dead > $1.dead }) where freed < room {
                guard pack.number != packs.appendingPack, let copied = try compact(pack.number, throttled: false)
                else { continue }
                freed += pack.size - copied
            }
        }
    }

    /// Ends a running pass at its next record (its copies so far become garbage) and keeps new ones from starting.
    public func stopGarbageCollection() {
        stopCollecting.store(true, ordering: .relaxed)
        collecting.withLock { _ in }
    }

    /// Every pack's size and dead bytes; records in flight count as live.
    private func packUsage() throws(StoreError) -> [PackUsage] {
        let live = try catalog.read { db in
            var live: [Int64: Int64] = [:]
            let sql = "SELECT pack, SUM(length), COUNT(*) FROM chunks GROUP BY pack"
            for row in try Row.fetchAll(db, sql: sql) {
                live[row[0]] = (row[1] as Int64) + (row[2] as Int64) * Int64(PackStore.recordHeaderSize)
            }
            return live
        }
        return try PackStore.packNumbers(in: home.packsDirectory).map { number in
            let size = packs.size(of: number)
            let records = max(0, size - Int64(PackStore.header.count))
            var used = live[number] ?? 0
            for r in packs.inFlight(in: number, abandonAfter: Self.abandonedAfter) ?? [] {
                used += r.length + Int64(PackStore.recordHeaderSize)
            }
            return PackUsage(number: number, size: size, dead: max(0, records - used))
        }
    }

    /// Rewrites pack `number`: its live records are appended to the pack appended to and synced; then the catalog
    /// rows are switched to the copies in one transaction, made durable; then the pack is removed. Returns the
    /// bytes copied, or nil when the pack is left for a later pass (a record still being written, a damaged one).
    private func compact(_ number: Int64, throttled: Bool) throws(StoreError) -> Int64? {
        guard let inFlight = packs.inFlight(in: number, abandonAfter: Self.abandonedAfter) else { return nil }
        let named = try catalog.read { db in
            try Row.fetchAll(
                db, sql: "SELECT id, offset, length FROM chunks WHERE pack = ? ORDER BY offset", arguments: [number]
            ).map { row in
                ChunkLocation(id: try Digest(bytes: row[0] as Data), pack: number, offset: row[1], length: row[2])
            }
        }
        var live: [Int64: ChunkLocation] = [:]
        for l in named + inFlight { live[l.offset] = l }
        // The copies need room until the pack goes: on a nearly full disk, only a pack whose live records fit.
        let needed = live.values.reduce(0) { $0 + $1.length + Int64(PackStore.recordHeaderSize) } + Self.switchRoom
        if let space = fileSystemSpace(), space.free < needed {
            logger.notice("pack \(number) left for later: its live records need \(needed) bytes, \(space.free) free")
            return nil
        }
        var copies: [(from: ChunkLocation, to: ChunkLocation)] = []
        var copied: Int64 = 0
        var batch: (start: ContinuousClock.Instant, bytes: Int64) = (.now, 0)
        do throws(StoreError) {
            for original in live.keys.sorted().map({ live[$0]! }) {
                guard !stopCollecting.load(ordering: .relaxed), let ciphertext = try copyable(original, in: number)
                else {
                    discard(copies.map(\.to))
                    return nil
                }
                copies.append((original, try packs.append(id: original.id, ciphertext: ciphertext)))
                let size = original.length + Int64(PackStore.recordHeaderSize)
                copied += size
                batch.bytes += size
                if Failpoint.hit("compact.copy") { throw .io(path: packs.path(of: number), errno: EIO) }
                if throttled, batch.bytes >= Self.compactionBatchBytes {
                    Thread.sleep(forTimeInterval: (ContinuousClock.now - batch.start) / .seconds(1))
                    batch = (.now, 0)
                }
            }
            // The copies are durable before any row names them.
            try sync()
        } catch {
            // Nothing names the copies: garbage, cut off at once when they end the pack.
            discard(copies.map(\.to))
            throw error
        }
        // From here on the copies stay, whatever fails: readers and writers may already be sent to them.
        packs.relocate(copies)
        try catalog.write { db in
            let statement = try db.cachedStatement(
                sql: "UPDATE chunks SET pack = ?, offset = ? WHERE pack = ? AND offset = ?")
            for c in copies { try statement.execute(arguments: [c.to.pack, c.to.offset, number, c.from.offset]) }
            if Failpoint.hit("compact.switch") { throw StoreError.io(path: home.catalogPath, errno: EIO) }
        }
        packs.settle(copies.map(\.to))
        // The rows durable before the pack goes.
        try sync()
        if Failpoint.hit("compact.remove") { throw .io(path: packs.path(of: number), errno: EIO) }
        try removeIfUnnamed(number)
        return copied
    }

    /// The record's bytes when it reads and matches its id; a damaged record is noted (for repair) and keeps its pack
    /// from being compacted: damage deletes nothing (docs/store-format.md, "Damage").
    private func copyable(_ original: ChunkLocation, in number: Int64) throws(StoreError) -> [UInt8]? {
        do throws(StoreError) {
            let ciphertext = try packs.read(original)
            guard BLAKE2b.hash(ciphertext) == original.id else {
                throw StoreError.corrupt(object: "chunk \(original.id.hex)", reason: "bytes do not match its id")
            }
            return ciphertext
        } catch {
            guard case .corrupt = error else { throw error }
            noteDamaged(original.id, error)
            logger.warning("pack \(packs.path(of: number)) not compacted: \(error)")
            return nil
        }
    }

    /// Removes pack `number` if no row names it, checked under the catalog's write lock so that no transaction
    /// can name it meanwhile (a record copied before its writer recorded it is recorded at its copy: `relocate`).
    private func removeIfUnnamed(_ number: Int64) throws(StoreError) {
        try catalog.write { db in
            let sql = "SELECT COUNT(*) FROM chunks WHERE pack = ?"
            guard try Int.fetchOne(db, sql: sql, arguments: [number]) == 0 else {
                return logger.warning("pack \(number) still named by the catalog: left for the next pass")
            }
            try packs.remove(number)
        }
    }

    /// Run at start (`reclaimSpace`): removes the packs before the one appended to that no row names, which a
    /// compaction stopped after its switch (a crash, a failed removal) leaves behind.
    func finishCompaction() throws(StoreError) {
        let appending = packs.appendingPack
        for number in try PackStore.packNumbers(in: home.packsDirectory) where number < appending {
            let named = try catalog.read { db in
                try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM chunks WHERE pack = ?", arguments: [number]) ?? 0
            }
            guard named == 0 else { continue }
            let size = packs.size(of: number)
            try packs.remove(number)
            logger.notice(
                "removed \(packs.path(of: number)), which no catalog row names", metadata: ["bytes": "\(size)"])
        }
    }
}

struct PackUsage {
    var number: Int64
    var size: Int64
    /// Bytes of records no row names and no write in flight will name.
    var dead: Int64

    var isDue: Bool {
        dead > 0 && Double(dead) / Double(max(1, size - Int64(PackStore.header.count))) >= Store.deadShareThreshold
    }
}

/// What `collectGarbage` did (`hypernet gc --json`).
public struct GarbageReport: Codable, Sendable {
    public var dryRun: Bool

    public init(dryRun: Bool) { self.dryRun = dryRun }

    /// Dead bytes in all packs when the pass began.
    public var deadBytes: Int64 = 0
    /// Packs past the threshold, and those rewritten.
    public var packsDue = 0
    public var packsRewritten = 0
    /// Bytes given back to the file system (a dry run: that the due packs would give back).
    public var bytesReclaimed: Int64 = 0
    public var liveBytesCopied: Int64 = 0
    public var seconds = 0.0
    /// What the retention policies released (a dry run: would release; docs/design.md, "Retention decisions");
    /// on a node without a mount, what the owners' release statements released; absent with `--keep-all`.
    public var retention: CollectionSummary?
    /// Why the retention step released nothing.
    public var retentionError: String?
}

/// Pack `pack` of `of` is being rewritten.
public struct GarbageProgress: Codable, Sendable {
    public var pack: Int
    public var of: Int
    public var bytes: Int64
}
