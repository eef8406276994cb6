import HypernetCrypto
import HypernetModel
import Testing

@testable import HypernetSync

/// The swarm's scheduling over simulated peers (named by numbers), with time passed in: no clock, no socket.
@Suite struct PiecePickerTests {
    /// A picker for `c` with peers 1…`peers`, none of which sent a have-set.
    static func picker(_ c: [ChunkID], peers: Int, window: Int = 16, endGame: Int = 8) -> PiecePicker<Int> {
        var picker = PiecePicker<Int>(c, window: window, endGame: endGame)
        for p in 1...peers { picker.add(p) }
        return picker
    }

    static func chunks(_ n: Int) -> [ChunkID] { (0..<n).map { BLAKE2b.hash([UInt8($0 & 0xff), UInt8($0 >> 8)]) } }

    @Test func rarestFirstThenInTheOrderAskedFor() {
        let c = Self.chunks(4)
        var picker = PiecePicker<Int>(c, window: 4)
        picker.add(1, holding: Set(c))
        picker.add(2, holding: [c[0], c[1], c[3]])
        picker.add(3, holding: [c[0], c[3]])
        // c[2] only at 1, c[1] at two peers, c[0] and c[3] at three.
        let asked1 = picker.next(for: 1, now: 0)
        #expect(asked1 == [c[2], c[1], c[0], c[3]])
    }

    @Test func aPeerIsAskedOnlyForWhatItMayHoldAndAtMostItsWindow() {
        let c = Self.chunks(10)
        var picker = PiecePicker<Int>(c, window: 3)
        picker.add(1, holding: Set(c[5...]))
        picker.add(2)  // no have-set: it may hold anything
        let first = picker.next(for: 1, now: 0)
        #expect(first.count == 3 && first.allSatisfy { c[5...].contains($0) })
        let asked2 = picker.next(for: 1, now: 0)
        #expect(asked2.isEmpty)
        let second = picker.next(for: 2, now: 0)
        #expect(second == Array(c[0..<3]))
        #expect(Set(first).isDisjoint(with: second))
        picker.arrived(first[0], now: 0)
        let asked3 = picker.next(for: 1, now: 0)
        #expect(asked3.count == 1)
    }

    @Test func noChunkIsAskedOfTwoPeersOutsideTheEndGame() {
        let c = Self.chunks(40)
        var picker = Self.picker(c, peers: 4, window: 8)
        var asked: [ChunkID] = []
        for p in 1...4 { asked += picker.next(for: p, now: 0) }
        #expect(asked.count == 32 && Set(asked).count == 32)
        // Answers come, new requests follow, until nothing is left unasked.
        for id in asked.prefix(8) { picker.arrived(id, now: 0) }
        let more = picker.next(for: 1, now: 1)
        #expect(more.count == 8 && Set(more).isDisjoint(with: asked))
    }

    @Test func theEndGameAsksAnotherPeerForWhatIsInFlightAndTheFirstCopyWins() {
        let c = Self.chunks(3)
        var picker = Self.picker(c, peers: 2, window: 2, endGame: 2)
        let one = picker.next(for: 1, now: 0)
        let two = picker.next(for: 2, now: 0)
        #expect(one.count == 2 && two.count == 1)
        picker.arrived(two[0], now: 0)
        // Every missing chunk is asked for, and two are left: the free peer also asks for those in flight at 1.
        let duplicates = picker.next(for: 2, now: 0)
        #expect(Set(duplicates) == Set(one))
        #expect(picker.askedCount(of: one[0]) == 2)
        let firstCopy = picker.arrived(one[0], now: 0)
        let secondCopy = picker.arrived(one[0], now: 0)
        #expect(firstCopy && !secondCopy, "a second copy is a duplicate")
        #expect(picker.load(of: 1) == 1 && picker.load(of: 2) == 1)
    }

    @Test func aShortFetchHasNoEndGame() {
        let c = Self.chunks(2)
        var picker = Self.picker(c, peers: 2, endGame: 8)
        let one = picker.next(for: 1, now: 0)
        let two = picker.next(for: 2, now: 0)
        #expect(one == c && two.isEmpty)
    }

    @Test func aRequestUnansweredPastTheLimitIsReissuedToAnotherPeer() {
        let c = Self.chunks(20)
        var picker = PiecePicker<Int>(c, window: 2, reissueAfter: 5)
        picker.add(1)
        let slow = picker.next(for: 1, now: 0)
        picker.add(2)
        let fresh = picker.next(for: 2, now: 1)
        #expect(Set(fresh).isDisjoint(with: slow))
        for id in fresh { picker.arrived(id, now: 0) }
        let asked7 = picker.next(for: 2, now: 4)
        #expect(Set(asked7).isDisjoint(with: slow), "not yet stale")
        picker.add(3)
        let asked8 = picker.next(for: 3, now: 6)
        #expect(Set(asked8) == Set(slow))
    }

