import Dispatch
import HypernetModel
import Synchronization

/// Where a sequential reader of content held on demand should have its next bytes fetched ahead (issue 17, item 4):
/// a window past each read that doubles while reads follow one another, up to `maximum`, and falls back to
/// `initial` after a seek. A read starting within a window of where the last one ended counts as sequential: the
/// kernel's own readahead sends its reads concurrently, so they arrive slightly out of order. A refill is asked for
/// only once less than half the window is left ahead, so fetches go out in batches of at least half a window rather
/// than one per kernel read.
public struct ReadaheadWindow: Sendable, Equatable {
    public static let initial: UInt64 = 1 << 20
    public static let maximum: UInt64 = 32 << 20

    /// Where a sequential read would start.
    private var expected: UInt64?
    public private(set) var window: UInt64 = initial
    /// The end of what was asked for ahead.
    public private(set) var requestedTo: UInt64 = 0

    public init() {}

    /// Records a read of `read` in content of `size` bytes; returns the byte range to fetch ahead now, if any.
    public mutating func next(after read: Range<UInt64>, size: UInt64) -> Range<UInt64>? {
        if let last = expected, read.lowerBound + window >= last, read.lowerBound <= last + window {
            window = min(window * 2, Self.maximum)
            expected = max(last, read.upperBound)
        } else {
            window = Self.initial
            requestedTo = read.upperBound
            expected = read.upperBound
        }
        requestedTo = max(requestedTo, read.upperBound)
        let target = min(size, read.upperBound + window)
        guard target > requestedTo, requestedTo - read.upperBound < window / 2 else { return nil }
        defer { requestedTo = target }
        return requestedTo..<target
    }
}

/// The readahead of one open file (or stream) of content that may be held on demand.
public final class Readahead: Sendable {
    private let window = Mutex(ReadaheadWindow())

    public init() {}

    /// Records a read of `range` in content made of `chunks` (starting at `offsets`, one extra element holding the
    /// end), and has `store` fetch ahead what the window asks for.
    public func read(_ range: Range<UInt64>, of chunks: [ChunkReference], offsets: [UInt64], store: Store) {
        guard !range.isEmpty, let size = offsets.last,
            let ahead = window.withLock({ $0.next(after: range, size: size) })
        else { return }
        store.prefetch(ahead, of: chunks, offsets: offsets)
    }
}

extension Store {
    /// Fetches those of `ids` that are absent here in the background (a readahead): a read that needs one of them
    /// meanwhile waits for that same fetch (`ChunkFetcher`), and a failure here only leaves the read to ask again.
    public func prefetch(_ ids: [ChunkID]) {
        guard contentSource.withLock({ $0 }) != nil else { return }
        let wanted = ids.filter { !holds($0) }
        guard !wanted.isEmpty else { return }
        DispatchQueue.global(qos: .utility).async { [self] in _ = try? fetchAbsent(wanted) }
    }
}

extension Store {
    /// Prefetches the chunks of `chunks` (starting at `offsets`, one extra element holding the end) that overlap
    /// `range`.
    public func prefetch(_ range: Range<UInt64>, of chunks: [ChunkReference], offsets: [UInt64]) {
        // The first chunk ending past the range's start.
        var lo = 0
        var hi = chunks.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if offsets[mid + 1] <= range.lowerBound { lo = mid + 1 } else { hi = mid }
        }
        var ids: [ChunkID] = []
        while lo < chunks.count, offsets[lo] < range.upperBound {
            if !chunks[lo].isHole { ids.append(chunks[lo].id) }
            lo += 1
        }
        prefetch(ids)
    }

    /// Hands the content under `root` from byte `start` to `body` in order, a chunk (or up to 1 MiB of a hole) at a
    /// time, as it reads: content held on demand streams as its chunks arrive, the next ones fetched ahead. Stops when
    /// `body` returns false.
    public func streamContent(_ root: ManifestReference?, from start: UInt64 = 0, _ body: ([UInt8]) -> Bool)
        throws(StoreError)
    {
        let chunks = try loadManifest(root).chunks
        var offsets: [UInt64] = [0]
        for c in chunks { offsets.append(offsets.last! + c.length) }
        let readahead = Readahead()
        for (i, c) in chunks.enumerated() where offsets[i + 1] > start {
            let skip = Int(start > offsets[i] ? start - offsets[i] : 0)
            readahead.read(offsets[i] + UInt64(skip)..<offsets[i + 1], of: chunks, offsets: offsets, store: self)
            guard c.isHole else {
                let bytes = try readChunk(c)
                guard body(skip == 0 ? bytes : Array(bytes[skip...])) else { return }
                continue
            }
            var left = c.length - UInt64(skip)
            while left > 0 {
                let n = min(left, 1 << 20)
                guard body([UInt8](repeating: 0, count: Int(n))) else { return }
                left -= n
            }
        }
    }
}
