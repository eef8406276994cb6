import CLinux
import Dispatch
import Glibc
import HypernetCrypto
import HypernetModel
import HypernetStore
import Logging
import Synchronization

/// The content of one open regular file: the committed manifest overlaid by writes staged in a sparse
/// memory file (memfd: staging never costs disk bandwidth, and vanishes with the process — it holds
/// nothing that was acknowledged). Staged bytes are sealed into chunks (checkpointed) once they pass
/// `checkpointBytes`, so memory stays bounded however long a file is written without a close. A commit re-chunks only from the chunk holding the first changed byte, and
/// stops early when the new cut points meet old ones again; each new chunk is stored as a delta against the
/// old chunks at its offsets when that is smaller, so an append or a small edit costs about the changed bytes.
///
/// A file growing by `streamBytes` is sealed in the background while the writer goes on (`State.sealing`):
/// writes past the sealed region are staged meanwhile, anything else that changes the state first waits for
/// the seal to end (`settled`).
///
/// Lock order: `FileContent.state` may be held while taking the VFS's state lock, never the reverse.
final class FileContent: Sendable {
    struct State {
        var tree: ManifestTree
        /// `offsets[i]` is where chunk i starts; one extra element holds the committed length.
        var offsets: [UInt64]
        /// Committed bytes below this offset are still part of the file (a truncate lowers it).
        var baseValid: UInt64 {
            didSet { if baseValid < oldValue { holesBelowBase = Self.holes(in: tree, below: baseValid) } }
        }
        /// The committed holes below `baseValid`.
        private(set) var holesBelowBase: UInt64 = 0
        var dirty = RangeSet()
        var size: UInt64
        /// Something changed since the last commit (content, size, or a new file's first revision).
        var modified: Bool
        /// Bytes were written or the size changed since the last revision (not merely created or opened).
        var writtenSinceRevision = false
        /// Bytes written since the last revision: a small count marks a log, whose revisions are due sooner.
        var bytesSinceRevision: UInt64 = 0
        /// The size the last revision committed: growth past it is streamed (see `streamBytes`).
        var revisionSize: UInt64
        var lastCommit: ContinuousClock.Instant = .now
        /// While a background seal runs: the size it seals up to. Writes below it wait for it.
        var sealing: UInt64?
        /// Writes staged while the background seal runs: they stay staged once it is installed.
        var writtenDuringSeal = RangeSet()
        var bytesDuringSeal: UInt64 = 0

        init(tree: ManifestTree, size: UInt64, modified: Bool) {
            self.tree = tree
            offsets = FileContent.offsets(tree)
            baseValid = tree.length
            holesBelowBase = tree.root?.holeBytes ?? 0
            self.size = size
            self.modified = modified
            revisionSize = tree.length
        }

        /// Makes `tree` the committed content, all of it part of the file.
        mutating func rebase(on tree: ManifestTree) {
            self.tree = tree
            offsets = FileContent.offsets(tree)
            baseValid = tree.length
            holesBelowBase = tree.root?.holeBytes ?? 0
        }

        /// The bytes of the file that are holes, as the next commit will store them (less the trimming to whole
        /// blocks): for `st_blocks` while the file is written.
        var holeBytes: UInt64 {
            guard size > baseValid else { return min(holesBelowBase, size) }
            let staged = dirty.intersections(with: baseValid..<size).reduce(0) { $0 + UInt64($1.count) }
            return holesBelowBase + (size - baseValid - staged)
        }

        private static func holes(in tree: ManifestTree, below end: UInt64) -> UInt64 {
            var offset: UInt64 = 0
            var holes: UInt64 = 0
            for c in tree.chunks where offset < end {
                if c.isHole { holes += min(c.length, end - offset) }
                offset += c.length
            }
            return holes
        }
    }

