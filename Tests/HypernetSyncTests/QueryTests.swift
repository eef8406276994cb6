import HypernetCrypto
import HypernetModel
import Synchronization
import Testing

@testable import HypernetSync

/// Queries near the data over simulated peers: a `QueryClient` and one `QueryServer` per peer, joined by recording
/// links whose messages the test delivers, so every step (a window filled, a credit, a cancel, a lost peer) is
/// explicit. The server's host is a double holding documents in memory with a substring matcher.
@Suite struct QueryTests {
    struct Person {
        let signing = SigningKeyPair.generate()
        let box = BoxKeyPair.generate()
        var token: IdentityToken { IdentityToken(signing: signing.publicKey, box: box.publicKey) }
    }

    /// A document as a host holds it.
    struct Held {
        var tree: SigningPublicKey
        var revision: SignedRevision
        var blocks: [PermissionBlock] = []
        var content: [UInt8]
        /// Its blind index, for blind queries (BlindQueryTests).
        var index: BlindIndex? = nil
        var target: Query.Target {
            Query.Target(tree: tree, document: revision.revision.document, revision: revision.id)
        }
    }

    final class Counter: Sendable {
        private let value = Mutex(0)
        var count: Int { value.withLock { $0 } }
        func add(_ n: Int) { value.withLock { $0 += n } }
    }

    /// Matches lines containing the pattern; counts the bytes it read, so tests see a stopped scan stop reading.
    final class LineScan: QueryScan, @unchecked Sendable {
        let content: [UInt8]
        let pattern: [UInt8]
        var offset: Int
        var line: UInt64
        let read: Counter

        init(_ content: [UInt8], pattern: String, after: Int, read: Counter) {
            self.content = content
            self.pattern = Array(pattern.utf8)
            self.offset = after
            self.line = UInt64(content[..<after].count(where: { $0 == 10 })) + 1
            self.read = read
        }
        var end: Int64 { Int64(content.count) }
        /// Fails once this offset is reached (a damaged chunk).
        var failAt = Int.max
        var failed = false

        func next(maximumBytes: Int) -> (items: [QueryResult.Item], cursor: Int64)? {
            guard offset < content.count, !failed else { return nil }
            if offset >= failAt {
                failed = true
                return nil
            }
            var items: [QueryResult.Item] = []
            var bytes = 0
            while offset < content.count {
                let stop = content[offset...].firstIndex(of: 10).map { $0 + 1 } ?? content.count
                let text = Array(content[offset..<stop].prefix { $0 != 10 })
                if text.count >= pattern.count,
                    (0...(text.count - pattern.count)).contains(where: {
                        text[$0..<($0 + pattern.count)].elementsEqual(pattern)
                    })
                {
                    guard items.isEmpty || bytes + QueryResult.Item.overhead + text.count <= maximumBytes else { break }
                    items.append(.init(number: line, bytes: text))
                    bytes += QueryResult.Item.overhead + text.count
                }
                read.add(stop - offset)
                offset = stop
                line += 1
            }
            return (items, Int64(offset))
        }
    }

    final class Host: QueryHost, Sendable {
        let documents: [DocumentID: Held]
        let openable: Bool
        let failAt: Int
        let read = Counter()
        init(_ documents: [Held], openable: Bool = true, failAt: Int = .max) {
            self.documents = Dictionary(uniqueKeysWithValues: documents.map { ($0.revision.revision.document, $0) })
            self.openable = openable
            self.failAt = failAt
        }
        func held(_ target: Query.Target) -> (revision: Revision, blocks: [PermissionBlock])? {
            guard let d = documents[target.document], d.revision.id == target.revision, d.tree == target.tree else {
                return nil
            }
            return (d.revision.revision, d.blocks)
        }
        func canOpen(_ revision: Revision, tree: SigningPublicKey) -> Bool { openable }
        func scan(_ query: Query, _ target: Query.Target) -> (any QueryScan)? {
            guard let d = documents[target.document] else { return nil }
            let scan = LineScan(d.content, pattern: query.pattern, after: Int(target.after), read: read)
            scan.failAt = failAt
            return scan
        }
        func blindScan(_ revision: Revision, _ target: Query.Target, trapdoors: [UInt32]) -> (any QueryScan)? {
            guard let index = documents[target.document]?.index else { return nil }
            return BlindScan(index: index, trapdoors: trapdoors, after: Int(target.after))
        }
    }

