import HypernetCrypto
import HypernetModel
import Testing

@testable import HypernetSync

/// The relay policy's record of where revisions came from (docs/protocol.md, "Relaying" and "Fan-out"): writer
/// `w`, followers `e1`, `e2` (eager: `w` pushes to them) and `l` (lazy: records only), seen from one follower.
@Suite struct OriginsTests {
    let revision = BLAKE2b.hash(Array("a revision".utf8))

    @Test func aRelayOfWhatCameWithItsContentFromTheWriterIsPruned() {
        var origins = Origins<String>()
        origins.received([revision], from: "w")
        #expect(origins[revision] == "w")
        #expect(origins.provesOtherPath([revision], relayedBy: "e2"))
        #expect(!origins.provesOtherPath([revision], relayedBy: "w"))
    }

    /// The regression: a lazy follower pruned every relay behind the writer's records, so no relay pushed to it
    /// and it fetched each revision's content from the writer (a writer with six followers uploaded six copies).
    @Test func aLazyFollowerPrunesNoRelayUntilOnePushesTheContentThenTheOthers() {
        var origins = Origins<String>()
        origins.received([revision], from: "w")
        origins.cameLazily([revision], from: "w")
        #expect(!origins.provesOtherPath([revision], relayedBy: "e1"))
        #expect(!origins.provesOtherPath([revision], relayedBy: "e2"))
        origins.pushed([revision], by: "e1")
        #expect(!origins.provesOtherPath([revision], relayedBy: "e1"), "the relay that pushed the content is its path")
        #expect(origins.provesOtherPath([revision], relayedBy: "e2"))
        origins.pushed([revision], by: "e2")
        #expect(origins.provesOtherPath([revision], relayedBy: "e2"), "a later push is a second path, not the first")
        #expect(origins[revision] == "w", "the records' origin is kept: nothing is pushed back to the writer")
    }

    /// A run is a prefix of the relay's log: along with the revision it pushed first, it may list older records
    /// that came here first from the writer. It is still this node's path for the pushed one.
    @Test func aRelayThatPushedFirstIsNotPrunedForTheOlderRecordsItsRunLists() {
        let older = BLAKE2b.hash(Array("an older record".utf8))
        var origins = Origins<String>()
        origins.received([older], from: "w")
        origins.received([revision], from: "w")
        origins.cameLazily([revision], from: "w")
        #expect(!origins.provesOtherPath([older, revision], relayedBy: "e1"), "no content path for it yet")
        origins.pushed([older, revision], by: "e1")
        #expect(!origins.provesOtherPath([older, revision], relayedBy: "e1"))
        #expect(origins.provesOtherPath([older, revision], relayedBy: "e2"))
        #expect(origins.provesOtherPath([older], relayedBy: "e1"))
    }

    @Test func pushesOfWhatCameWithItsContentChangeNothing() {
        var origins = Origins<String>()
        origins.received([revision], from: "w")
        origins.pushed([revision], by: "e1")
        #expect(origins.provesOtherPath([revision], relayedBy: "e1"))
    }

    @Test func onlyTheFirstSourceOfTheRecordsIsMarkedLazy() {
        var origins = Origins<String>()
        origins.received([revision], from: "e1")
        origins.received([revision], from: "w")
        origins.cameLazily([revision], from: "w")
        #expect(origins[revision] == "e1")
        #expect(origins.provesOtherPath([revision], relayedBy: "e2"))
    }

    @Test func revisionsMadeHereHaveNoOriginAndProveNoOtherPath() {
        let origins = Origins<String>()
        #expect(origins[revision] == nil)
        #expect(!origins.provesOtherPath([revision], relayedBy: "e1"))
    }
}
