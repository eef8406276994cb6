import HypernetCrypto
import HypernetModel
import HypernetStore
import Logging
import Synchronization

/// Where the receiver writes how far it has stored each peer's log: the store in the daemon, a double in tests.
protocol ProgressStore: Sendable {
    func setProgress(peer: SigningPublicKey, tree: SigningPublicKey, storeID: String, seq: Int64) throws(StoreError)
}

extension Store: ProgressStore {}

/// What the receiver remembers between the runs it stores (docs/protocol.md, "Storing received revisions"): its position in
/// each peer's log of each tree, written at once after a run that stored something, and otherwise (a run of
/// echoes) at the next `flush`; and the revisions rejected for good, so that their descendants are too.
final class ReceiveLedger: Sendable {
    /// Revisions rejected for good remembered before they are all forgotten.
    static let memory = 100_000

    struct Key: Hashable {
        var peer: SigningPublicKey
        var tree: SigningPublicKey
    }

    private struct State {
        /// Progress through runs that stored nothing new: losing it to a crash only makes the peer send those
        /// runs again.
        var pending: [Key: (storeID: String, seq: Int64)] = [:]
        /// Revisions rejected for reasons that do not pass (bad signature, no right).
        var rejectedForGood: Set<RevisionID> = []
    }

    private let state = Mutex(State())
    private let store: any ProgressStore
    private let logger: Logger

    init(store: any ProgressStore, logger: Logger) {
        self.store = store
        self.logger = logger
    }

    /// Records that this node has stored `key.peer`'s log of `key.tree` through `seq`: at once, or (`lazily`, for
    /// a run that stored nothing) at the next `flush`.
    func record(progress seq: Int64, storeID: String, of key: Key, lazily: Bool) throws(StoreError) {
        if lazily {
            state.withLock { $0.pending[key] = (storeID, seq) }
            return
        }
        state.withLock { _ = $0.pending.removeValue(forKey: key) }
        try store.setProgress(peer: key.peer, tree: key.tree, storeID: storeID, seq: seq)
    }

    /// Writes the progress recorded lazily. (A run stored meanwhile may have its progress written just before this
    /// older one: the peer then only resends from the older position on its next connection.)
    func flush() {
        let pending = state.withLock { s in
            defer { s.pending.removeAll() }
            return s.pending
        }
        for (key, p) in pending {
            do { try store.setProgress(peer: key.peer, tree: key.tree, storeID: p.storeID, seq: p.seq) } catch {
                logger.error("recording progress: \(error)")
            }
        }
    }

    /// The store's rejections of a run, with those for a missing parent that was rejected for good made
    /// rejections for good too (that parent can never be stored); remembers every rejection for good.
    func settle(_ rejected: [(Digest, Rejection)]) -> [(Digest, Rejection)] {
        state.withLock { s in
            let settled = rejected.map { id, why -> (Digest, Rejection) in
                if case .missingParent(let p) = why, s.rejectedForGood.contains(p) { return (id, .notAuthorized) }
                return (id, why)
            }
            if s.rejectedForGood.count > Self.memory { s.rejectedForGood.removeAll() }
            for (id, why) in settled where !why.isTransient { s.rejectedForGood.insert(id) }
            return settled
        }
    }
}