    static let checkpointBytes: UInt64 = 64 << 20
    /// A file that grew by this much since its last revision (a copy, a download) becomes a revision at once,
    /// without waiting for the once-a-second pass: replicas receive a large write while it is being written,
    /// and an fsync at its end waits for the last few MiB only, not for everything written in the last second.
    static let streamBytes: UInt64 = 16 << 20

    let state: Mutex<State>
    /// Entered while a background seal runs.
    let sealGroup = DispatchGroup()
    let stagingFD: Int32
    /// Content held on demand is fetched ahead of sequential reads (`ReadaheadWindow`).
    private let readahead = Readahead()
    private let store: Store
    /// Whose chain's key seals the content (docs/security.md, "Rights").
    private let document: DocumentID
    private let logger: Logger

    init(store: Store, document: DocumentID, tree: ManifestTree, isNew: Bool, logger: Logger) throws(VFSError) {
        self.store = store
        self.document = document
        self.logger = logger
        stagingFD = CLinux_memfd_create("hypernet-staging")
        guard stagingFD >= 0 else { throw VFSError(errno) }
        state = Mutex(State(tree: tree, size: tree.length, modified: isNew))
    }

    deinit {
        close(stagingFD)
    }

    static func offsets(_ tree: ManifestTree) -> [UInt64] {
        var offsets: [UInt64] = [0]
        offsets.reserveCapacity(tree.chunks.count + 1)
        for c in tree.chunks { offsets.append(offsets.last! + c.length) }
        return offsets
    }

    // MARK: Reading