    /// One serving peer: its server, the link it answers on, and the link the client sends to it on.
    final class Peer: Sendable {
        let key = SigningKeyPair.generate()
        let host: Host
        let server: QueryServer
        let toClient: PeerLinkDouble
        let toPeer: PeerLinkDouble
        /// Every result delivered to the client.
        let results = Mutex<[QueryResult]>([])

        init(_ host: Host, client node: SigningPublicKey, clock: @escaping @Sendable () -> Int64 = QueryTests.now) {
            self.host = host
            server = QueryServer(host: host, now: clock, run: { $0() })
            toClient = PeerLinkDouble(node: node)
            toPeer = PeerLinkDouble(node: key.publicKey)
        }

        /// Result bytes sent and not yet delivered.
        var inFlight: Int { toClient.sent.reduce(0) { if case .result(let r) = $1 { $0 + r.byteCount } else { $0 } } }
    }

    static let now: @Sendable () -> Int64 = { 1_700_000_000_000 }
    static let alice = Person()
    static let bob = Person()
    let node = SigningKeyPair.generate()

    /// A log of `lines` lines, every `every`th one holding "ERROR".
    static func log(lines: Int, every: Int = 1) -> [UInt8] {
        Array(
            (1...lines).map { $0 % every == 0 ? "line \($0) ERROR something failed\n" : "line \($0) ok\n" }.joined()
                .utf8)
    }

    static func held(_ content: [UInt8], tree: Person = alice, rights: SignedPermissionBlock? = nil) -> Held {
        let document = rights?.block.document ?? DocumentID.random()
        let revision = Revision(
            document: document, kind: .file, epoch: 0, rights: rights.map { _ in document },
            time: HLCTime(rawValue: 1 << 20), author: tree.signing.publicKey, parents: [], sealedMetadata: [1]
        ).signed(by: tree.signing)
        return Held(
            tree: tree.signing.publicKey, revision: revision, blocks: rights.map { [$0.block] } ?? [], content: content)
    }

