import Dispatch
import Glibc
import HypernetModel
import HypernetStore
import Synchronization

/// Chunks requested from peers, shared by every session so that one chunk is fetched once even when
/// several peers offer the revision that lists it (a multi-source fetch may ask a second peer: `request`).
final class ChunkFetcher: Sendable {
    private struct Slot {
        var owner: any PeerLink
        var location: ChunkLocation?
        var failed = false
        /// Why this node could not store the chunk it received (not the peer's fault).
        var localFailure: StoreError?
        var waiters: [DispatchSemaphore] = []
        /// The link whose copy is being stored: a copy from another link meanwhile is dropped (end game, re-issue).
        var storing: ObjectIdentifier?
        /// Fetches that still have to read the slot: a forgotten slot goes only once they have.
        var readers = 0
        var forgotten = false
    }
    /// What one chunk frame answering a `want` brought.
    enum Answer {
        case held(ChunkLocation)
        /// "Not held", or bytes that do not match the id.
        case notHeld
        /// The bytes matched but this node could not store them.
        case localFailure(StoreError)
    }
    private struct State {
        var slots: [ChunkID: Slot] = [:]
        /// Chunks runs' fetches still need (`hold`, a count): their slots outlive `forget`.
        var held: [ChunkID: Int] = [:]
        /// Per link, the ids asked of it with `want` and not answered yet (a count: one id may be asked twice).
        var asked: [ObjectIdentifier: (link: any PeerLink, ids: [ChunkID: Int])] = [:]

        mutating func ask(_ ids: some Sequence<ChunkID>, of link: any PeerLink) {
            var entry = asked[ObjectIdentifier(link)] ?? (link, [:])
            for id in ids { entry.ids[id, default: 0] += 1 }
            asked[ObjectIdentifier(link)] = entry
        }