    @Test func aVanishedPeersRequestsGoToTheOthers() {
        let c = Self.chunks(4)
        var picker = Self.picker(c, peers: 2, window: 2)
        let lost = picker.next(for: 1, now: 0)
        picker.remove(1)
        let reissued = picker.next(for: 2, now: 0)
        #expect(reissued == lost)
    }

    @Test func notHeldAnswersStarveAChunkUntilForgotten() {
        let c = Self.chunks(1)
        var picker = PiecePicker<Int>(c)
        picker.add(1)
        let asked12 = picker.next(for: 1, now: 0)
        #expect(asked12 == c)
        picker.lacks(c[0], at: 1)
        #expect(picker.isStarved)
        let asked13 = picker.next(for: 1, now: 0)
        #expect(asked13.isEmpty)
        picker.forgetLacks()
        let asked14 = picker.next(for: 1, now: 1)
        #expect(asked14 == c)
        picker.arrived(c[0], now: 0)
        #expect(picker.isDone && picker.remaining.isEmpty)
    }

    /// Peers that answer in order at `rates` chunks per second, each answer taking `oneWay` seconds each way; a
    /// peer in `vanishAt` is gone from then on (its answers lost). Returns the chunks each served, and the picker.
    static func simulate(
        chunks n: Int, rates: [Int: Double], oneWay: Double = 0.01, vanishAt: [Int: Double] = [:]
    ) -> (served: [Int: Int], picker: PiecePicker<Int>) {
        var picker = PiecePicker<Int>(chunks(n), window: 16)
        for p in rates.keys.sorted() { picker.add(p) }
        var freeAt: [Int: Double] = [:]
        var answers: [(at: Double, id: ChunkID, peer: Int)] = []
        var served: [Int: Int] = [:]
        var now = 0.0
        var gone: Set<Int> = []
        while !picker.isDone && now < 600 {
            for (p, t) in vanishAt where now >= t && gone.insert(p).inserted {
                picker.remove(p)
                answers.removeAll { $0.peer == p }
            }
            for p in rates.keys.sorted() where !gone.contains(p) {
                for id in picker.next(for: p, now: now) {
                    let done = max(now + oneWay, freeAt[p, default: 0]) + 1 / rates[p]!
                    freeAt[p] = done
                    answers.append((done + oneWay, id, p))
                }
            }
            now += 0.001
            for a in answers where a.at <= now && picker.arrived(a.id, now: now) { served[a.peer, default: 0] += 1 }
            answers.removeAll { $0.at <= now }
        }
        #expect(picker.isDone, "not every chunk arrived by \(now) s")
        return (served, picker)
    }

    @Test func aFastAndASlowPeerServeInProportionToTheirRates() {
        let (served, picker) = Self.simulate(chunks: 600, rates: [1: 200, 2: 20])
        let share = Double(served[1, default: 0]) / Double(served[2, default: 1])
        #expect(share > 7 && share < 13, "shares \(served)")
        // About twice its rate × round trip: the fast peer's link stays busy, the slow one holds few requests.
        #expect(picker.window(of: 2) <= 3, "window \(picker.window(of: 2))")
        #expect(picker.window(of: 1) >= 8 && picker.window(of: 1) <= 16, "window \(picker.window(of: 1))")
    }

    @Test func windowsStayWithinTheirBounds() {
        var meter = PeerMeter()
        #expect(meter.window(initial: 16) == 16)
        for i in 0..<100 { meter.answered(sentAt: Double(i) * 0.001, now: Double(i) * 0.001 + 2) }
        #expect(meter.window(initial: 16) == 64)
        var slow = PeerMeter()
        for i in 0..<10 { slow.answered(sentAt: Double(i), now: Double(i) + 0.0001) }
        #expect(slow.window(initial: 16) == 2)
    }

    @Test func aVanishedPeersRequestsGoToThoseLeft() {
        let (served, _) = Self.simulate(chunks: 300, rates: [1: 100, 2: 100, 3: 100], vanishAt: [3: 0.5])
        #expect(served.values.reduce(0, +) == 300)
        #expect(served[3, default: 0] < 60 && served[1]! > 100 && served[2]! > 100, "\(served)")
    }
}