    /// Fills `buffer` with the file's bytes from `offset` (the caller keeps it within `size`).
    func fill(_ buffer: UnsafeMutableRawBufferPointer, at offset: UInt64, state s: State) throws(VFSError) {
        let end = offset + UInt64(buffer.count)
        // Committed bytes first (holes as zeros), zeros past them, then the staged writes on top.
        var pos = offset
        let committedEnd = min(end, s.baseValid)
        if pos < committedEnd, !s.tree.chunks.isEmpty {
            let first = Self.chunkIndex(containing: pos, offsets: s.offsets)
            var last = first
            while last + 1 < s.tree.chunks.count, s.offsets[last + 1] < committedEnd { last += 1 }
            let stored = try readChunks(s.tree.chunks[first...last].filter { !$0.isHole }[...])
            var next = 0
            for i in first...last where pos < committedEnd {
                let chunkStart = s.offsets[i]
                let from = Int(pos - chunkStart)
                let to = Int(min(s.offsets[i + 1], committedEnd) - chunkStart)
                let at = Int(pos - offset)
                let dst = UnsafeMutableRawBufferPointer(rebasing: buffer[at..<at + to - from])
                if s.tree.chunks[i].isHole {
                    dst.initializeMemory(as: UInt8.self, repeating: 0)
                } else {
                    stored[next].withUnsafeBytes {
                        dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[from..<to]))
                    }
                    next += 1
                }
                pos = chunkStart + UInt64(to)
            }
        }
        if pos < end {
            UnsafeMutableRawBufferPointer(rebasing: buffer[Int(pos - offset)...]).initializeMemory(
                as: UInt8.self, repeating: 0)
        }
        for r in s.dirty.intersections(with: offset..<end) {
            var done = 0
            let count = Int(r.count)
            while done < count {
                let n = pread(
                    stagingFD, buffer.baseAddress! + Int(r.lowerBound - offset) + done, count - done,
                    off_t(r.lowerBound) + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw VFSError(EIO)
                }
                if n == 0 { throw VFSError(EIO) }
                done += n
            }
        }
    }

    /// The plaintexts of `references`, decrypted in parallel when there are several (a 1 MiB kernel read
    /// spans about 16 chunks).
    func readChunks(_ references: ArraySlice<ChunkReference>) throws(VFSError) -> [[UInt8]] {
        let references = Array(references)
        let store = self.store
        // Content of a tree held on demand: what this read touches and this node lacks, in one fetch.
        if references.count > 1 { _ = try? store.fetchAbsent(references.map(\.id)) }
        let results = [Result<[UInt8], StoreError>](unsafeUninitializedCapacity: references.count) { out, count in
            // Each iteration initializes its own slot; concurrentPerform returns when all have.
            nonisolated(unsafe) let slots = out
            let read: @Sendable (Int) -> Void = { i in
                (slots.baseAddress! + i).initialize(
                    to: Result { () throws(StoreError) in try store.readChunk(references[i]) })
            }
            if references.count == 1 {
                read(0)
            } else {
                DispatchQueue.concurrentPerform(iterations: references.count, execute: read)
            }
            count = references.count
        }
        var chunks: [[UInt8]] = []
        for r in results {
            switch r {
            case .success(let bytes): chunks.append(bytes)
            case .failure(let error):
                // Never wrong bytes: the read fails, and the log names the damaged object.
                logger.error("content of document \(document) unreadable: \(error)")
                throw VFSError(EIO)
            }
        }
        return chunks
    }

    static func chunkIndex(containing offset: UInt64, offsets: [UInt64]) -> Int {
        // Last i with offsets[i] <= offset, among chunk starts.
        var lo = 0
        var hi = offsets.count - 2
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if offsets[mid] <= offset { lo = mid } else { hi = mid - 1 }
        }
        return lo
    }

    /// Reads committed chunks without holding the lock (they are immutable), so concurrent readahead
    /// requests decrypt in parallel; a range touching staged bytes is read under the lock.
    func read(offset: UInt64, count: Int) throws(VFSError) -> [UInt8] {
        let committed: (State, Int)? = state.withLock { s in
            guard offset < s.size else { return (s, 0) }
            let n = Int(min(UInt64(count), s.size - offset))
            return s.dirty.intersections(with: offset..<offset + UInt64(n)).isEmpty ? (s, n) : nil
        }
        if let (snapshot, n) = committed {
            // Content held on demand: the chunks a sequential reader will read next are fetched meanwhile.
            let committedEnd = min(offset + UInt64(n), snapshot.baseValid)
            if offset < committedEnd {
                readahead.read(offset..<committedEnd, of: snapshot.tree.chunks, offsets: snapshot.offsets, store: store)
            }
            var out = [UInt8](unsafeUninitializedCapacity: n) { _, count in count = n }  // `fill` writes every byte
            try out.withMutableBytes { (b) throws(VFSError) in
                try fill(b, at: offset, state: snapshot)
            }
            return out
        }
        return try state.withLock { (s) throws(VFSError) -> [UInt8] in
            guard offset < s.size else { return [] }
            let n = Int(min(UInt64(count), s.size - offset))
            var out = [UInt8](unsafeUninitializedCapacity: n) { _, count in count = n }  // `fill` writes every byte
            try out.withMutableBytes { (b) throws(VFSError) in
                try fill(b, at: offset, state: s)
            }
            return out
        }
    }

    /// `lseek` with SEEK_DATA or SEEK_HOLE (`data`: which) from `offset`, as ext4 answers: data in whole blocks
    /// (committed chunks and staged writes), the end of the file counting as a hole. ENXIO at or past the end.
    func seek(_ offset: UInt64, data: Bool) throws(VFSError) -> UInt64 {
        try state.withLock { (s) throws(VFSError) -> UInt64 in
            guard offset < s.size else { throw VFSError(ENXIO) }
            let block = Self.holeAlignment
            // The end of the data run holding the block of `p`, or nil if that block is a hole.
            func dataEnd(_ p: UInt64) -> UInt64? {
                let blockStart = p / block * block
                let blockEnd = blockStart + block
                if let w = s.dirty.intersections(with: blockStart..<blockEnd).last {
                    let whole = s.dirty.intersections(with: w.lowerBound..<s.size).first ?? w
                    return (whole.upperBound + block - 1) / block * block
                }
                guard blockStart < s.baseValid, !s.tree.chunks.isEmpty else { return nil }
                var i = Self.chunkIndex(containing: blockStart, offsets: s.offsets)
                while i < s.tree.chunks.count, s.offsets[i] < min(blockEnd, s.baseValid) {
                    if !s.tree.chunks[i].isHole {
                        return (min(s.offsets[i + 1], s.baseValid) + block - 1) / block * block
                    }
                    i += 1
                }
                return nil
            }
            // The first offset at or after `p` in a block holding data, or nil.
            func nextData(_ p: UInt64) -> UInt64? {
                let blockStart = p / block * block
                var found = s.dirty.intersections(with: blockStart..<s.size).first
                    .map { max(p, $0.lowerBound / block * block) }
                if blockStart < s.baseValid, !s.tree.chunks.isEmpty {
                    var i = Self.chunkIndex(containing: blockStart, offsets: s.offsets)
                    while i < s.tree.chunks.count, s.offsets[i] < min(s.baseValid, found ?? .max) {
                        if !s.tree.chunks[i].isHole {
                            let start = max(p, s.offsets[i] / block * block)
                            found = min(found ?? .max, start)
                            break
                        }
                        i += 1
                    }
                }
                return found
            }
            if data {
                guard let found = nextData(offset), found < s.size else { throw VFSError(ENXIO) }
                return found
            }
            var p = offset
            while p < s.size, let end = dataEnd(p) { p = max(end, p + 1) }
            return min(p, s.size)
        }
    }

    // MARK: Committing

    /// Re-chunks what changed since the last commit and stores the new chunks and manifest. The caller holds
    /// `state` (passed in) so no write slips between the snapshot and `committed`. Bytes never written (past a
    /// truncate or a write beyond the end) become holes, which cost nothing whatever their length.
    static let window = 8 << 20

    func rebuild(_ s: inout State) throws(VFSError) -> (tree: ManifestTree, locations: [ChunkLocation]) {
        let baseSize = s.tree.length
        var changeStart = s.dirty.lowerBound ?? .max
        if s.baseValid < baseSize { changeStart = min(changeStart, s.baseValid) }
        if s.size != baseSize { changeStart = min(changeStart, min(s.size, baseSize)) }
        guard changeStart != .max else { return (s.tree, []) }
        let key: SecureBytes
        do { key = try store.sealing(for: document).key } catch { throw storing(error) }
        let resync = s.size == baseSize && s.baseValid == baseSize
        let changeEnd = s.dirty.upperBound ?? 0

        let old = s.tree.chunks
        var keep = 0
        if !old.isEmpty {
            keep =
                changeStart >= baseSize ? old.count - 1 : Self.chunkIndex(containing: changeStart, offsets: s.offsets)
        }
        var chunks = Array(old[0..<keep])
        var locations: [ChunkLocation] = []
        // Old boundaries where the new cuts may meet the old ones again (only for same-size edits).
        var oldBoundaries: [UInt64: Int] = [:]
        if resync {
            for j in (keep + 1)..<s.offsets.count where s.offsets[j] >= changeEnd { oldBoundaries[s.offsets[j]] = j }
        }
        for segment in Self.segments(s, from: keep < s.offsets.count ? s.offsets[keep] : 0, firstChunk: keep) {
            guard segment.isData else {
                chunks.append(.hole(length: UInt64(segment.range.count)))
                continue
            }
            let resumeAt = try chunk(segment.range, of: s, resyncAt: oldBoundaries, key: key, into: &chunks, &locations)
            if let j = resumeAt {
                chunks += old[j...]
                break
            }
        }
        do {
            let manifest = try store.writeManifest(chunks: chunks, previous: s.tree, unchangedPrefix: keep, key: key)
            return (manifest.tree, locations + manifest.locations)
        } catch {
            store.discard(locations)
            throw storing(error)
        }
    }

    /// Holes are kept in whole blocks of this size, as ext4 does: a partly written block is stored, its unwritten
    /// bytes as zeros, so SEEK_DATA/SEEK_HOLE answer as on a native filesystem.
    static let holeAlignment: UInt64 = 4096

    /// The content from `start` (the start of chunk `firstChunk`) to `size`, cut into runs of data and holes. A
    /// hole is what no write put there: a committed hole, or past the committed bytes (`baseValid`), and not
    /// staged; trimmed to whole blocks, except that one reaching the end of the file ends there.
    static func segments(_ s: State, from start: UInt64, firstChunk: Int) -> [(range: Range<UInt64>, isData: Bool)] {
        var unwritten: [Range<UInt64>] = []
        func add(_ r: Range<UInt64>) {
            guard !r.isEmpty else { return }
            if let last = unwritten.last, last.upperBound == r.lowerBound {
                unwritten[unwritten.count - 1] = last.lowerBound..<r.upperBound
            } else {
                unwritten.append(r)
            }
        }
        var i = firstChunk
        while i < s.tree.chunks.count, s.offsets[i] < min(s.baseValid, s.size) {
            if s.tree.chunks[i].isHole { add(max(start, s.offsets[i])..<min(s.offsets[i + 1], s.baseValid, s.size)) }
            i += 1
        }
        if s.baseValid < s.size { add(max(start, s.baseValid)..<s.size) }
        var out: [(range: Range<UInt64>, isData: Bool)] = []
        var pos = start
        for u in unwritten {
            // Staged writes inside an unwritten run are data.
            var from = u.lowerBound
            for w in s.dirty.intersections(with: u) + [u.upperBound..<u.upperBound] {
                let lower = (from + holeAlignment - 1) / holeAlignment * holeAlignment
                let upper = w.lowerBound == s.size ? s.size : w.lowerBound / holeAlignment * holeAlignment
                if lower < upper {
                    if pos < lower { out.append((pos..<lower, true)) }
                    out.append((lower..<upper, false))
                    pos = upper
                }
                from = w.upperBound
            }
        }
        if pos < s.size { out.append((pos..<s.size, true)) }
        return out
    }

    /// Cuts the data in `range` into chunks (a forced cut at its end) and stores them, appending their references
    /// to `chunks`. Returns the old chunk index to resume at when a cut meets an old boundary in `resyncAt`.
    private func chunk(
        _ range: Range<UInt64>, of s: State, resyncAt oldBoundaries: [UInt64: Int], key: SecureBytes,
        into chunks: inout [ChunkReference], _ locations: inout [ChunkLocation]
    ) throws(VFSError) -> Int? {
        let old = s.tree.chunks
        let baseSize = s.tree.length
        var pos = range.lowerBound
        // Sized to what is left (small files are the common case); `fill` writes every byte it hands out.
        let capacity = Int(min(UInt64(Self.window), UInt64(range.count))) + Chunker.standard.maximum
        var buffer = [UInt8](unsafeUninitializedCapacity: capacity) { _, count in count = capacity }
        var carry = 0  // bytes at the front of `buffer` not yet cut
        while true {
            let readCount = Int(min(UInt64(Self.window), range.upperBound - (pos + UInt64(carry))))
            let atEnd = pos + UInt64(carry + readCount) == range.upperBound
            let state = s
            try buffer.withMutableBytes { (b) throws(VFSError) in
                try fill(
                    UnsafeMutableRawBufferPointer(rebasing: b[carry..<carry + readCount]), at: pos + UInt64(carry),
                    state: state)
            }
            let available = carry + readCount
            var ranges: [Range<Int>] = []
            var start = 0
            var resumeAt: Int? = nil
            buffer.withUnsafeBytes { b in
                while start < available {
                    let rest = UnsafeRawBufferPointer(rebasing: b[start..<available])
                    guard let n = Chunker.standard.firstChunkLength(in: rest, atEnd: atEnd) else { break }
                    ranges.append(start..<start + n)
                    start += n
                    if let j = oldBoundaries[pos + UInt64(start)] {
                        resumeAt = j
                        break
                    }
                }
            }
            // A new chunk's delta bases: the old chunks its range overlaps, from the one covering its first byte
            // (the same chunk after a small edit, the last one after an append, one shifted by less than a chunk
            // after an insertion) to the one covering its last, so a chunk that joins two old ones (an edit
            // removed a cut point, or a revision made mid-rewrite ended one early) costs about the edit. Holes
            // hold nothing to start from.
            let offsets = s.offsets
            let bases = ranges.map { r -> [ChunkReference] in
                let start = pos + UInt64(r.lowerBound)
                let end = pos + UInt64(r.upperBound)
                guard start < baseSize else { return [] }
                let first = Self.chunkIndex(containing: start, offsets: offsets)
                var last = first
                while last + 1 < old.count, offsets[last + 1] < end { last += 1 }
                return old[first...last].filter { !$0.isHole }
            }
            do {
                let written = try buffer.withBytes { (b) throws(StoreError) in
                    try store.writeChunks(b, ranges: ranges, bases: bases, key: key)
                }
                chunks += written.references
                locations += written.locations
            } catch {
                store.discard(locations)
                throw storing(error)
            }
            if let resumeAt { return resumeAt }
            if atEnd && start == available { return nil }
            // Move the uncut tail to the front and read on.
            buffer.withUnsafeMutableBytes { b in
                b.baseAddress!.copyMemory(from: b.baseAddress! + start, byteCount: available - start)
            }
            pos += UInt64(start)
            carry = available - start
        }
    }

    /// The errno for a store failure while sealing, with the log line that says why.
    private func storing(_ error: StoreError) -> VFSError {
        if error.isNoSpace {
            store.noteNoSpace("sealing staged writes", error)
            return VFSError(ENOSPC)
        }
        logger.error("sealing staged writes failed: \(error)")
        if case .rights = error { return VFSError(EACCES) }
        return VFSError(EIO)
    }

    /// Makes `tree` (the staged writes, sealed) the base and empties the staging file.
    func rebase(_ s: inout State, tree: ManifestTree) {
        s.rebase(on: tree)
        s.dirty.removeAll()
        ftruncate(stagingFD, 0)
    }

    /// Runs `body` under the lock once no background seal is running (it would install over the change).
    func settled<T, E: Error>(_ body: (inout State) throws(E) -> T) throws(E) -> T {
        while true {
            var result: T?
            let done = try state.withLock { (c) throws(E) -> Bool in
                guard c.sealing == nil else { return false }
                result = try body(&c)
                return true
            }
            if done { return result! }
            sealGroup.wait()
        }
    }

    /// Marks `snapshot` (the state when the background seal began) committed as a revision with `tree` as its
    /// content; what was written meanwhile stays staged.
    func installSeal(_ s: inout State, tree: ManifestTree, snapshot: State) {
        s.rebase(on: tree)
        // Bytes sealed and not written again leave the staging file.
        var offset: UInt64 = 0
        for r in s.writtenDuringSeal.ranges + [UInt64.max..<UInt64.max] {
            for sealed in snapshot.dirty.intersections(with: offset..<max(offset, r.lowerBound)) {
                _ = CLinux_punch_hole(stagingFD, Int64(sealed.lowerBound), Int64(sealed.count))
            }
            offset = max(offset, r.upperBound)
        }
        s.dirty = s.writtenDuringSeal
        s.writtenDuringSeal.removeAll()
        s.modified = !s.dirty.isEmpty || s.size != tree.length
        s.writtenSinceRevision = s.modified
        s.bytesSinceRevision = s.bytesDuringSeal
        s.bytesDuringSeal = 0
        s.revisionSize = tree.length
        s.lastCommit = .now
    }

    /// Marks the state committed as a revision with `tree` as its content.
    func committed(_ s: inout State, tree: ManifestTree) {
        rebase(&s, tree: tree)
        s.modified = false
        s.writtenSinceRevision = false
        s.bytesSinceRevision = 0
        s.revisionSize = s.size
        s.lastCommit = .now
    }
}
