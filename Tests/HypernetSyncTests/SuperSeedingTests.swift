import HypernetCrypto
import HypernetModel
import Testing

@testable import HypernetSync

/// Super-seeding over a simulated swarm (docs/protocol.md, "Super-seeding"): one seeder and readers that all start
/// together, each node with its `Announcements` answering the others' interests and a `PiecePicker` per reader,
/// every node uploading one chunk at a time at the same rate. Time is simulated: no clock, no socket.
@Suite struct SuperSeedingTests {
    struct Result {
        var uploaded: [Int: Int] = [:]
        var done = false
    }

    /// Node 0 holds `n` chunks; nodes 1…`readers` fetch them all. `table` makes each node's announcements.
    static func swarm(
        readers: Int, chunks n: Int, rate: Double = 100, oneWay: Double = 0.005,
        table: () -> Announcements<Int> = { Announcements() }
    ) -> Result {
        enum Event {
            case serve(by: Int, to: Int, id: ChunkID)
            case deliver(to: Int, id: ChunkID)
            case gots(from: Int, [Int: [Digest: [UInt32]]])
        }
        let ids = (0..<n).map { BLAKE2b.hash([UInt8($0 & 0xff), UInt8($0 >> 8)]) }
        let nodes = Array(0...readers)
        var tables = nodes.map { _ in table() }
        var held = nodes.map { $0 == 0 ? Set(ids) : Set<ChunkID>() }
        let swarms = nodes.map { _ in HaveSets.newSwarm() }
        var pickers = nodes.map { _ in PiecePicker<Int>(ids, window: 4) }
        var haveSets: [[Int: Set<ChunkID>]] = nodes.map { _ in [:] }
        var events: [(at: Double, event: Event)] = []
        var freeAt = nodes.map { _ in 0.0 }
        var retryAt = nodes.map { _ in 0.0 }
        var result = Result()

        func ask(_ r: Int, now: Double) {
            for p in nodes where p != r {
                let bits = tables[p].interest(swarms[r], ids: ids, from: r, held: { held[p].contains($0) }, now: now)
                for (i, id) in ids.enumerated() where bits[i >> 3] & (1 << (i & 7)) != 0 {
                    haveSets[r][p, default: []].insert(id)
                }
                pickers[r].add(p, holding: haveSets[r][p] ?? [])
            }
        }
        func announce(_ gots: [Int: [Digest: [UInt32]]], from p: Int, now: Double) {
            if !gots.isEmpty { events.append((now + oneWay, .gots(from: p, gots))) }
        }
        for r in 1...readers { ask(r, now: 0) }
        // Event-driven: a reader picks again only after something it sees changed, or when its retry is due.
        var now = 0.0
        var dirty = Set(1...readers)
        while now < 300 {
            let open = (1...readers).filter { !pickers[$0].isDone }
            if open.isEmpty {
                result.done = true
                break
            }
            for r in open where dirty.contains(r) || now >= retryAt[r] {
                if now >= retryAt[r] {
                    // Every 250 ms: fresh have-sets if nobody holds what is missing.
                    if pickers[r].isStarved { ask(r, now: now) }
                    retryAt[r] = now + 0.25
                }
                for p in nodes where p != r {
                    for id in pickers[r].next(for: p, now: now) {
                        freeAt[p] = max(now + oneWay, freeAt[p]) + 1 / rate
                        events.append((freeAt[p], .serve(by: p, to: r, id: id)))
                    }
                }
            }
            dirty = []
            guard let next = (events.map(\.at) + open.map { retryAt[$0] }).min() else { break }
            now = next
            events.sort { $0.at < $1.at }
            while let first = events.first, first.at <= now {
                events.removeFirst()
                switch first.event {
                case .serve(let p, let r, let id):
                    guard held[p].contains(id) else {
                        pickers[r].lacks(id, at: p)
                        dirty.insert(r)
                        continue
                    }
                    result.uploaded[p, default: 0] += 1
                    events.append((first.at + oneWay, .deliver(to: r, id: id)))
                    announce(tables[p].served(id, to: r, now: first.at), from: p, now: first.at)
                case .deliver(let r, let id):
                    dirty.insert(r)
                    guard held[r].insert(id).inserted else { continue }
                    pickers[r].arrived(id, now: first.at)
                    announce(tables[r].arrived([id], now: first.at), from: r, now: first.at)
                case .gots(let p, let gots):
                    for (r, bySwarm) in gots {
                        for index in bySwarm[swarms[r]] ?? [] { haveSets[r][p, default: []].insert(ids[Int(index)]) }
                        pickers[r].add(p, holding: haveSets[r][p] ?? [])
                        dirty.insert(r)
                    }
                }
            }
        }
        return result
    }

    @Test(arguments: [2, 4, 6])
    func theSeederSendsEachChunkAboutOnceAndTheReadersServeEachOther(readers: Int) {
        let n = 256
        let result = Self.swarm(readers: readers, chunks: n)
        #expect(result.done)
        #expect(Double(result.uploaded[0, default: 0]) <= 1.1 * Double(n), "seeder uploaded \(result.uploaded)")
        for r in 1...readers {
            #expect(result.uploaded[r, default: 0] > 0, "reader \(r) served nobody: \(result.uploaded)")
        }
    }

