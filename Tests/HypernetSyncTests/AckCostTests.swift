import Foundation
import HypernetCrypto
import HypernetModel
import Logging
import Testing

@testable import HypernetSync

/// What the acks of one small revision cost each node as the network grows (issue 17, item 5): N ack brokers
/// wired by recording links, the revision spreading from a writer over a sparse overlay, every frame counted.
@Suite struct AckCostTests {
    /// N nodes; node i linked to (i − 1) / 2 (a binary tree) and to i + 1 (a chain): every node has other paths
    /// than the one a revision comes by, so relays echo it.
    struct Network {
        let keys: [SigningKeyPair]
        let brokers: [AckBroker]
        /// `links[i][j]`: node i's link to node j.
        var links: [[Int: PeerLinkDouble]]
        let books: [AckBrokerTests.Book]

        init(nodes n: Int, revision: RevisionID) {
            let keys = (0..<n).map { _ in SigningKeyPair.generate() }
            let books = (0..<n).map { _ in AckBrokerTests.Book(known: Set(keys.map(\.publicKey)), stored: [revision]) }
            self.keys = keys
            self.books = books
            brokers = (0..<n).map { AckBroker(nodeKey: keys[$0], book: books[$0], logger: Logger(label: "test")) }
            links = Array(repeating: [:], count: n)
            for i in 1..<n {
                for j in Set([(i - 1) / 2, i - 1]) {
                    links[i][j] = PeerLinkDouble(node: keys[j].publicKey)
                    links[j][i] = PeerLinkDouble(node: keys[i].publicKey)
                    brokers[i].linkAuthenticated(links[i][j]!)
                    brokers[j].linkAuthenticated(links[j][i]!)
                }
            }
        }

        /// Delivers every ack sent until none is left; the frame bytes each node sent.
        func deliver() -> [Int] {
            var bytes = Array(repeating: 0, count: brokers.count)
            var moved = true
            while moved {
                moved = false
                for (i, out) in links.enumerated() {
                    for (j, link) in out {
                        for ack in link.takeAcks() {
                            moved = true
                            bytes[i] += Frame.encode(.ack(ack)).count
                            brokers[j].received(ack, from: links[j][i]!)
                        }
                    }
                }
            }
            return bytes
        }

        /// Node 0 writes `revision`; it reaches every node first by a breadth-first path, then as echoes from
        /// every other neighbour. Each node acks it as the receiver does (`SyncNode.receive`).
        func spread(_ revision: RevisionID) {
            brokers[0].ownDurable([revision])
            brokers[0].flushOwn()
            var parent = [0: 0]
            var queue = [0]
            while !queue.isEmpty {
                let i = queue.removeFirst()
                for j in links[i].keys.sorted() where parent[j] == nil {
                    parent[j] = i
                    queue.append(j)
                    brokers[j].ack([revision], echoedBy: links[j][i]!, brought: [revision])
                }
            }
            for (i, out) in links.enumerated() {
                for (j, link) in out where parent[i] != j { brokers[i].ack([revision], echoedBy: link) }
            }
        }
    }

    @Test(arguments: [2, 4, 8, 16])
    func theAckBytesOfASmallRevisionPerNodeGrowWithTheDepthOfTheOverlayNotTheNodes(nodes: Int) {
        let revision = BLAKE2b.hash(Array("revision".utf8))
        let network = Network(nodes: nodes, revision: revision)
        network.spread(revision)
        let bytes = network.deliver()
        // The writer's quorum still learns of every replica.
        let replicas = Set(network.books[0].replicas.filter { $0.1.contains(revision) }.map(\.0))
        #expect(replicas == Set(network.keys.dropFirst().map(\.publicKey)))
        // Flooded, every ack crossed every link: N acks × about 2 links per node. Routed toward the writer, each
        // crosses its path (the average depth) and the writer passes it to its neighbours.
        let frame = Frame.encode(.ack(.signed(by: network.keys[0], revisions: [revision]))).count
        let perNode = Double(bytes.reduce(0, +)) / Double(nodes)
        #expect(perNode <= Double(frame) * (log2(Double(nodes)) + 1), "bytes per node: \(bytes)")
    }
}
