import Dispatch
import Glibc
import HypernetModel
import HypernetStore
import Synchronization

/// Chunks requested from peers, shared by every session so that one chunk is fetched once even when
/// several peers offer the revision that lists it.
final class ChunkFetcher: Sendable {
    private struct Slot {
        var owner: any PeerLink
        var location: ChunkLocation?
        var failed = false
        /// Why this node could not store the chunk it received (not the peer's fault).
        var localFailure: StoreError?
        var waiters: [DispatchSemaphore] = []
        /// Fetches that still have to read the slot: a forgotten slot goes only once they have.
        var readers = 0
        var forgotten = false
    }
    private let slots = Mutex<[ChunkID: Slot]>([:])
    /// A fetch gives up when no requested chunk arrived for this long.
    static let stallLimit: DispatchTimeInterval = .seconds(60)
    static let wantBatch = 4096

    /// Fetches `ids` (absent from the catalog) through `session`, or waits for another session already
    /// fetching them. Returns the locations of those that arrived; the rest are missing (also those still
    /// awaited at `deadline`). Each slot signals each of its waiters once, so waiting costs O(1) per chunk.
    func fetch(_ ids: [ChunkID], via session: any PeerLink, until deadline: DispatchTime = .distantFuture)
        -> [ChunkID: ChunkLocation]
    {
        let semaphore = DispatchSemaphore(value: 0)
        var request: [ChunkID] = []
        var outstanding = 0
        slots.withLock { slots in
            for id in ids {
                if var slot = slots[id], !slot.failed, slot.location != nil || !slot.owner.isEnded {
                    slot.readers += 1
                    slots[id] = slot
                    // Another live session is fetching it (or has): wait for that one.
                    guard slot.location == nil else { continue }
                    slots[id]!.waiters.append(semaphore)
                } else {
                    slots[id] = Slot(owner: session, waiters: [semaphore], readers: (slots[id]?.readers ?? 0) + 1)
                    request.append(id)
                }
                outstanding += 1
            }
        }
        for start in stride(from: 0, to: request.count, by: Self.wantBatch) {
            session.send(.want(Array(request[start..<min(start + Self.wantBatch, request.count)])))
        }
        var stalled = DispatchTime.now()
        while outstanding > 0 {
            if semaphore.wait(timeout: min(.now() + .seconds(1), deadline)) == .success {
                outstanding -= 1
                stalled = .now()
            } else if session.isEnded || DispatchTime.now() > min(stalled + Self.stallLimit, deadline) {
                break
            }
        }
        return slots.withLock { slots in
            var found: [ChunkID: ChunkLocation] = [:]
            for id in ids {
                guard var slot = slots[id] else { continue }
                if let l = slot.location { found[id] = l }
                slot.readers -= 1
                slots[id] = slot.forgotten && slot.readers == 0 ? nil : slot
            }
            return found
        }
    }

    /// Waits until every one of `ids` has been pushed here (by any session), or `timeout` passes. Polls
    /// every 5 ms: pushes land in slots without waking anyone, and this wait is short and rare.
    func awaitPushes(_ ids: [ChunkID], timeout: Duration) {
        let deadline = ContinuousClock.now + timeout
        var waiting = ids
        while ContinuousClock.now < deadline {
            waiting = slots.withLock { slots in waiting.filter { slots[$0]?.location == nil } }
            if waiting.isEmpty { return }
            usleep(5_000)
        }
    }

    /// Those of `ids` pushed here (or fetched) and in the packs, without waiting.
    func arrived(among ids: [ChunkID]) -> [ChunkID: ChunkLocation] {
        slots.withLock { slots in
            var found: [ChunkID: ChunkLocation] = [:]
            for id in ids { if let l = slots[id]?.location { found[id] = l } }
            return found
        }
    }

    /// A requested chunk arrived and is in the packs.
    func arrived(_ location: ChunkLocation) {
        resolve(location.id) { $0.location = location }
    }

    /// A chunk the peer sent unasked, ahead of the run that lists it: a later fetch finds it here.
    func pushed(_ location: ChunkLocation, by session: any PeerLink) {
        let fetching = slots.withLock { slots in
            guard slots[location.id] == nil else { return true }
            slots[location.id] = Slot(owner: session, location: location)
            return false
        }
        // Already asked for (the run overtook its pushed chunks): this copy answers the fetch.
        if fetching { arrived(location) }
    }

    /// The peer does not hold a requested chunk, or sent bytes that do not match its id; or, with `locally`,
    /// this node could not store the bytes.
    func failed(_ id: ChunkID, locally error: StoreError? = nil) {
        resolve(id) {
            $0.failed = true
            $0.localFailure = error
        }
    }

    /// Why this node could not store one of `ids` it fetched, if that is why one is missing.
    func localFailure(among ids: [ChunkID]) -> StoreError? {
        slots.withLock { slots in
            for id in ids { if let error = slots[id]?.localFailure { return error } }
            return nil
        }
    }

    func isRequested(_ id: ChunkID, by session: any PeerLink) -> Bool {
        slots.withLock { $0[id].map { $0.owner === session && $0.location == nil && !$0.failed } ?? false }
    }

    /// Chunks now recorded in the catalog need no slot (once every fetch waiting for one has read it).
    func forget(_ ids: some Sequence<ChunkID>) {
        slots.withLock { slots in
            for id in ids where slots[id]?.location != nil {
                if slots[id]!.readers == 0 { slots.removeValue(forKey: id) } else { slots[id]!.forgotten = true }
            }
        }
    }

    /// Everything a closed session was fetching fails, so waiters elsewhere can ask another peer.
    func sessionEnded(_ session: any PeerLink) {
        let waiters = slots.withLock { slots in
            var woken: [DispatchSemaphore] = []
            for (id, slot) in slots where slot.owner === session {
                if slot.location != nil {
                    // Arrived but never claimed by a stored revision (pushed ahead of a run that never came).
                    if slot.readers == 0 { slots.removeValue(forKey: id) }
                    continue
                }
                slots[id]!.failed = true
                woken += slot.waiters
            }
            return woken
        }
        for w in waiters { w.signal() }
    }

    private func resolve(_ id: ChunkID, _ change: (inout Slot) -> Void) {
        let waiters = slots.withLock { slots -> [DispatchSemaphore] in
            guard var slot = slots[id] else { return [] }
            change(&slot)
            let w = slot.waiters
            slot.waiters = []
            slots[id] = slot
            return w
        }
        for w in waiters { w.signal() }
    }
}