    /// The same swarm with every chunk told to every asker at once: the seeder sends far more.
    @Test func withoutSuperSeedingTheSeederSendsMore() {
        let n = 256
        let result = Self.swarm(readers: 6, chunks: n) { Announcements(uploadSlots: .max, spreadWait: 0) }
        #expect(result.done)
        #expect(Double(result.uploaded[0, default: 0]) > 1.5 * Double(n), "seeder uploaded \(result.uploaded)")
    }

    @Test func aChunkGivenToOnePeerGoesToAnotherAfterItsWaitsOrWhenItLeaves() {
        let c = (0..<3).map { BLAKE2b.hash([UInt8($0)]) }
        var table = Announcements<Int>(uploadSlots: 1, spreadWait: 1)
        let (s1, s2) = (HaveSets.newSwarm(), HaveSets.newSwarm())
        #expect(table.interest(s1, ids: c, from: 1, held: { _ in true }, now: 0) == [0b001], "one slot")
        #expect(table.interest(s2, ids: c, from: 2, held: { _ in true }, now: 0) == [0b010])
        // Peer 1 took its chunk: its slot is free, and the next one nobody has is told to it.
        #expect(table.served(c[0], to: 1, now: 0.1) == [1: [s1: [2]]])
        // Asked again a second after peer 1 was told c[2]: c[2] is told too; c[0], sent to it at 0.1, waits a second
        // from then for it to pass on.
        #expect(table.interest(s2, ids: c, from: 2, held: { _ in true }, now: 1.05) == [0b010])
        #expect(table.interest(s2, ids: c, from: 2, held: { _ in true }, now: 1.15) == [0b111])
        // Peer 1 left: what it was given goes to the next asker at once (c[1] is peer 2's for a second yet).
        table.ended(1)
        #expect(table.interest(s1, ids: c, from: 3, held: { _ in true }, now: 1.2) == [0b001])
    }

    /// A peer that never asks for what it was told (it got those chunks from another peer, which the seeder does not
    /// learn) has its slots back after the wait: its later fetches are told the seeder's own chunks again. Regression
    /// test: the slots stayed taken while the first fetch lasted, and a storage node's catch-up after restarts
    /// (test_replication.py, restarting every node in turn) stalled until its run's fetch gave up.
    @Test func slotsNotAskedForAreFreedAfterTheWait() {
        let c = (0..<2).map { BLAKE2b.hash([UInt8(20 + $0)]) }
        var table = Announcements<Int>(uploadSlots: 1, spreadWait: 1)
        let (s1, s2) = (HaveSets.newSwarm(), HaveSets.newSwarm())
        #expect(table.interest(s1, ids: [c[0]], from: 1, held: { _ in true }, now: 0) == [0b1])
        #expect(table.interest(s2, ids: [c[1]], from: 1, held: { _ in true }, now: 0.5) == [0], "its one slot is taken")
        #expect(table.interest(s2, ids: [c[1]], from: 1, held: { _ in true }, now: 0.9) == [0])
        #expect(table.interest(s2, ids: [c[1]], from: 1, held: { _ in true }, now: 1.1) == [0b1], "c[0] not asked for")
    }

    /// A fetch asking again lists the chunks that arrived too: what it was told before takes no slot then, so each time
    /// it asks the slots go to chunks it lacks. Regression test: the slots went to the same first chunks of its list
    /// each time, which it had got from another peer, and it was never told the rest (a storage node catching up after
    /// restarts stalled until its run's fetch gave up).
    @Test func askingAgainTellsWhatItWasNotToldBefore() {
        let c = (0..<3).map { BLAKE2b.hash([UInt8(30 + $0)]) }
        var table = Announcements<Int>(uploadSlots: 1, spreadWait: 100)
        let swarm = HaveSets.newSwarm()
        #expect(table.interest(swarm, ids: c, from: 1, held: { _ in true }, now: 0) == [0b001])
        #expect(table.interest(swarm, ids: c, from: 1, held: { _ in true }, now: 0.25) == [0b011])
        #expect(table.interest(swarm, ids: c, from: 1, held: { _ in true }, now: 0.5) == [0b111])
    }

    @Test func chunksGotFromPeersAreToldToEveryoneAtOnce() {
        let c = (0..<2).map { BLAKE2b.hash([UInt8(10 + $0)]) }
        var table = Announcements<Int>(uploadSlots: 1, spreadWait: 100)
        let swarms = (1...3).map { _ in HaveSets.newSwarm() }
        for p in 1...3 { #expect(table.interest(swarms[p - 1], ids: c, from: p, held: { _ in false }, now: 0) == [0]) }
        let gots = table.arrived(c, now: 1)
        #expect(gots.count == 3 && gots.values.allSatisfy { $0.values.first?.count == 2 })
    }
}
