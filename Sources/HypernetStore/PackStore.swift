import Glibc
import HypernetCrypto
import HypernetFailpoint
import HypernetModel
import Synchronization

/// Where a chunk's record lies: pack number and the offset of the record header.
public struct ChunkLocation: Sendable, Equatable {
    public var id: ChunkID
    public var pack: Int64
    public var offset: Int64
    public var length: Int64
}

/// Append-only pack files: `packs/NNNNNNNN.pack`, an 8-byte header then records
/// `u32 length | 32-byte chunk id | ciphertext`. A record, once written, is never modified (docs/store-format.md).
final class PackStore: Sendable {
    static let header: [UInt8] = Array("HNPACK".utf8) + [0, 1]
    static let recordHeaderSize = 4 + Digest.byteCount
    static let maximumPackSize: Int64 = 1 << 32
    static let maximumRecordLength = 1 << 24
    /// Durable pack bytes this far behind the end stay in the page cache; older ones are dropped from it after
    /// each sync (drop-behind). Peers fetch what was just written, rarely what is older, and reads of old content
    /// go through a decryption that costs more than the disk read. The kernel then recycles the dropped pages for
    /// new writes: on a VM a page the guest has never used costs a fault in the host, which made filling the
    /// cache cost ten times a copy (400 MB/s against 4 GB/s on this project's machines, docs/BENCHMARKS.md).
    static let hotBytes: Int64 = 64 << 20

    private struct Writable {
        var number: Int64
        var fd: Int32
        var size: Int64
        /// Packs appended to since the last `sync`.
        var unsynced: Set<Int64>
        /// Bytes of the current pack below this offset have been dropped from the page cache.
        var dropped: Int64 = 0
    }

    private let directory: String
    private let writable: Mutex<Writable>
    private let syncing = Mutex(())
    /// Read descriptors by pack number; opened lazily, closed at deinit or after the pack is removed.
    private let readers = Mutex<[Int64: Int32]>([:])
    /// Records appended and not yet named by a committed catalog row (`settle`) nor given back (`discard`): a
    /// write between its appends and its transaction, or a chunk a peer pushed ahead of the revision listing it.
    /// Compaction copies them with the live records (docs/store-format.md, "Compaction").
    private let inFlight = Mutex<[RecordKey: InFlight]>([:])
    /// Read descriptors of removed packs, closed at the next removal (`remove`).
    private let retired = Mutex<[Int32]>([])
    /// Packs compaction removed.
    private let removed = Mutex<Set<Int64>>([])
    /// Where compaction copied each record of the packs it removed: a location taken before the catalog switched
    /// (a reader's, a writer's still to be recorded) finds its record there (`current`).
    private let moved = Mutex<[RecordKey: ChunkLocation]>([:])

    struct RecordKey: Hashable {
        var pack: Int64
        var offset: Int64
    }

    struct InFlight {
        var location: ChunkLocation
        var written: Bool
        var since: ContinuousClock.Instant
    }

    /// The last pack, when its header is damaged: it is never appended to (`init` opens the next one), and
    /// reading it fails as corrupt like reading any pack with a bad header.
    let damagedLast: Int64?

    init(directory: String) throws(StoreError) {
        self.directory = directory
        try Home.makeDirectory(directory)
        var last = try Self.packNumbers(in: directory).max() ?? 1
        var opened: (fd: Int32, size: Int64)
        do {
            opened = try Self.openForAppend(directory: directory, number: last)
            damagedLast = nil
        } catch {
            guard case .corrupt = error else { throw error }
            damagedLast = last
            last += 1
            opened = try Self.openForAppend(directory: directory, number: last)
        }
        writable = Mutex(Writable(number: last, fd: opened.fd, size: opened.size, unsynced: []))
    }

    deinit {
        writable.withLock { _ = close($0.fd) }
        readers.withLock { for fd in $0.values { close(fd) } }
        retired.withLock { for fd in $0 { close(fd) } }
    }

    func path(of number: Int64) -> String { Self.path(directory: directory, number: number) }

    static func path(directory: String, number: Int64) -> String {
        let digits = String(number)
        return directory + "/" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits + ".pack"
    }

