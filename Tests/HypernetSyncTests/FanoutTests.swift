import HypernetCrypto
import HypernetSync
import Testing

@Suite struct FanoutTests {
    static let nodes = (0..<12).map { _ in SigningKeyPair.generate().publicKey }

    @Test func fewSubscribersAreAllEager() {
        let some = Array(Self.nodes.prefix(SyncNode.eagerFanout))
        #expect(SyncNode.eagerSet(of: some, from: Self.nodes[11]) == Set(some))
    }

    @Test func manySubscribersGetABoundedFixedEagerSet() {
        let own = Self.nodes[11]
        let subscribers = Array(Self.nodes.prefix(11))
        let eager = SyncNode.eagerSet(of: subscribers, from: own)
        #expect(eager.count == SyncNode.eagerFanout)
        #expect(eager.isSubset(of: Set(subscribers)))
        // The choice depends on the pair of nodes, not on the order peers connected in.
        #expect(SyncNode.eagerSet(of: subscribers.reversed(), from: own) == eager)
    }

    @Test func differentNodesChooseDifferentEagerSets() {
        // Were every node to pick the same few, the others would only ever get lazy pushes.
        let subscribers = Array(Self.nodes.prefix(8))
        let choices = Set(Self.nodes.suffix(4).map { SyncNode.eagerSet(of: subscribers, from: $0) })
        #expect(choices.count > 1)
    }
}
