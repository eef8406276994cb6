import Glibc
import HypernetCrypto
import HypernetModel
import HypernetStore
import Logging
import Synchronization
import Testing

@testable import HypernetSync

/// The receiver's memory alone: the progress table is a double, no store or socket is involved.
@Suite struct ReceiveLedgerTests {
    /// Records progress writes; fails them while `failing`.
    final class Progress: ProgressStore {
        private let state = Mutex((writes: [Write](), failing: false))
        struct Write: Equatable {
            var peer: SigningPublicKey
            var tree: SigningPublicKey
            var storeID: String
            var seq: Int64
        }
        var writes: [Write] { state.withLock { $0.writes } }
        func fail(_ on: Bool) { state.withLock { $0.failing = on } }
        func setProgress(peer: SigningPublicKey, tree: SigningPublicKey, storeID: String, seq: Int64)
            throws(StoreError)
        {
            let failing = state.withLock { s in
                if !s.failing { s.writes.append(Write(peer: peer, tree: tree, storeID: storeID, seq: seq)) }
                return s.failing
            }
            if failing { throw StoreError.io(path: "progress", errno: EIO) }
        }
    }

    let progress = Progress()
    let ledger: ReceiveLedger
    let key = ReceiveLedger.Key(peer: SigningKeyPair.generate().publicKey, tree: SigningKeyPair.generate().publicKey)
    let other = ReceiveLedger.Key(peer: SigningKeyPair.generate().publicKey, tree: SigningKeyPair.generate().publicKey)

    init() { ledger = ReceiveLedger(store: progress, logger: Logger(label: "test")) }

    func write(_ key: ReceiveLedger.Key, _ seq: Int64) -> Progress.Write {
        Progress.Write(peer: key.peer, tree: key.tree, storeID: "s", seq: seq)
    }

    @Test func progressOfARunThatStoredSomethingIsWrittenAtOnceAndSupersedesALazyOne() throws {
        try ledger.record(progress: 5, storeID: "s", of: key, lazily: true)
        try ledger.record(progress: 7, storeID: "s", of: key, lazily: false)
        #expect(progress.writes == [write(key, 7)])
        ledger.flush()
        #expect(progress.writes == [write(key, 7)])
    }

    @Test func lazyProgressWaitsForTheFlushAndKeepsTheLatestPerKey() throws {
        try ledger.record(progress: 3, storeID: "s", of: key, lazily: true)
        try ledger.record(progress: 4, storeID: "s", of: key, lazily: true)
        try ledger.record(progress: 9, storeID: "s", of: other, lazily: true)
        #expect(progress.writes.isEmpty)
        ledger.flush()
        #expect(Set(progress.writes.map(\.seq)) == [4, 9])
        #expect(progress.writes.count == 2)
        ledger.flush()
        #expect(progress.writes.count == 2)
    }

    @Test func aFailedWriteThrowsWhileAFailedFlushIsOnlyLogged() throws {
        progress.fail(true)
        #expect(throws: StoreError.self) { try ledger.record(progress: 1, storeID: "s", of: key, lazily: false) }
        try ledger.record(progress: 2, storeID: "s", of: key, lazily: true)
        ledger.flush()
        progress.fail(false)
        ledger.flush()
        #expect(progress.writes.isEmpty)
    }

    @Test func descendantsOfARevisionRejectedForGoodAreRejectedForGood() {
        let ids = (0..<5).map { BLAKE2b.hash(Array("r\($0)".utf8)) }
        let unknown = BLAKE2b.hash(Array("unknown".utf8))
        let first = ledger.settle([(ids[0], .notAuthorized), (ids[1], .missingParent(unknown))])
        #expect(first.map(\.1) == [.notAuthorized, .missingParent(unknown)])
        // A child and a grandchild of the invalid one; a child of the one that only waits for its parent.
        #expect(ledger.settle([(ids[2], .missingParent(ids[0]))]).map(\.1) == [.notAuthorized])
        #expect(ledger.settle([(ids[3], .missingParent(ids[2]))]).map(\.1) == [.notAuthorized])
        #expect(ledger.settle([(ids[4], .missingParent(ids[1]))]).map(\.1) == [.missingParent(ids[1])])
        #expect(ledger.settle([]).isEmpty)
    }
}