        /// Another live link still asked for `id`, if any.
        func otherAsker(of id: ChunkID, than link: ObjectIdentifier) -> (any PeerLink)? {
            asked.first { $0.key != link && $0.value.ids[id] != nil && !$0.value.link.isEnded }?.value.link
        }
    }
    private let state = Mutex(State())
    /// Answers to `want`s so far, from any link: a fetch whose requests wait in a queue that moves is not stalled.
    private let answers = Atomic<Int>(0)
    var answerCount: Int { answers.load(ordering: .relaxed) }
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
        state.withLock { s in
            for id in ids {
                if var slot = s.slots[id], !slot.failed, slot.location != nil || !slot.owner.isEnded {
                    slot.readers += 1
                    s.slots[id] = slot
                    // Another live session is fetching it (or has): wait for that one.
                    guard slot.location == nil else { continue }
                    s.slots[id]!.waiters.append(semaphore)
                } else {
                    s.slots[id] = Slot(owner: session, waiters: [semaphore], readers: (s.slots[id]?.readers ?? 0) + 1)
                    request.append(id)
                }
                outstanding += 1
            }
            s.ask(request, of: session)
        }
        send(request, to: session)
        var stalled = DispatchTime.now()
        while outstanding > 0 {
            if semaphore.wait(timeout: min(.now() + .seconds(1), deadline)) == .success {
                outstanding -= 1
                stalled = .now()
            } else if session.isEnded || DispatchTime.now() > min(stalled + Self.stallLimit, deadline) {
                break
            }
        }
        return release(ids)
    }

    /// Asks `link` for `ids` without waiting (a multi-source fetch, `DemandFetcher`); `wake` is signalled as each
    /// is answered for good. An id another live link is asked for already is asked of `link` too only when in
    /// `again` (the end game, or a re-issue), else it waits for that answer. Every id is to be `release`d once.
    func request(_ ids: [ChunkID], via link: any PeerLink, again: Set<ChunkID> = [], waking wake: DispatchSemaphore) {
        let asked = state.withLock { s -> [ChunkID] in
            var asked: [ChunkID] = []
            for id in ids {
                if var slot = s.slots[id], !slot.failed {
                    slot.readers += 1
                    if slot.location == nil {
                        slot.waiters.append(wake)
                        let pending = s.otherAsker(of: id, than: ObjectIdentifier(link))
                        let askedHere = s.asked[ObjectIdentifier(link)]?.ids[id] != nil
                        if !askedHere && (pending == nil || again.contains(id)) { asked.append(id) }
                        if slot.owner.isEnded { slot.owner = pending ?? link }
                    }
                    s.slots[id] = slot
                } else {
                    s.slots[id] = Slot(owner: link, waiters: [wake], readers: (s.slots[id]?.readers ?? 0) + 1)
                    asked.append(id)
                }
            }
            s.ask(asked, of: link)
            return asked
        }
        send(asked, to: link)
    }

    /// Of `requests` (a chunk, the link asked for it), the chunks that arrived (from any link), and the requests
    /// over without the chunk: answered "not held" (or lost with their link) with no other live link asked for it.
    func poll(_ requests: [(ChunkID, any PeerLink)]) -> (
        arrived: [ChunkLocation], unanswered: [(ChunkID, any PeerLink)]
    ) {
        state.withLock { s in
            var arrived: [ChunkLocation] = []
            var unanswered: [(ChunkID, any PeerLink)] = []
            for (id, link) in requests {
                if let l = s.slots[id]?.location {
                    arrived.append(l)
                } else if s.asked[ObjectIdentifier(link)]?.ids[id] == nil,
                    s.slots[id]?.failed ?? true || s.otherAsker(of: id, than: ObjectIdentifier(link)) == nil
                {
                    unanswered.append((id, link))
                }
            }
            return (arrived, unanswered)
        }
    }

    /// The fetches reading `ids` are done with them; returns the locations of those that arrived.
    @discardableResult
    func release(_ ids: some Sequence<ChunkID>) -> [ChunkID: ChunkLocation] {
        state.withLock { s in
            var found: [ChunkID: ChunkLocation] = [:]
            for id in ids {
                guard var slot = s.slots[id] else { continue }
                if let l = slot.location { found[id] = l }
                slot.readers -= 1
                s.slots[id] = slot.forgotten && slot.readers == 0 && s.held[id] == nil ? nil : slot
            }
            return found
        }
    }

    private func send(_ ids: [ChunkID], to link: any PeerLink) {
        for start in stride(from: 0, to: ids.count, by: Self.wantBatch) {
            link.send(.want(Array(ids[start..<min(start + Self.wantBatch, ids.count)])))
        }
    }

    /// Waits until every one of `ids` has been pushed here (by any session), or `timeout` passes. Polls
    /// every 5 ms: pushes land in slots without waking anyone, and this wait is short and rare.
    func awaitPushes(_ ids: [ChunkID], timeout: Duration) {
        let deadline = ContinuousClock.now + timeout
        var waiting = ids
        while ContinuousClock.now < deadline {
            waiting = state.withLock { s in waiting.filter { s.slots[$0]?.location == nil } }
            if waiting.isEmpty { return }
            usleep(5_000)
        }
    }

    /// Those of `ids` pushed here (or fetched) and in the packs, without waiting.
    func arrived(among ids: [ChunkID]) -> [ChunkID: ChunkLocation] {
        state.withLock { s in
            var found: [ChunkID: ChunkLocation] = [:]
            for id in ids { if let l = s.slots[id]?.location { found[id] = l } }
            return found
        }
    }

    /// A chunk the peer sent unasked, ahead of the run that lists it: a later fetch finds it here.
    func pushed(_ location: ChunkLocation, by session: any PeerLink) {
        let fetching = state.withLock { s in
            guard s.slots[location.id] == nil else { return true }
            s.slots[location.id] = Slot(owner: session, location: location)
            return false
        }
        // Already asked for (the run overtook its pushed chunks): this copy answers the fetch.
        if fetching { resolve(location.id) { $0.location = location } }
    }

    /// Whether the copy of `id` that `link` sent answering its `want` is to be stored: the chunk has neither arrived
    /// from another link nor is a copy from another being stored, so each chunk is stored once. True claims it for
    /// `link` until it has `answered`.
    func claim(_ id: ChunkID, by link: any PeerLink) -> Bool {
        state.withLock { s in
            guard let slot = s.slots[id], slot.location == nil, slot.storing == nil else { return false }
            s.slots[id]!.storing = ObjectIdentifier(link)
            return true
        }
    }

    /// `link` answered its `want` of `id`. "Not held" fails the chunk only when no other live link is asked for
    /// it; a copy that arrived from another link first is kept, this one dropped.
    func answered(_ id: ChunkID, by link: any PeerLink, _ answer: Answer) {
        answers.add(1, ordering: .relaxed)
        let key = ObjectIdentifier(link)
        let settled = state.withLock { s -> Bool in
            if let n = s.asked[key]?.ids[id] { s.asked[key]!.ids[id] = n > 1 ? n - 1 : nil }
            if s.slots[id]?.storing == key { s.slots[id]!.storing = nil }
            guard case .notHeld = answer else { return true }
            return s.otherAsker(of: id, than: key) == nil
        }
        switch answer {
        case .held(let location):
            resolve(id) {
                if $0.location == nil { $0.location = location }
                $0.failed = false
            }
        case .notHeld where settled: resolve(id) { if $0.location == nil { $0.failed = true } }
        case .notHeld: break
        case .localFailure(let error):
            resolve(id) {
                $0.failed = true
                $0.localFailure = error
            }
        }
    }

    /// A new fetch of `ids` starts: what kept this node's store from storing them before is forgotten (the disk may
    /// have room now), so that `localFailure` tells of this fetch.
    func forgetLocalFailures(_ ids: [ChunkID]) {
        state.withLock { s in for id in ids where s.slots[id]?.localFailure != nil { s.slots[id]!.localFailure = nil } }
    }

    /// Why this node could not store one of `ids` it fetched, if that is why one is missing.
    func localFailure(among ids: [ChunkID]) -> StoreError? {
        state.withLock { s in
            for id in ids { if let error = s.slots[id]?.localFailure { return error } }
            return nil
        }
    }

    /// Whether `id` was asked of `session` and not answered yet: its `chunk` frame answers a `want`.
    func isRequested(_ id: ChunkID, by session: any PeerLink) -> Bool {
        state.withLock { $0.asked[ObjectIdentifier(session)]?.ids[id] != nil }
    }

    /// A run's fetch needs `ids` until `unhold`: one of them that another fetch gets and stores meanwhile keeps its
    /// slot, so that this fetch finds it arrived instead of asking for it again once the other forgot it.
    func hold(_ ids: [ChunkID]) {
        state.withLock { s in for id in ids { s.held[id, default: 0] += 1 } }
    }

    func unhold(_ ids: [ChunkID]) {
        state.withLock { s in
            for id in ids {
                guard let n = s.held[id] else { continue }
                s.held[id] = n > 1 ? n - 1 : nil
                if n == 1, let slot = s.slots[id], slot.forgotten, slot.readers == 0 { s.slots[id] = nil }
            }
        }
    }

    /// Chunks now recorded in the catalog need no slot (once every fetch waiting for one has read it).
    func forget(_ ids: some Sequence<ChunkID>) {
        state.withLock { s in
            for id in ids where s.slots[id]?.location != nil {
                if s.slots[id]!.readers == 0 && s.held[id] == nil {
                    s.slots.removeValue(forKey: id)
                } else {
                    s.slots[id]!.forgotten = true
                }
            }
        }
    }

    /// Everything a closed session was fetching fails, unless another live link is asked for it too, so waiters
    /// elsewhere can ask another peer.
    func sessionEnded(_ session: any PeerLink) {
        let key = ObjectIdentifier(session)
        let waiters = state.withLock { s in
            let asked = s.asked.removeValue(forKey: key)?.ids ?? [:]
            var woken: [DispatchSemaphore] = []
            for (id, slot) in s.slots where slot.owner === session || asked[id] != nil {
                if slot.location != nil {
                    // Arrived but never claimed by a stored revision (pushed ahead of a run that never came).
                    if slot.readers == 0, slot.owner === session { s.slots.removeValue(forKey: id) }
                    continue
                }
                if let other = s.otherAsker(of: id, than: key) {
                    s.slots[id]!.owner = other
                    continue
                }
                s.slots[id]!.failed = true
                woken += slot.waiters
                s.slots[id]!.waiters = []
            }
            return woken
        }
        for w in waiters { w.signal() }
    }

    private func resolve(_ id: ChunkID, _ change: (inout Slot) -> Void) {
        let waiters = state.withLock { s -> [DispatchSemaphore] in
            guard var slot = s.slots[id] else { return [] }
            change(&slot)
            let w = slot.waiters
            slot.waiters = []
            s.slots[id] = slot
            return w
        }
        for w in waiters { w.signal() }
    }
}