    static func packNumbers(in directory: String) throws(StoreError) -> [Int64] {
        guard let dir = opendir(directory) else { throw .io(path: directory, errno: errno) }
        defer { closedir(dir) }
        var numbers: [Int64] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name.hasSuffix(".pack"), let n = Int64(name.dropLast(5)) { numbers.append(n) }
        }
        return numbers.sorted()
    }

    private static func openForAppend(directory: String, number: Int64) throws(StoreError) -> (Int32, Int64) {
        let path = Self.path(directory: directory, number: number)
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .io(path: path, errno: errno) }
        var st = stat()
        fstat(fd, &st)
        var size = Int64(st.st_size)
        if size < Int64(header.count) {
            // New, or a header torn by a crash before any record: (re)write it.
            let written = header.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
            guard written == header.count else { throw .io(path: path, errno: errno) }
            size = Int64(header.count)
        } else {
            do throws(StoreError) { try checkHeader(fd, path: path) } catch {
                close(fd)
                throw error
            }
        }
        return (fd, size)
    }

    /// A pack whose header differs is not read at all (docs/store-format.md, "Pack file"): its chunks are corrupt.
    private static func checkHeader(_ fd: Int32, path: String) throws(StoreError) {
        var found = [UInt8](repeating: 0, count: header.count)
        let n = found.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n == header.count, found == header else {
            throw .corrupt(object: "pack \(path)", reason: "bad header (unknown format or not a pack)")
        }
    }

    /// Appends one record; the bytes are in the kernel (safe against a process crash) when this returns,
    /// on disk only after `sync`.
    func append(id: ChunkID, ciphertext: [UInt8]) throws(StoreError) -> ChunkLocation {
        if Failpoint.hit("pack.append") { throw .io(path: directory, errno: EIO) }
        var header = [UInt8]()
        header.reserveCapacity(Self.recordHeaderSize)
        withUnsafeBytes(of: UInt32(ciphertext.count).littleEndian) { header.append(contentsOf: $0) }
        id.withUnsafeBytes { header.append(contentsOf: $0) }
        let length = Int64(header.count + ciphertext.count)
        let (fd, number, offset): (Int32, Int64, Int64) = try writable.withLock { (w) throws(StoreError) in
            if w.size + length > Self.maximumPackSize { try roll(&w) }
            let offset = w.size
            w.size += length
            let location = ChunkLocation(id: id, pack: w.number, offset: offset, length: Int64(ciphertext.count))
            inFlight.withLock {
                $0[RecordKey(pack: w.number, offset: offset)] = InFlight(
                    location: location, written: false, since: .now)
            }
            return (w.fd, w.number, offset)
        }
        // Marked unsynced once written, not when reserved: a sync running meanwhile must not clear the mark
        // before these bytes exist.
        defer { writable.withLock { _ = $0.unsynced.insert(number) } }
        // Header and ciphertext in one system call, without copying the ciphertext behind the header.
        var done = 0
        while done < Int(length) {
            let n = header.withUnsafeBytes { h in
                ciphertext.withUnsafeBytes { c in
                    if done < h.count {
                        var pieces = [
                            iovec(
                                iov_base: UnsafeMutableRawPointer(mutating: h.baseAddress! + done),
                                iov_len: h.count - done),
                            iovec(iov_base: UnsafeMutableRawPointer(mutating: c.baseAddress), iov_len: c.count),
                        ]
                        return pwritev(fd, &pieces, c.isEmpty ? 1 : 2, off_t(offset) + off_t(done))
                    }
                    return pwrite(
                        fd, c.baseAddress! + (done - h.count), c.count - (done - h.count), off_t(offset) + off_t(done))
                }
            }
            if n < 0 {
                if errno == EINTR { continue }
                let error = StoreError.io(path: path(of: number), errno: errno)
                discard([ChunkLocation(id: id, pack: number, offset: offset, length: Int64(ciphertext.count))])
                throw error
            }
            done += n
        }
        inFlight.withLock { $0[RecordKey(pack: number, offset: offset)]?.written = true }
        return ChunkLocation(id: id, pack: number, offset: offset, length: Int64(ciphertext.count))
    }

    /// Starts the next pack; the old descriptor stays open until synced: it is closed after fsync.
    private func roll(_ w: inout Writable) throws(StoreError) {
        let (fd, size) = try Self.openForAppend(directory: directory, number: w.number + 1)
        fsync(w.fd)
        _ = posix_fadvise(w.fd, 0, 0, POSIX_FADV_DONTNEED)
        close(w.fd)
        w.unsynced.remove(w.number)
        w = Writable(number: w.number + 1, fd: fd, size: size, unsynced: w.unsynced)
    }

    /// Appends go to a new pack from now on, so that the one appended to so far can be compacted.
    func roll() throws(StoreError) {
        try writable.withLock { (w) throws(StoreError) in try roll(&w) }
    }

    /// Reads the ciphertext at `location`, checking the record header names the expected chunk.
    func read(_ location: ChunkLocation) throws(StoreError) -> [UInt8] {
        let location = current(location)
        let object = "chunk \(location.id.hex) in pack \(path(of: location.pack)) at offset \(location.offset)"
        guard location.length >= 0, location.length <= Self.maximumRecordLength else {
            throw .corrupt(object: object, reason: "length \(location.length) out of range")
        }
        let fd = try reader(location.pack)
        var header = [UInt8](repeating: 0, count: Self.recordHeaderSize)
        try header.withMutableBytes { (b) throws(StoreError) in
            try readFully(fd, b, at: location.offset, object: object)
        }
        let storedLength =
            UInt32(header[0]) | UInt32(header[1]) << 8 | UInt32(header[2]) << 16 | UInt32(header[3]) << 24
        guard Int64(storedLength) == location.length, location.id.withUnsafeBytes({ header[4...].elementsEqual($0) })
        else {
            throw .corrupt(object: object, reason: "record header does not match the catalog")
        }
        // Read straight into the result: no zero-filling, no second copy without the header.
        let count = Int(location.length)
        var result: Result<Void, StoreError> = .success(())
        let ciphertext = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            result = Result { () throws(StoreError) in
                try readFully(
                    fd, UnsafeMutableRawBufferPointer(buffer), at: location.offset + Int64(Self.recordHeaderSize),
                    object: object)
            }
            if case .success = result { initialized = count } else { initialized = 0 }
        }
        try result.get()
        return ciphertext
    }

    private func readFully(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, at offset: Int64, object: String)
        throws(StoreError)
    {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(path: object, errno: errno)
            }
            if n == 0 { throw .corrupt(object: object, reason: "pack truncated") }
            done += n
        }
    }

    private func reader(_ number: Int64) throws(StoreError) -> Int32 {
        try readers.withLock { (fds) throws(StoreError) in
            if let fd = fds[number] { return fd }
            let fd = open(path(of: number), O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw .io(path: path(of: number), errno: errno) }
            do throws(StoreError) { try Self.checkHeader(fd, path: path(of: number)) } catch {
                close(fd)
                throw error
            }
            fds[number] = fd
            return fd
        }
    }

    /// Makes every record appended so far durable.
    func sync() throws(StoreError) {
        // One sync at a time: a caller that finds the mark cleared by a sync still running waits for it.
        try syncing.withLock { (_) throws(StoreError) in
            let (fd, number, pending, size, dropped) = writable.withLock {
                w -> (Int32, Int64, Set<Int64>, Int64, Int64) in
                let pending = w.unsynced
                w.unsynced = []
                return (w.fd, w.number, pending, w.size, w.dropped)
            }
            guard pending.contains(number) else { return }
            if fdatasync(fd) != 0 { throw .io(path: path(of: number), errno: errno) }
            // Every record this far behind the end was written before the sync began, so it is durable and clean.
            let drop = size - Self.hotBytes
            if drop > dropped {
                _ = posix_fadvise(fd, off_t(dropped), off_t(drop - dropped), POSIX_FADV_DONTNEED)
                writable.withLock { w in if w.number == number { w.dropped = max(w.dropped, drop) } }
            }
        }
    }

    /// Cuts the pack being appended to back to the start of `records` if they are its last ones (nothing was
    /// appended after them); they must be records no catalog row names and no reader was given.
    func discard(_ records: [ChunkLocation]) {
        settle(records)
        writable.withLock { w in
            var end = w.size
            for r in records.sorted(by: { $0.offset > $1.offset }) where r.pack == w.number {
                guard r.offset + Int64(Self.recordHeaderSize) + r.length == end else { break }
                end = r.offset
            }
            _ = try? cut(&w, to: end)
        }
    }

    private func cut(_ w: inout Writable, to end: Int64) throws(StoreError) -> Int64 {
        guard end < w.size else { return 0 }
        guard ftruncate(w.fd, off_t(end)) == 0 else { throw .io(path: path(of: w.number), errno: errno) }
        defer { w.size = end }
        w.dropped = min(w.dropped, end)
        return w.size - end
    }

    /// The pack records are appended to.
    var appendingPack: Int64 { writable.withLock { $0.number } }

    /// Cuts the pack being appended to back to `end`, dropping the records after it, and returns the bytes freed.
    /// Only for records no catalog row names (left by writes that failed or never committed), with no append
    /// in flight: at start, under the home lock (`Store.reclaimSpace`).
    func trimTail(to end: Int64) throws(StoreError) -> Int64 {
        try writable.withLock { (w) throws(StoreError) -> Int64 in
            guard end >= Int64(Self.header.count) else { return 0 }
            return try cut(&w, to: end)
        }
    }

    // MARK: Compaction (docs/store-format.md, "Compaction")

    /// `location`, or where compaction copied its record (and the copy's copy, if its pack was compacted too).
    func current(_ location: ChunkLocation) -> ChunkLocation {
        moved.withLock { map in
            var found = location
            while let next = map[RecordKey(pack: found.pack, offset: found.offset)] { found = next }
            return found
        }
    }

    /// Whether `location` names a record of a removed pack that compaction did not copy.
    func wasRemoved(_ location: ChunkLocation) -> Bool {
        let pack = current(location).pack
        return removed.withLock { $0.contains(pack) }
    }

    /// The records are named by committed catalog rows (or were given back): no longer in flight.
    func settle(_ records: [ChunkLocation]) {
        guard !records.isEmpty else { return }
        inFlight.withLock { map in
            for r in records { map.removeValue(forKey: RecordKey(pack: r.pack, offset: r.offset)) }
        }
    }

    /// The records of `pack` in flight, or nil while one of them is still being written. Those older than
    /// `abandonAfter` are dropped instead: a pushed chunk whose revision never came, a write that failed without
    /// giving its records back.
    func inFlight(in pack: Int64, abandonAfter: Duration) -> [ChunkLocation]? {
        inFlight.withLock { map in
            var found: [ChunkLocation] = []
            for (key, record) in map where key.pack == pack {
                if !record.written { return nil }
                if record.since.duration(to: .now) > abandonAfter {
                    map.removeValue(forKey: key)
                } else {
                    found.append(record.location)
                }
            }
            return found
        }
    }

    /// From now on a location naming one of `copies`' originals reads (and is recorded as) its copy.
    func relocate(_ copies: [(from: ChunkLocation, to: ChunkLocation)]) {
        moved.withLock { map in
            for c in copies { map[RecordKey(pack: c.from.pack, offset: c.from.offset)] = c.to }
        }
        inFlight.withLock { map in
            for c in copies { map.removeValue(forKey: RecordKey(pack: c.from.pack, offset: c.from.offset)) }
        }
    }

    /// Deletes pack `number` (never the one appended to) and makes that durable; its records must all have been
    /// copied (`relocate`) or be named by no row.
    func remove(_ number: Int64) throws(StoreError) {
        precondition(number != appendingPack, "the pack appended to is never removed")
        removed.withLock { _ = $0.insert(number) }
        // A read may be using the pack's descriptor right now: closing it could let a new file take its number
        // under that read. It is pointed at /dev/null instead (such a read finds the record truncated, and is
        // retried at the record's new place: `Store.record(of:)`), and closed at the next removal.
        let old = retired.withLock { r in
            defer { r = [] }
            return r
        }
        for fd in old { close(fd) }
        readers.withLock { fds in
            guard let fd = fds.removeValue(forKey: number) else { return }
            let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
            if null >= 0 {
                dup2(null, fd)
                close(null)
            }
            retired.withLock { $0.append(fd) }
        }
        guard unlink(path(of: number)) == 0 || errno == ENOENT else { throw .io(path: path(of: number), errno: errno) }
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(path: directory, errno: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw .io(path: directory, errno: errno) }
    }

    /// Bytes in pack `number` (0 if it is missing).
    func size(of number: Int64) -> Int64 {
        var st = stat()
        return stat(path(of: number), &st) == 0 ? Int64(st.st_size) : 0
    }

    /// Total bytes in all packs.
    func totalSize() -> UInt64 {
        var total: UInt64 = 0
        for n in (try? Self.packNumbers(in: directory)) ?? [] { total += UInt64(size(of: n)) }
        return total
    }
}