    /// What GNU grep would print of `content` for a fixed pattern: (line number, line).
    static func expected(_ content: [UInt8], _ pattern: String) -> [QueryResult.Item] {
        String(decoding: content, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
            .enumerated().filter { $0.element.contains(pattern) }
            .map { .init(number: UInt64($0.offset + 1), bytes: Array($0.element.utf8)) }
    }

    /// Collects what the client reports, and takes (credits) results only when told.
    final class Collector: Sendable {
        let events = Mutex<[QueryEvent]>([])
        private let credits = Mutex<[QueryCredit]>([])
        var sink: @Sendable (QueryEvent) -> Void {
            { [self] e in
                events.withLock { $0.append(e) }
                if case .items(_, _, let credit) = e { credits.withLock { $0.append(credit) } }
            }
        }
        func items(_ target: Int) -> [QueryResult.Item] {
            events.withLock { e -> [QueryEvent] in e }.flatMap { e -> [QueryResult.Item] in
                if case .items(target, let items, _) = e { items } else { [] }
            }
        }
        var finished: Bool { events.withLock { $0.contains(.finished) } }
        /// The credits not yet handed back, and forgets them.
        func takeCredits() -> [QueryCredit] {
            credits.withLock { c in
                defer { c = [] }
                return c
            }
        }
    }

    func client(window: UInt32 = 64 << 10, identity: Person = alice) -> QueryClient {
        QueryClient(identity: identity.signing, node: node.publicKey, window: window, now: Self.now)
    }

    /// Delivers what each side sent, round after round, until nobody sends more or `rounds` are done;
    /// `consume`: the collector's consumer takes everything delivered.
    func deliver(
        _ client: QueryClient, _ peers: [Peer], _ collector: Collector, consume: Bool = true, rounds: Int = .max
    ) {
        for _ in 0..<rounds {
            var quiet = true
            for p in peers {
                for m in p.toPeer.take() {
                    quiet = false
                    switch m {
                    case .query(let q): p.server.received(q, from: p.toClient)
                    case .credit(let id, let received): p.server.credit(id: id, received: received, from: p.toClient)
                    case .cancel(let id): p.server.cancel(id: id, from: p.toClient)
                    default: Issue.record("unexpected \(m)")
                    }
                }
                for m in p.toClient.take() {
                    quiet = false
                    guard case .result(let r) = m else { continue }
                    p.results.withLock { $0.append(r) }
                    client.received(r, from: p.toPeer)
                }
            }
            if consume {
                for c in collector.takeCredits() {
                    quiet = false
                    client.consumed(c)
                }
            }
            if quiet { return }
        }
    }

    static let grep = QueryClient.Request(op: .grep, flags: [.fixed], pattern: "ERROR", limit: 0)

    @Test func resultsStreamWithinTheCreditWindowAndResumeOnCredit() {
        let content = Self.log(lines: 20_000)
        let doc = Self.held(content)
        let peer = Peer(Host([doc]), client: node.publicKey)
        let client = client()
        let collector = Collector()
        client.start(Self.grep, targets: [doc.target], holders: [[peer.toPeer]], sink: collector.sink)
        let query = peer.toPeer.sent
        for m in peer.toPeer.take() { if case .query(let q) = m { peer.server.received(q, from: peer.toClient) } }
        #expect(query.count == 1)
        // Nothing taken yet: the server stops at the window and reads no further than what it sent needed.
        let window = peer.inFlight
        #expect(window > 0 && window <= 64 << 10)
        let readAtWindow = peer.host.read.count
        #expect(readAtWindow < content.count / 4)
        deliver(client, [peer], collector, consume: false)
        #expect(peer.inFlight == 0 && peer.host.read.count == readAtWindow)
        // Taken: the rest comes, exactly grep's lines, once each.
        deliver(client, [peer], collector)
        #expect(collector.items(0) == Self.expected(content, "ERROR"))
        #expect(collector.finished)
        #expect(peer.server.count == 0)
    }

    @Test func cancelStopsTheRemoteScan() {
        let content = Self.log(lines: 20_000)
        let doc = Self.held(content)
        let peer = Peer(Host([doc]), client: node.publicKey)
        let client = client()
        let collector = Collector()
        let run = client.start(Self.grep, targets: [doc.target], holders: [[peer.toPeer]], sink: collector.sink)
        deliver(client, [peer], collector, consume: false)
        #expect(peer.server.count == 1)
        client.cancel(run)
        deliver(client, [peer], collector, consume: false)
        #expect(peer.server.count == 0)
        let read = peer.host.read.count
        // A late credit finds nothing to resume.
        for c in collector.takeCredits() { client.consumed(c) }
        peer.server.credit(id: 2, received: 1 << 30, from: peer.toClient)
        #expect(peer.host.read.count == read && peer.toClient.sent.isEmpty)
        #expect(!collector.finished)
    }

    @Test func aClosedConnectionStopsTheRemoteScan() {
        let doc = Self.held(Self.log(lines: 20_000))
        let peer = Peer(Host([doc]), client: node.publicKey)
        let client = client()
        let collector = Collector()
        client.start(Self.grep, targets: [doc.target], holders: [[peer.toPeer]], sink: collector.sink)
        deliver(client, [peer], collector, consume: false)
        peer.server.linkEnded(peer.toClient)
        #expect(peer.server.count == 0)
    }

    @Test func eachDocumentGoesToOnePeerTheLeastLoaded() {
        let docs = (0..<4).map { _ in Self.held(Self.log(lines: 100, every: 7)) }
        let peers = [Peer(Host(docs), client: node.publicKey), Peer(Host(docs), client: node.publicKey)]
        let client = client()
        let collector = Collector()
        client.start(
            Self.grep, targets: docs.map(\.target), holders: docs.map { _ in peers.map(\.toPeer) }, sink: collector.sink
        )
        let asked = peers.map { p in
            p.toPeer.sent.flatMap { m -> [Query.Target] in if case .query(let q) = m { q.targets } else { [] } }
        }
        #expect(asked.map(\.count) == [2, 2])
        #expect(Set(asked[0]).isDisjoint(with: asked[1]))
        deliver(client, peers, collector)
        for (i, d) in docs.enumerated() { #expect(collector.items(i) == Self.expected(d.content, "ERROR")) }
        #expect(collector.finished)
    }

    /// A peer refuses a query naming more than `Query.maximumTargets` documents: the client splits a longer list,
    /// and every part decodes on the other side.
    @Test func aLongListOfDocumentsIsSplitIntoQueriesAPeerAccepts() throws {
        let docs = (0..<(Query.maximumTargets + 5)).map { _ in Self.held(Array("ERROR\n".utf8)) }
        let peer = Peer(Host(docs), client: node.publicKey)
        let client = client()
        let collector = Collector()
        client.start(
            Self.grep, targets: docs.map(\.target), holders: docs.map { _ in [peer.toPeer] }, sink: collector.sink)
        let queries = peer.toPeer.sent
        #expect(queries.count == 2)
        var frames = queries.flatMap(Frame.encode)
        #expect(try Frame.decode(&frames) == queries, "a peer decodes every part")
        deliver(client, [peer], collector)
        #expect((0..<docs.count).allSatisfy { collector.items($0).count == 1 })
        #expect(collector.finished)
    }

    @Test func aLostPeersDocumentsResumeElsewhereWithNoLineLostOrRepeated() {
        let content = Self.log(lines: 20_000, every: 3)
        let doc = Self.held(content)
        let peers = [Peer(Host([doc]), client: node.publicKey), Peer(Host([doc]), client: node.publicKey)]
        let client = client()
        let collector = Collector()
        client.start(Self.grep, targets: [doc.target], holders: [peers.map(\.toPeer)], sink: collector.sink)
        let first = peers.firstIndex { !$0.toPeer.sent.isEmpty }!
        let (lost, other) = (peers[first], peers[1 - first])
        // Two windows from the first peer, then it goes, with a result on the way that never arrives.
        deliver(client, [lost], collector, rounds: 2)
        for m in lost.toPeer.take() {
            if case .credit(let id, let n) = m { lost.server.credit(id: id, received: n, from: lost.toClient) }
        }
        #expect(lost.inFlight > 0)
        _ = lost.toClient.take()
        lost.toPeer.close("gone")
        lost.server.linkEnded(lost.toClient)
        client.linkEnded(lost.toPeer)
        let resumed = other.toPeer.sent.compactMap {
            if case .query(let q) = $0 { q.targets.first?.after } else { nil }
        }
        #expect(resumed.count == 1 && resumed[0] > 0)
        deliver(client, peers, collector)
        #expect(collector.items(0) == Self.expected(content, "ERROR"))
        #expect(collector.finished)
    }

    @Test func aDocumentUnreadableHalfWayResumesElsewhereFromItsCursor() {
        let content = Self.log(lines: 20_000, every: 3)
        let doc = Self.held(content)
        let damaged = Peer(Host([doc], failAt: content.count / 2), client: node.publicKey)
        let healthy = Peer(Host([doc]), client: node.publicKey)
        let client = QueryClient(
            identity: Self.alice.signing, node: node.publicKey, window: 64 << 10, now: Self.now,
            cost: { [damaged] link in link === damaged.toPeer ? 0 : 1 })
        let collector = Collector()
        client.start(
            Self.grep, targets: [doc.target], holders: [[damaged.toPeer, healthy.toPeer]], sink: collector.sink)
        deliver(client, [damaged, healthy], collector)
        #expect(collector.items(0) == Self.expected(content, "ERROR"))
        #expect(collector.finished)
        let resumed = healthy.results.withLock { r -> [QueryResult] in r }.first { $0.status == .data }?.items.first
        #expect(resumed != nil && resumed!.number > 10_000 - 10)
    }

    @Test func aDocumentTheRequesterMayNotReadIsNotAnswered() throws {
        let secret = Self.held(Self.log(lines: 50))
        let shared = SignedPermissionBlock.make(
            document: DocumentID.random(), after: nil,
            members: [.init(identity: Self.alice.token, roles: .all), .init(identity: Self.bob.token, roles: .read)],
            isPublic: false, signer: Self.alice.signing)
        let readable = Self.held(Self.log(lines: 50), rights: shared)
        let peer = Peer(Host([secret, readable]), client: node.publicKey)
        let client = client(identity: Self.bob)
        let collector = Collector()
        client.start(
            Self.grep, targets: [secret.target, readable.target], holders: [[peer.toPeer], [peer.toPeer]],
            sink: collector.sink)
        deliver(client, [peer], collector)
        #expect(collector.items(0).isEmpty)
        #expect(collector.items(1) == Self.expected(readable.content, "ERROR"))
        #expect(collector.events.withLock { $0.contains(.unavailable(target: 0)) })
        // Nothing of the secret document crossed: its target got one bare `unavailable`.
        #expect(
            peer.results.withLock { r -> [QueryResult] in r }.filter { $0.index == 0 } == [
                .init(id: 2, status: .unavailable, index: 0)
            ])
        #expect(peer.host.read.count == readable.content.count)
    }

    @Test func aNodeThatCannotOpenTheDocumentSendsTheRequesterElsewhere() {
        let doc = Self.held(Self.log(lines: 50))
        let storage = Peer(Host([doc], openable: false), client: node.publicKey)
        let device = Peer(Host([doc]), client: node.publicKey)
        let client = QueryClient(
            identity: Self.alice.signing, node: node.publicKey, window: 64 << 10, now: Self.now,
            cost: { [storage] link in link === storage.toPeer ? 0 : 1 })
        let collector = Collector()
        client.start(
            Self.grep, targets: [doc.target], holders: [[storage.toPeer, device.toPeer]], sink: collector.sink)
        #expect(!storage.toPeer.sent.isEmpty && device.toPeer.sent.isEmpty)
        deliver(client, [storage, device], collector)
        #expect(collector.items(0) == Self.expected(doc.content, "ERROR"))
        #expect(storage.host.read.count == 0)
    }

    /// Runs `query` on a fresh peer and returns its answer.
    func answer(_ query: Query, clock: @escaping @Sendable () -> Int64 = QueryTests.now) -> [Message] {
        let peer = Peer(Host([Self.held(Self.log(lines: 10))]), client: node.publicKey, clock: clock)
        peer.server.received(query, from: peer.toClient)
        #expect(peer.host.read.count == 0)
        return peer.toClient.sent
    }

    func signed(origin: SigningPublicKey? = nil, issued: Int64 = QueryTests.now(), window: UInt32 = 64 << 10) -> Query {
        let doc = Self.held(Self.log(lines: 10))
        return Query.signed(
            by: Self.alice.signing, id: 7, origin: origin ?? node.publicKey, issued: issued, op: .grep, flags: [],
            pattern: "ERROR", window: window, limit: 0, targets: [doc.target])
    }

    static func refused(_ messages: [Message]) -> String? {
        guard messages.count == 1, case .result(let r) = messages[0], r.status == .refused else { return nil }
        return String(decoding: r.items.first?.bytes ?? [], as: UTF8.self)
    }

    @Test func aForgedQueryIsRefused() {
        var query = signed()
        query.pattern = "password"
        #expect(Self.refused(answer(query)) == "the query's signature is not its requester's")
        var impostor = signed()
        impostor.requester = Self.bob.signing.publicKey
        #expect(Self.refused(answer(impostor)) == "the query's signature is not its requester's")
    }

    /// Replay: a signed query copied to another connection names another origin and is refused; an old one is
    /// refused; the origin sending it again is harmless (it gets what its identity may read).
    @Test func aReplayedQueryIsRefused() {
        #expect(
            Self.refused(answer(signed(origin: SigningKeyPair.generate().publicKey)))?.contains("another node") == true)
        #expect(Self.refused(answer(signed(issued: Self.now() - 6 * 60 * 1000)))?.contains("older") == true)
        #expect(Self.refused(answer(signed(window: 100)))?.hasPrefix("window 100") == true)
    }

    @Test func malformedQueryBytesAreRefusedAtDecoding() {
        var payload = Frame.encode(.query(signed()))
        payload[6 + 8 + 32 + 32 + 8] = 9  // the operator
        #expect(throws: DecodingError.self) { _ = try Frame.decode(&payload) }
    }
}
