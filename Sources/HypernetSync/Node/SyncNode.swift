import Dispatch
import Foundation
import HypernetCrypto
import HypernetFailpoint
import HypernetModel
import HypernetStore
import Logging
import NIOCore
import NIOPosix
import Synchronization

public struct SyncConfiguration: Sendable {
    /// `HOST:PORT` to accept peers on; nil: this node only dials out.
    public var listen: String?
    /// Addresses to connect to (also remembered in the store as configured peers).
    public var peers: [String]
    public var software: String
    /// Peers kept connected at most (`--max-peers`, docs/protocol.md, "Peer set").
    public var maxPeers: Int
    public static let defaultMaxPeers = 32
    /// Connections in all, authenticated or not, kept or not: one more accepted is closed at once.
    public static let maximumConnections = 256
    /// How long a read of content not held here waits for a peer to send it (`--fetch-timeout`).
    public var fetchTimeout: Double
    /// Runs peers' queries on held content (docs/protocol.md, "Queries"); nil: every target is `unavailable`.
    public var queryScanner: QueryScanner?
    /// Told when a peer joins the kept ones: content that no peer sent before may come from it.
    public var peerConnected: (@Sendable () -> Void)?

    public init(
        listen: String?, peers: [String], software: String, maxPeers: Int = defaultMaxPeers,
        fetchTimeout: Double = 10, queryScanner: QueryScanner? = nil, peerConnected: (@Sendable () -> Void)? = nil
    ) {
        self.listen = listen
        self.peers = peers
        self.software = software
        self.maxPeers = maxPeers
        self.fetchTimeout = fetchTimeout
        self.queryScanner = queryScanner
        self.peerConnected = peerConnected
    }
}

/// A peer as `hypernet status` shows it.
public struct PeerStatus: Sendable, Codable {
    public var address: String
    public var node: String?
    public var connected: Bool
    /// Unix seconds: connected since (when connected), else last seen.
    public var since: Int64?
    public var lastError: String?
    /// Bytes of chunks this node sent the peer answering its `want`s, and received from it answering its own,
    /// since this node started.
    public var bytesServed: Int64?
    public var bytesReceived: Int64?

    public init(
        address: String, node: String?, connected: Bool, since: Int64?, lastError: String?, bytesServed: Int64? = nil,
        bytesReceived: Int64? = nil
    ) {
        self.address = address
        self.node = node
        self.connected = connected
        self.since = since
        self.lastError = lastError
        self.bytesServed = bytesServed
        self.bytesReceived = bytesReceived
    }
}

/// The node-to-node side of a daemon: accepts and dials peers, authenticates them, and replicates the
/// trees it holds (docs/protocol.md). All store work runs on per-session dispatch queues, never on the
/// event loop.
public final class SyncNode: SessionDelegate {
    static let window = 4
    static let entriesPerRun = 256
    static let bytesPerRun = 1 << 20
    static let maximumQueuedRequests = 64
    /// A learned address whose dial fails is forgotten when no handshake succeeded there (or, if none ever did, since
    /// it was learned) for this long: peers teach it again when it is back (docs/protocol.md, "Dialing").
    static let forgetLearnedAfter: Int64 = 7 * 24 * 3600
    /// Chunks a peer may send unasked ahead of a log run, and what a node accepts unasked.
    static let pushLimit = 4 << 20
    /// Runs listing this many chunks (about 4 MiB) go to one replica first, which forwards them to the others.
    static let forwardThreshold = 64
    static let forwardWait: DispatchTimeInterval = .seconds(10)
    /// Live runs of a tree go to every subscriber at once, but their chunks are pushed ahead only to at most
    /// this many (the eager ones). A lazy subscriber that has other sources for the tree waits up to
    /// `lazyWait` for the chunks to be pushed by one of them before it asks: a writer's upload per revision is
    /// bounded by the fan-out, not by the number of followers (docs/protocol.md, "Fan-out").
    public static let eagerFanout = 4
    static let lazyWait: Duration = .milliseconds(300)
    /// How long a live run is held back from a subscriber that has its records already, or gets them from
    /// another node first (`prune`): held runs go out together, keeping its position in this log moving and
    /// repairing a direct path that failed (docs/protocol.md, "Relaying").
    static let relayHold: DispatchTimeInterval = .seconds(1)
    /// How long a connection over the peer cap waits for the peer's `hello` (docs/protocol.md, "Peer set").
    static let helloWait: DispatchTimeInterval = .seconds(10)
    /// What all connections together may hold of frames and records not yet received in full (see `FrameBudget`).
    static let frameBudget = 64 << 20

    let store: Store
    let nodeKey: SigningKeyPair
    let configuration: SyncConfiguration
    let logger: Logger
    let group: MultiThreadedEventLoopGroup
    let fetcher = ChunkFetcher()
    let budget = FrameBudget(limit: frameBudget)
    let acks: AckBroker
    let dialer = Dialer()
    let peerSet: PeerSet
    let ledger: ReceiveLedger
    let demand: DemandFetcher
    let transfers = TransferCounts()
    /// Have-sets peers sent for this node's fetches, and what this node told them for theirs.
    let haves = HaveSets()
    let announcer = Announcer()
    /// Bytes of chunks served to peers that asked for them (`want`), since start.
    public var bytesServed: Int64 { transfers.served }
    let queries: QueryServer
    let queryClient: QueryClient
    /// Fetches damaged chunks again (`repairDamaged`), one pass at a time; a pass asked for while one is queued
    /// is that one.
    private let repairQueue = DispatchQueue(label: "hypernet.sync.repair")
    private let repairQueued = Atomic<Bool>(false)
    private let completionQueued = Atomic<Bool>(false)

    /// What this node serves to one subscriber of one tree.
    struct Cursor {
        var sent: Int64
        var unconfirmed: [Int64] = []
        /// The subscriber has been sent the whole log once, and told so (one `caught up` run per subscription):
        /// every run since is of revisions new to it.
        var live = false
        /// The subscriber has stored the log through here.
        var confirmed: Int64 = 0
        /// A large run held back for another replica to forward (see `forwarder`): sent anyway after this.
        var heldUntil: DispatchTime?
        /// Relayed runs held back (see `holdRelay`) until this.
        var relayHeldUntil: DispatchTime?
    }

    struct PeerState {
        var session: Session
        var hello: Message.Hello?
        var since: Int64
        var cursors: [SigningPublicKey: Cursor] = [:]
        var queuedRequests = 0
        var queuedRuns: [SigningPublicKey: Int] = [:]
        /// Trees this node subscribed to on the session.
        var subscribed: Set<SigningPublicKey> = []
        /// Bytes of chunks pushed unasked since the last run was stored.
        var pushedBytes = 0
        /// Trees whose log this peer has sent up to its end: its runs of them are live from then on.
        var caughtUp: Set<SigningPublicKey> = []
        /// Trees this peer gets from another node first (it sent `prune`): runs this node relays are held.
        var pruned: Set<SigningPublicKey> = []
        /// Trees this node gets from another node first, and told this peer so.
        var pruning: Set<SigningPublicKey> = []
        /// Trees whose last large run this peer held back (it forwards its large writes through another replica):
        /// it is asked for their chunks only when no other peer that offers the tree is connected.
        var heldBack: Set<SigningPublicKey> = []
    }

    struct State {
        var peers: [ObjectIdentifier: PeerState] = [:]
        /// The node each received revision came from: its chunks are not pushed back to it.
        var origins: [RevisionID: SigningPublicKey] = [:]
        var listener: Channel?
        var stopped = false

        /// Whether `peer` may wait for record `id` of `tree` (see `holdRelay`): this node relays it, and it came
        /// from that peer, or the peer gets the tree from another node first.
        func mayHold(_ id: Digest, of tree: SigningPublicKey, for peer: PeerState) -> Bool {
            guard let origin = origins[id] else { return false }
            return origin == peer.session.node || peer.pruned.contains(tree)
        }
    }
    let state = Mutex(State())
    private let timer: DialTimer

    public init(store: Store, nodeKey: SigningKeyPair, configuration: SyncConfiguration, logger: Logger) {
        self.store = store
        self.nodeKey = nodeKey
        self.configuration = configuration
        self.logger = logger
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        acks = AckBroker(nodeKey: nodeKey, book: store, logger: logger)
        ledger = ReceiveLedger(store: store, logger: logger)
        demand = DemandFetcher(
            fetcher: fetcher, haves: haves, timeout: .milliseconds(Int((configuration.fetchTimeout * 1000).rounded())))
        timer = DialTimer()
        peerSet = PeerSet(own: nodeKey.publicKey, maxPeers: configuration.maxPeers)
        let now: @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) }
        let scans = DispatchQueue(label: "hypernet.sync.query", attributes: .concurrent)
        queries = QueryServer(
            host: StoreQueryHost(store: store, scanner: configuration.queryScanner), now: now,
            run: { scans.async(execute: $0) }, logger: logger)
        queryClient = QueryClient(identity: store.keyring.identity, node: nodeKey.publicKey, now: now)
    }

    /// Binds the listener (if any), remembers configured peers, starts dialing. Throws if the address
    /// cannot be bound.
    public func start() throws {
        for p in configuration.peers { try store.addPeer(p, configured: true) }
        try loadRemoved()
        if let listen = configuration.listen {
            let (host, port) = try Self.split(listen)
            let channel = try ServerBootstrap(group: group)
                .serverChannelOption(ChannelOptions.backlog, value: Int32(SyncConfiguration.maximumConnections))
                .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
                .childChannelOption(
                    ChannelOptions.writeBufferWaterMark,
                    value: .init(low: Session.writeHighWater / 2, high: Session.writeHighWater)
                )
                .childChannelInitializer { [weak self] channel in
                    guard let self else { return channel.eventLoop.makeSucceededVoidFuture() }
                    return channel.eventLoop.makeCompletedFuture { try self.attach(channel, dialed: nil) }
                }
                .bind(host: host, port: port).wait()
            state.withLock { $0.listener = channel }
            logger.info("listening for peers", metadata: ["address": "\(listen)"])
        }
        store.observeRevisions { [weak self] added in self?.revisionsAdded(added) }
        store.observeDamage { [weak self] in self?.scheduleRepair() }
        store.setContentSource { [weak self] ids in self?.fetchOnDemand(ids) ?? [] }
        store.observeDurableLocalRevisions { [weak self] ids in self?.acks.ownDurable(ids) }
        timer.source.setEventHandler { [weak self] in
            self?.dialDue()
            self?.ledger.flush()
            self?.acks.flushOwn()
        }
        timer.source.schedule(deadline: .now(), repeating: .milliseconds(250))
        timer.source.resume()
    }

    public func stop() {
        timer.source.cancel()
        // A tick already running finishes first: it may dial, which must not outlive the event loop.
        timer.queue.sync {}
        ledger.flush()
        acks.flushOwn()
        let (listener, sessions) = state.withLock { s in
            s.stopped = true
            return (s.listener, s.peers.values.map(\.session))
        }
        try? listener?.close().wait()
        for s in sessions { try? s.channel.close().wait() }
        // Work already queued for a session may still send on its channel: it finishes before the loop goes.
        for s in sessions { for q in [s.serveQueue, s.receiveQueue, s.chunkQueue] { q.sync {} } }
        // An ack being routed may have picked its links before they ended: it sends before the loop goes.
        acks.queue.sync {}
        repairQueue.sync {}
        try? group.syncShutdownGracefully()
    }

    static func split(_ address: String) throws -> (String, Int) {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
            (0...65535).contains(port), colon != address.startIndex
        else { throw SessionError.protocolViolation("not a HOST:PORT address: \(address)") }
        var host = String(address[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, port)
    }

    private func attach(_ channel: Channel, dialed: String?) throws {
        if state.withLock({ $0.stopped }) { throw ChannelError.ioOnClosedChannel }
        let session = Session(channel: channel, isInitiator: dialed != nil, dialedAddress: dialed, delegate: self)
        try session.install(nodeKey: nodeKey, budget: budget)
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970) }

    // MARK: Dialing

    private func dialDue() {
        let records: [PeerRecord]
        do { records = try store.peers() } catch {
            logger.error("reading peers: \(error)")
            return
        }
        let open = state.withLock { s -> Set<String>? in
            guard !s.stopped else { return nil }
            return Set(s.peers.values.flatMap { [$0.session.dialedAddress, $0.hello?.listen].compactMap { $0 } })
        }
        guard let open else { return }
        let plan = peerSet.dialPlan(records, followed: Set(hello().trees))
        let due = dialer.due(
            plan.records, open: open, connected: peerSet.connectedNodes, now: Date().timeIntervalSince1970,
            limits: plan.limits)
        for address in due { dial(address) }
    }

    private func dial(_ address: String) {
        let host: String
        let port: Int
        do { (host, port) = try Self.split(address) } catch {
            dialFailed(address, "\(error)")
            return
        }
        var bootstrap = ClientBootstrap(group: group)
        // Connections leave from the address this node listens on, so peers see where to call it back.
        if !advertisedAddress.isEmpty, let (local, _) = try? Self.split(advertisedAddress),
            let source = try? SocketAddress(ipAddress: local, port: 0)
        {
            bootstrap = bootstrap.bind(to: source)
        }
        bootstrap
            .connectTimeout(.seconds(5))
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .channelOption(
                ChannelOptions.writeBufferWaterMark,
                value: .init(low: Session.writeHighWater / 2, high: Session.writeHighWater)
            )
            .channelInitializer { [weak self] channel in
                guard let self else { return channel.eventLoop.makeSucceededVoidFuture() }
                return channel.eventLoop.makeCompletedFuture { try self.attach(channel, dialed: address) }
            }
            .connect(host: host, port: port)
            .whenFailure { [weak self] error in
                let reason = (error as? NIOConnectionError)?.connectionErrors.first.map { "\($0.error)" } ?? "\(error)"
                self?.dialFailed(address, reason)
            }
    }

    /// Schedules the next attempt with exponential back-off.
    private func dialFailed(_ address: String, _ reason: String) {
        if dialer.failed(address, now: Date().timeIntervalSince1970) {
            logger.info("cannot reach peer", metadata: ["address": "\(address)", "error": "\(reason)"])
        }
        DispatchQueue.global().async { [self] in
            try? store.updatePeer(address, node: nil, error: reason)
            if (try? store.forgetLearnedPeer(address, unseenSince: Self.now() - Self.forgetLearnedAfter)) == true {
                logger.info("forgot a learned peer address unreachable for 7 days", metadata: ["address": "\(address)"])
            }
        }
    }

    /// `peer add`: configures `address`, also one removed before.
    public func addPeer(_ address: String) throws(StoreError) {
        try store.addPeer(address, configured: true)
        try loadRemoved()
    }

    /// `peer remove`: forgets `address` (persistently, see `Store.removePeer`), closes the connections to it and to
    /// the node last seen there, which is refused from now on. False if the address is not in the peer table.
    public func removePeer(_ address: String) throws(StoreError) -> Bool {
        guard let record = try store.removePeer(address) else { return false }
        try loadRemoved()
        dialer.forget(address)
        let sessions = state.withLock { s in
            s.peers.values.filter { p in
                p.session.dialedAddress == address || p.hello?.listen == address
                    || (record.node != nil && p.session.node.map { Hex.encode($0.bytes) } == record.node)
            }.map(\.session)
        }
        for session in sessions { session.close(Self.removedReason) }
        logger.info("peer removed", metadata: ["address": "\(address)", "node": "\(record.node ?? "-")"])
        return true
    }

    static let removedReason = "removed with `peer remove`"
    var fullReason: String { "over the cap of \(peerSet.maxPeers) peers" }

    private func loadRemoved() throws(StoreError) {
        dialer.setRemoved(try store.peers(removed: true))
    }

    // MARK: Session events (event loop)

    /// Only a connection that is up becomes a peer: an address whose connect failed is not "being dialed" any more,
    /// and is dialed again when its back-off expires. An accepted one is refused past the connection caps.
    func sessionOpened(_ session: Session) -> String? {
        if state.withLock({ $0.stopped }) { return "node stopping" }
        if let refused = peerSet.opened(
            session, initiator: session.isInitiator, ip: session.remoteIP, dialed: session.dialedAddress)
        {
            return refused
        }
        state.withLock { $0.peers[ObjectIdentifier(session)] = PeerState(session: session, since: Self.now()) }
        return nil
    }

    func sessionAuthenticated(_ session: Session) {
        guard let node = session.node else { return }
        if node == nodeKey.publicKey {
            if let a = session.dialedAddress { dialer.reachedSelf(at: a) }
            session.close("connected to itself")
            return
        }
        if dialer.isRemoved(node: node) {
            session.close(Self.removedReason)
            return
        }
        let (admission, duplicate) = peerSet.authenticated(session)
        duplicate?.close("duplicate connection")
        if admission == .duplicate { return }
        if admission == .kept { admitted(session) }
        if admission == .waiting {
            // A peer that sends no `hello` (it may be waiting on this node too) is not waited for long.
            session.serveQueue.asyncAfter(deadline: .now() + Self.helloWait) { [self] in
                if peerSet.isWaiting(session) { session.close(fullReason) }
            }
        }
        session.serveQueue.async { [self] in
            if let a = session.dialedAddress { try? store.updatePeer(a, node: node, error: nil) }
            // A peer over the cap learns other addresses to dial, and waits for a decision on its `hello`.
            if admission == .kept { session.send(.hello(hello())) }
            session.send(.peers(knownAddresses(excluding: session)))
        }
    }

    /// Runs a query on the connected peers that offer the targets' trees (docs/protocol.md, "Queries"); `sink` is
    /// told its results in order for each target, then `.finished`. Returns the handle for `consumed` and `cancel`.
    public func query(
        _ request: QueryClient.Request, targets: [Query.Target], sink: @escaping @Sendable (QueryEvent) -> Void
    ) -> UInt64 {
        let peers = state.withLock { s in s.peers.values.map { ($0.session, Set($0.hello?.trees ?? [])) } }
        let holders = targets.map { t in peers.filter { $0.1.contains(t.tree) }.map { $0.0 as any PeerLink } }
        return queryClient.start(request, targets: targets, holders: holders, sink: sink)
    }

    /// The consumer of a query took results: their peer may send more.
    public func consumed(_ credit: QueryCredit) { queryClient.consumed(credit) }

    public func cancelQuery(_ handle: UInt64) { queryClient.cancel(handle) }

    /// `session` is one of the kept peers now (`PeerSet`): acks go to it.
    private func admitted(_ session: Session) {
        acks.linkAuthenticated(session)
        logger.info("peer connected", metadata: ["peer": "\(session)"])
        // A peer that may hold what was found damaged while none was connected.
        if !store.damagedChunks.isEmpty { scheduleRepair() }
        scheduleCompletion()
        configuration.peerConnected?()
    }

    func sessionEnded(_ session: Session, reason: String?) {
        let key = ObjectIdentifier(session)
        state.withLock { _ = $0.peers.removeValue(forKey: key) }
        peerSet.ended(session)
        if let a = session.dialedAddress { dialer.failed(a, now: Date().timeIntervalSince1970) }
        acks.linkEnded(session)
        fetcher.sessionEnded(session)
        haves.linkEnded(session)
        announcer.linkEnded(session)
        queries.linkEnded(session)
        queryClient.linkEnded(session)
        // Runs held back for this session to forward go to the others now.
        let held = state.withLock { s in
            s.peers.values.flatMap { p in p.cursors.filter { $0.value.heldUntil != nil }.map { (p.session, $0.key) } }
        }
        for (other, tree) in held { other.serveQueue.async { [self] in pump(tree, to: other) } }
        if let reason, reason != "duplicate connection", reason != "connected to itself", reason != fullReason {
            logger.warning("peer dropped: \(reason)", metadata: ["peer": "\(session)"])
            if let a = session.dialedAddress {
                DispatchQueue.global().async { [store] in try? store.updatePeer(a, node: nil, error: reason) }
            }
        } else if session.node != nil, reason == nil {
            logger.info("peer disconnected", metadata: ["peer": "\(session)"])
        }
    }

    func session(_ session: Session, received message: Message) {
        switch message {
        case .entries(let tree, let storeID, let entries, _, let held):
            guard !entries.isEmpty else {
                // The caught-up marker: nothing to store; what follows is live.
                state.withLock { _ = $0.peers[ObjectIdentifier(session)]?.caughtUp.insert(tree) }
                return
            }
            // An honest peer keeps at most `window` runs of one tree unconfirmed.
            let admitted = state.withLock { s -> Bool in
                guard var p = s.peers[ObjectIdentifier(session)], p.queuedRuns[tree, default: 0] < Self.window else {
                    return false
                }
                p.queuedRuns[tree, default: 0] += 1
                s.peers[ObjectIdentifier(session)] = p
                return true
            }
            guard admitted else { return session.close("sent more than \(Self.window) unconfirmed log runs") }
            session.receiveQueue.async { [self] in
                receive(entries, tree: tree, storeID: storeID, held: held, from: session)
            }
        case .chunk(let id, let sealed):
            let requested = fetcher.isRequested(id, by: session)
            if !requested {
                // Pushed ahead of a run: accepted up to what `window` runs may carry, each frame charged at
                // least a page (empty ones too), and checked against its id here, so junk is never queued.
                guard let sealed, BLAKE2b.hash(sealed) == id else {
                    return session.close("pushed a chunk whose bytes do not match its id")
                }
                let admitted = state.withLock { s -> Bool in
                    guard var p = s.peers[ObjectIdentifier(session)] else { return false }
                    p.pushedBytes += max(sealed.count, 4096)
                    s.peers[ObjectIdentifier(session)] = p
                    return p.pushedBytes <= Self.pushLimit * (Self.window + 1)
                }
                guard admitted else { return session.close("sent more chunks than were asked for") }
            }
            // A pushed chunk is stored in order with the runs (it precedes the one that lists it, which then finds
            // it stored); an answer to `want` on its own queue, since a run is waiting for it.
            let queue = requested ? session.chunkQueue : session.receiveQueue
            queue.async { [self] in store(chunk: id, sealed: sealed, from: session, requested: requested) }
        case .ping:
            break
        case .ack(let ack):
            acks.arrived(ack, from: session)
        case .query(let query):
            queries.received(query, from: session)
        case .credit(let id, let received):
            queries.credit(id: id, received: received, from: session)
        case .cancel(let id):
            queries.cancel(id: id, from: session)
        case .result(let result):
            queryClient.received(result, from: session)
        case .have(let swarm, let bits):
            if let why = haves.have(swarm, bits: bits, from: session) { session.close(why) }
        case .got(let swarm, let indexes):
            if let why = haves.got(swarm, indexes: indexes, from: session) { session.close(why) }
        default:
            // Requests queue up to a limit; past half of it the socket is not read until they drain.
            let queued = state.withLock { s -> Int? in
                guard var p = s.peers[ObjectIdentifier(session)], p.queuedRequests < Self.maximumQueuedRequests else {
                    return nil
                }
                p.queuedRequests += 1
                s.peers[ObjectIdentifier(session)] = p
                return p.queuedRequests
            }
            guard let queued else { return session.close("more than \(Self.maximumQueuedRequests) requests queued") }
            if queued == Self.maximumQueuedRequests / 2 { session.setReading(false) }
            session.serveQueue.async { [self] in
                handle(message, from: session)
                let left = state.withLock { s -> Int in
                    s.peers[ObjectIdentifier(session)]?.queuedRequests -= 1
                    return s.peers[ObjectIdentifier(session)]?.queuedRequests ?? 0
                }
                if left == Self.maximumQueuedRequests / 4 { session.setReading(true) }
            }
        }
    }

    // MARK: Requests (serve queue)

    private func handle(_ message: Message, from session: Session) {
        switch message {
        case .hello(let hello):
            if dialer.isRemoved(address: hello.listen) { return session.close(Self.removedReason) }
            switch peerSet.offered(hello.trees, listen: hello.listen, by: session, followed: Set(self.hello().trees)) {
            case .refuse: return session.close(fullReason)
            case .keep(let admitted, let evicting):
                evicting?.close(fullReason)
                if admitted {
                    self.admitted(session)
                    session.send(.hello(self.hello()))
                }
            }
            state.withLock { $0.peers[ObjectIdentifier(session)]?.hello = hello }
            // A peer that answers: its back-off starts over. (Not at the handshake: a node that refuses this one
            // right after it, having removed it, is then dialed less and less often.)
            if let a = session.dialedAddress { dialer.answered(a, on: session) }
            if !hello.listen.isEmpty, hello.listen != configuration.listen, let node = session.node {
                try? store.addPeer(hello.listen, configured: false)
                try? store.updatePeer(hello.listen, node: node, error: nil)
            }
            subscribe(session, offered: hello.trees)
        case .peers(let addresses):
            for a in addresses.prefix(64) where a != configuration.listen && (try? Self.split(a)) != nil {
                try? store.addPeer(a, configured: false)
            }
        case .subscribe(let tree, let storeID, let after):
            guard holds(tree) else { return }
            // A repeated subscribe restarts the position but keeps the runs in flight: the window still holds.
            state.withLock { s in
                let inFlight = s.peers[ObjectIdentifier(session)]?.cursors[tree]?.unconfirmed ?? []
                s.peers[ObjectIdentifier(session)]?.cursors[tree] = Cursor(
                    sent: storeID == store.storeID ? after : 0, unconfirmed: inFlight)
            }
            pump(tree, to: session)
        case .progress(let tree, let seq):
            let others = state.withLock { s -> [Session] in
                s.peers[ObjectIdentifier(session)]?.cursors[tree]?.unconfirmed.removeAll { $0 <= seq }
                s.peers[ObjectIdentifier(session)]?.cursors[tree]?.confirmed = seq
                return s.peers.values.filter { $0.session !== session && $0.cursors[tree]?.heldUntil != nil }.map(
                    \.session)
            }
            pump(tree, to: session)
            // Runs held back for this replica to forward can go now: the others have likely got them from it.
            for other in others { other.serveQueue.async { [self] in pump(tree, to: other) } }
        case .want(let ids):
            for id in ids {
                let sealed = try? store.sealedChunk(id)
                guard session.sendWhenWritable(.chunk(id: id, sealed: sealed ?? nil)) else { return }
                transfers.served(sealed?.count ?? 0, to: session.node)
                if sealed != nil { announcer.served(id, to: session) }
            }
        case .prune(let tree):
            state.withLock { _ = $0.peers[ObjectIdentifier(session)]?.pruned.insert(tree) }
        case .graft(let tree):
            state.withLock { _ = $0.peers[ObjectIdentifier(session)]?.pruned.remove(tree) }
            pump(tree, to: session)
        case .interest(let swarm, let ids):
            announcer.interest(swarm, ids: ids, from: session, held: store.holds)
        case .entries, .chunk, .ping, .ack, .query, .result, .credit, .cancel, .have, .got:
            break  // handled on arrival (see `session(_:received:)`)
        }
    }

    /// The trees this node wants from peers: its identity's, the pinned ones (`*`: any offered) and its
    /// contacts' (`Store.content(of:)`).
    private func wanted(_ offered: [SigningPublicKey]) -> [SigningPublicKey] {
        offered.filter { store.content(of: $0) != nil }
    }

    private func holds(_ tree: SigningPublicKey) -> Bool {
        tree == store.keyring.identity.publicKey || ((try? store.trees()) ?? []).contains(tree)
            || !wanted([tree]).isEmpty
    }

    private func hello() -> Message.Hello {
        var trees = Set((try? store.trees()) ?? [])
        trees.insert(store.keyring.identity.publicKey)
        let pins = (try? store.pins()) ?? []
        for p in pins { if let t = IdentityToken(p) { trees.insert(t.signing) } }
        return Message.Hello(
            listen: advertisedAddress, software: configuration.software, storeID: store.storeID,
            trees: trees.sorted { $0.bytes.lexicographicallyPrecedes($1.bytes) }, pinsEverything: pins.contains("*"))
    }

    /// The listen address peers can dial: not an unspecified one (0.0.0.0, ::), which names no host.
    private var advertisedAddress: String {
        guard let listen = configuration.listen, let (host, _) = try? Self.split(listen), host != "0.0.0.0",
            host != "::"
        else { return "" }
        return listen
    }

    private func knownAddresses(excluding session: Session) -> [String] {
        let fromStore = ((try? store.peers()) ?? []).filter { $0.lastSeen != nil }.map(\.address)
        let listening = state.withLock { s in
            s.peers.values.compactMap { $0.session === session ? nil : $0.hello?.listen }
        }
        let own = state.withLock { s in s.peers[ObjectIdentifier(session)]?.hello?.listen }
        return Array(Set(fromStore + listening).subtracting([own ?? "", ""])).sorted().prefix(64).map { $0 }
    }

    private func subscribe(_ session: Session, offered: [SigningPublicKey]) {
        guard let node = session.node else { return }
        let peerStore = state.withLock { $0.peers[ObjectIdentifier(session)]?.hello?.storeID } ?? ""
        // Once per tree per session: a repeated subscribe would re-send what is in flight.
        let candidates = wanted(offered)
        let fresh = state.withLock { s -> [SigningPublicKey] in
            let new = candidates.filter { !(s.peers[ObjectIdentifier(session)]?.subscribed.contains($0) ?? true) }
            s.peers[ObjectIdentifier(session)]?.subscribed.formUnion(new)
            return new
        }
        for tree in fresh {
            let known = try? store.progress(peer: node, tree: tree)
            let after = known?.storeID == peerStore ? known!.seq : 0
            logger.debug("subscribing", metadata: ["peer": "\(session)", "after": "\(after)"])
            session.send(.subscribe(tree: tree, storeID: peerStore, after: after))
            // Held on demand: no chunk pushed ahead of its runs (docs/protocol.md, "Content on demand").
            if store.content(of: tree) == .onDemand {
                state.withLock { _ = $0.peers[ObjectIdentifier(session)]?.pruning.insert(tree) }
                session.send(.prune(tree: tree))
            }
        }
    }

    /// Re-offers subscriptions to every peer, after the pins changed, and fetches what a tree now held in full
    /// lacks.
    public func pinsChanged() {
        scheduleCompletion()
        let sessions = state.withLock { s in s.peers.values.compactMap { p in p.hello.map { (p.session, $0.trees) } } }
        for (session, trees) in sessions {
            session.serveQueue.async { [self] in
                session.send(.hello(hello()))
                subscribe(session, offered: trees)
            }
        }
    }

    /// Sends `session` what it has not yet seen of `tree`, at most `window` unconfirmed runs ahead.
    private func pump(_ tree: SigningPublicKey, to session: Session) {
        let key = ObjectIdentifier(session)
        while true {
            guard let cursor = state.withLock({ $0.peers[key]?.cursors[tree] }), cursor.unconfirmed.count < Self.window
            else { return }
            let entries: [LogEntry]
            do { entries = try store.log(tree: tree, after: cursor.sent, limit: Self.entriesPerRun) } catch {
                logger.error("reading the log: \(error)")
                return
            }
            // A prefix of the log, never a selection: the peer's progress is a position in it.
            var run: [LogEntry] = []
            var bytes = 0
            for e in entries {
                let size = e.record.count + 32 * e.chunks.count
                if !run.isEmpty && bytes + size > Self.bytesPerRun { break }
                run.append(e)
                bytes += size
            }
            if run.isEmpty {
                if !cursor.live {
                    state.withLock { s in s.peers[key]?.cursors[tree]?.live = true }
                    session.send(.entries(tree: tree, storeID: store.storeID, entries: [], caughtUp: true))
                }
                return
            }
            let last = run.last!.seq
            do { try store.publish(through: last) } catch {
                logger.error("cannot send the log past seq \(last): \(error)")
                return
            }
            let ids = run.map { BLAKE2b.hash($0.record) }
            let eager = isEager(session, for: tree)
            if holdForForwarding(run, ids: ids, tree: tree, to: session) { return }
            let relayHold = cursor.live ? holdRelay(run, ids: ids, tree: tree, to: session) : .none
            if relayHold == .holding { return }
            state.withLock { s in
                s.peers[key]?.cursors[tree]?.heldUntil = nil
                s.peers[key]?.cursors[tree]?.relayHeldUntil = nil
                s.peers[key]?.cursors[tree]?.sent = last
                s.peers[key]?.cursors[tree]?.unconfirmed.append(last)
            }
            // A caught-up eager subscriber lacks the new chunks for certain: they go first, saving it a round trip
            // (and, should it have another source, the wait of a lazy subscriber), also when runs follow each other
            // faster than it confirms them. A large run's are not pushed: the round trip is nothing beside their
            // transfer, and the subscriber may have them already (this node relays, or holds the run back while
            // another replica forwards it). Nor are the chunks of what came from this peer, nor any to a peer that gets
            // the tree from another node first (`prune`): it has them, or fetches them.
            if cursor.live && eager && !Self.isLarge(run) {
                let chunks = state.withLock { s -> [ChunkID] in
                    guard s.peers[key]?.pruned.contains(tree) == false else { return [] }
                    return zip(run, ids).filter { s.origins[$0.1] != session.node }.flatMap(\.0.chunks)
                }
                push(chunks, to: session)
            }
            // Held for a forwarder, or by the relay hold: either way the subscriber may have it from another node.
            let message = Message.entries(
                tree: tree, storeID: store.storeID, entries: run, caughtUp: false,
                held: relayHold == .expired || cursor.heldUntil != nil)
            if Failpoint.hit("sync.send") { return session.close("failpoint sync.send") }
            guard session.sendWhenWritable(message) else { return }
        }
    }

    /// Whether to hold back `run` from `session` for a while: a large run made here goes first to one
    /// subscriber (the forwarder, the one with the smallest node key), which stores it and passes it on to
    /// the other replicas it is connected to, so the writer's upload is paid once, not once per replica.
    /// Held until the forwarder confirms the run, or `forwardWait` passes.
    private func holdForForwarding(_ run: [LogEntry], ids: [Digest], tree: SigningPublicKey, to session: Session)
        -> Bool
    {
        guard Self.isLarge(run) else { return false }
        let last = run.last!.seq
        let (hold, deadline) = state.withLock { s -> (Bool, DispatchTime?) in
            // Only for what this node made: a relay forwards at once.
            guard ids.contains(where: { s.origins[$0] == nil }) else { return (false, nil) }
            let subscribers = s.peers.values.filter { $0.cursors[tree] != nil && $0.session.node != nil }
            guard
                let forwarder = subscribers.min(by: {
                    $0.session.node!.bytes.lexicographicallyPrecedes($1.session.node!.bytes)
                }),
                forwarder.session !== session, (forwarder.cursors[tree]?.confirmed ?? last) < last
            else { return (false, nil) }
            let key = ObjectIdentifier(session)
            let until = s.peers[key]?.cursors[tree]?.heldUntil ?? .now() + Self.forwardWait
            s.peers[key]?.cursors[tree]?.heldUntil = until
            return (DispatchTime.now() < until, until)
        }
        if hold, let deadline {
            session.serveQueue.asyncAfter(deadline: deadline) { [self] in pump(tree, to: session) }
        }
        return hold
    }

    /// Whether to hold back the live `run` from `session` for up to `relayHold`: a run this node only relays
    /// (it made none of its records), each record of which came from that peer (it has it) or is of a tree the
    /// peer gets from another node first (it sent `prune`). Records made here, or new to the peer, go at once,
    /// with whatever was held before them (a run is a prefix of the log); so do large runs, which a writer
    /// holds back from the other replicas while this node forwards them (`holdForForwarding`).
    private func holdRelay(_ run: [LogEntry], ids: [Digest], tree: SigningPublicKey, to session: Session) -> RelayHold {
        if Self.isLarge(run) { return .none }
        let key = ObjectIdentifier(session)
        let (hold, newDeadline) = state.withLock { s -> (RelayHold, DispatchTime?) in
            guard let p = s.peers[key], p.session.node != nil, let cursor = p.cursors[tree],
                ids.allSatisfy({ s.mayHold($0, of: tree, for: p) })
            else { return (.none, nil) }
            if let until = cursor.relayHeldUntil { return (DispatchTime.now() < until ? .holding : .expired, nil) }
            let until = DispatchTime.now() + Self.relayHold
            s.peers[key]?.cursors[tree]?.relayHeldUntil = until
            return (.holding, until)
        }
        // One wake-up per hold, however many runs it holds.
        if let newDeadline {
            session.serveQueue.asyncAfter(deadline: newDeadline) { [self] in pump(tree, to: session) }
        }
        return hold
    }

    enum RelayHold {
        /// The run goes at once.
        case none
        case holding
        /// The run was held, and goes now, marked `held`.
        case expired
    }

    /// A run listing `forwardThreshold` chunks or more: forwarded by one replica when made here, never pushed ahead.
    static func isLarge(_ run: [LogEntry]) -> Bool {
        run.reduce(0) { $0 + $1.chunks.count } >= forwardThreshold
    }

    /// Whether `session` is one of the `eagerFanout` subscribers of `tree` this node pushes to at once: all of
    /// them when there are few, else those whose keys hash closest to this node's (a fixed, pseudo-random
    /// choice per pair of nodes, so that the eager links of all nodes form a random overlay).
    private func isEager(_ session: Session, for tree: SigningPublicKey) -> Bool {
        let subscribers = state.withLock { s in
            s.peers.values.filter { $0.cursors[tree] != nil }.compactMap(\.session.node)
        }
        guard subscribers.count > Self.eagerFanout, let node = session.node else { return true }
        return Self.eagerSet(of: subscribers, from: nodeKey.publicKey).contains(node)
    }

    public static func eagerSet(of subscribers: [SigningPublicKey], from own: SigningPublicKey) -> Set<SigningPublicKey>
    {
        let ranked = subscribers.map { (BLAKE2b.hash(own.bytes + $0.bytes), $0) }.sorted { $0.0 < $1.0 }
        return Set(ranked.prefix(eagerFanout).map(\.1))
    }

    /// Sends chunks ahead of the entries that list them, up to `pushLimit` bytes (larger writes are fetched).
    private func push(_ ids: [ChunkID], to session: Session) {
        var budget = Self.pushLimit
        for id in ids {
            guard let sealed = try? store.sealedChunk(id), sealed.count <= budget else { return }
            budget -= sealed.count
            guard session.sendWhenWritable(.chunk(id: id, sealed: sealed)) else { return }
        }
    }

    /// A revision was stored (made here or received): push it to every subscriber of its tree.
    private func revisionsAdded(_ added: [AddedRevision]) {
        let byTree = Dictionary(grouping: added, by: \.tree)
        let now = DispatchTime.now()
        let targets = state.withLock { s in
            s.peers.values.flatMap { p in
                p.cursors.compactMap { tree, cursor -> (Session, SigningPublicKey)? in
                    guard let revisions = byTree[tree] else { return nil }
                    // Small runs a relay hold in force may keep wait for its timer, without reading the log.
                    if let until = cursor.relayHeldUntil, now < until,
                        revisions.reduce(0, { $0 + $1.chunkCount }) < Self.forwardThreshold,
                        revisions.allSatisfy({ s.mayHold($0.id, of: tree, for: p) })
                    {
                        return nil
                    }
                    return (p.session, tree)
                }
            }
        }
        for (session, tree) in targets { session.serveQueue.async { [self] in pump(tree, to: session) } }
    }

    // MARK: Receiving (receive queue)

    /// Fetches from `session` what the revisions reuse of content this node released (`Store.unlistedObjects`),
    /// walking again what arrives (a fetched node names more), until nothing new is missing or the sender holds
    /// none of it. Returns each revision's objects asked for; those that arrived are in `arrived`.
    private func fetchUnlisted(
        of revisions: [RemoteRevision], via session: Session, into arrived: inout [ChunkID: ChunkLocation]
    ) -> [RevisionID: [ChunkID]] {
        var reused: [RevisionID: [ChunkID]] = [:]
        var asked = Set<ChunkID>()
        while !session.isEnded {
            guard let found = try? store.unlistedObjects(of: revisions) else { break }
            let ids = Array(Set(found.values.joined()).subtracting(asked))
            if ids.isEmpty { break }
            for (revision, objects) in found { reused[revision, default: []] += objects }
            asked.formUnion(ids)
            let got = fetcher.fetch(ids, via: session)
            if got.isEmpty { break }
            arrived.merge(got) { a, _ in a }
        }
        return reused
    }

    /// Stores a run of `session`'s log, then confirms it (freeing one slot of its window) and acks.
    /// `retrying`: the run failed on a full disk before and was logged then.
    private func receive(
        _ entries: [LogEntry], tree: SigningPublicKey, storeID: String, held: Bool, from session: Session,
        retrying: Bool = false
    ) {
        var confirmed = false
        defer { if !confirmed { releaseRun(tree, of: session) } }
        guard let node = session.node, let last = entries.last?.seq else { return }
        guard let content = store.content(of: tree) else { return }
        if Self.isLarge(entries) {
            state.withLock { s in
                if held {
                    s.peers[ObjectIdentifier(session)]?.heldBack.insert(tree)
                } else {
                    s.peers[ObjectIdentifier(session)]?.heldBack.remove(tree)
                }
            }
        }
        if Failpoint.hit("sync.receive") { return session.close("failpoint sync.receive") }
        do {
            // A record's id is its hash: one held already (an echo) was checked when it was stored, and is not
            // decoded and verified again.
            let hashes = entries.map { BLAKE2b.hash($0.record) }
            let have = try store.existingRevisions(hashes)
            var fresh: [RemoteRecord] = []
            var seqs: [Digest: Int64] = [:]
            var ids: [RevisionID] = []
            for (e, hash) in zip(entries, hashes) {
                if have.contains(hash) {
                    ids.append(hash)
                    continue
                }
                do {
                    switch try LogRecord(record: e.record) {
                    case .revision(let signed):
                        // On demand: a file's content is fetched when read; the rest (directory listings) now.
                        let onDemand = content == .onDemand && signed.revision.kind == .file
                        fresh.append(
                            .revision(
                                RemoteRevision(signed: signed, tree: tree, chunks: e.chunks, onDemand: onDemand)))
                        ids.append(hash)
                    case .block(let block):
                        fresh.append(.block(block, tree: tree))
                    case .release(let statement):
                        fresh.append(.release(statement, tree: tree))
                    }
                    seqs[hash] = e.seq
                } catch {
                    logger.warning(
                        "rejected the log record at seq \(e.seq): \(error)", metadata: ["peer": "\(session)"])
                }
            }
            // Known before they are stored: storing announces them to this node's subscribers at once, and its
            // runs must neither push their chunks back to this peer nor be held as if made here.
            state.withLock { s in
                if s.origins.count > 100_000 { s.origins.removeAll() }
                for record in fresh where s.origins[record.id] == nil { s.origins[record.id] = node }
            }
            // The chunks of a revision its author had no right to make are not fetched (they would stay as garbage).
            let revisions = fresh.compactMap { record -> RemoteRevision? in
                if case .revision(let r) = record { return r }
                return nil
            }
            let refused = try store.unauthorized(revisions)
            let allowed = revisions.filter { !refused.contains($0.signed.id) }
            let missing = try store.missingChunks(allowed.filter { !$0.onDemand }.flatMap(\.chunks))
            // Chunks of on-demand content pushed here anyway are kept, as if read.
            let pushed = fetcher.arrived(among: allowed.filter(\.onDemand).flatMap(\.chunks))
            if !missing.isEmpty, !Self.isLarge(entries), hasOtherSource(of: tree, than: session) {
                // A live run without its chunks: this node is one of the sender's lazy subscribers, and an
                // eager one is likely pushing them here already (see `eagerFanout`).
                fetcher.awaitPushes(missing, timeout: Self.lazyWait)
            }
            var arrived = try fetchRun(missing, of: tree, from: session).merging(pushed) { a, _ in a }
            if session.isEnded { return }
            if let error = fetcher.localFailure(among: missing) { throw error }
            let reused = fetchUnlisted(of: allowed, via: session, into: &arrived)
            if session.isEnded { return }
            // What they reuse is listed with them here: recorded as held, and in this node's log.
            fresh = fresh.map { record in
                guard case .revision(var r) = record, let ids = reused[r.signed.id] else { return record }
                r.chunks += ids.filter { arrived[$0] != nil && !r.chunks.contains($0) }
                return .revision(r)
            }
            // A run of revisions held already (echoed back by a peer that got them from us) costs no write.
            if Failpoint.hit("sync.store") { throw StoreError.io(path: "received revisions", errno: EIO) }
            let rejected = ledger.settle(
                fresh.isEmpty ? [] : try store.storeRemote(records: fresh, chunks: Array(arrived.values)))
            for (id, why) in rejected {
                logger.warning("rejected log record \(id.hex): \(why)", metadata: ["peer": "\(session)"])
            }
            fetcher.forget(arrived.keys)
            if !fresh.isEmpty { try store.sync() }
            // Held now: what was held before, and what the transaction stored (or found stored meanwhile).
            let notStored = Set(rejected.map(\.0))
            // An ack says the content is here: of a tree held on demand (now or before: a new revision may need the
            // chunks of an older one), only what was fetched in full is acked.
            let partial = try content == .onDemand || store.hasAbsent(in: tree) ? try store.fileRevisions(ids) : []
            let acked = { (id: RevisionID) in !notStored.contains(id) && !partial.contains(id) }
            acks.ack(ids.filter(acked), echoedBy: session, brought: revisions.map(\.signed.id).filter(acked))
            // A chunk or parent that did not arrive may yet: progress stops before the first such revision,
            // and the session restarts from there. Invalid revisions are skipped for good.
            let transient = Set(rejected.filter { $0.1.isTransient }.map(\.0))
            if let stop = fresh.map(\.id).first(where: transient.contains), let stopSeq = seqs[stop] {
                if let before = entries.last(where: { $0.seq < stopSeq })?.seq {
                    try ledger.record(
                        progress: before, storeID: storeID, of: .init(peer: node, tree: tree), lazily: false)
                }
                session.close("incomplete transfer; resuming from record \(stop.hex)")
                return
            }
            try ledger.record(
                progress: last, storeID: storeID, of: .init(peer: node, tree: tree), lazily: fresh.isEmpty)
            // The slot is free before the peer learns it is: its next run cannot arrive early.
            releaseRun(tree, of: session)
            confirmed = true
            session.send(.progress(tree: tree, seq: last))
            adjustRelay(of: tree, from: session, news: !revisions.isEmpty, held: held, ids: ids)
        } catch {
            guard (error as? StoreError)?.isNoSpace == true else {
                logger.error("storing received revisions failed: \(error)", metadata: ["peer": "\(session)"])
                return session.close("local store failure")
            }
            // This node's disk is full: not the peer's doing. The connection stays, and the run is tried again
            // each second (the runs after it wait) until there is room or the connection ends.
            if !retrying {
                logger.error(
                    "storing received revisions failed: \(error); tried again each second",
                    metadata: ["peer": "\(session)"])
            }
            confirmed = true  // the retry keeps the run's slot
            retryLater(entries, tree: tree, storeID: storeID, held: held, from: session)
        }
    }

    /// The chunks a run of `tree` from `session` lacks (docs/protocol.md, "Chunks"). A large run's come from every
    /// connected peer that offers the tree, at once ("Multi-source fetch"): the replicas of a large write fetch it
    /// from each other, and from the writer only when it sent them the run without holding it back (a writer
    /// uploads a large write about once: `holdForForwarding`). A small run's come from `session`, which holds them: another peer may
    /// not have them yet, and asking it would cost a round trip. The fetch ends with the run's connection (the
    /// run comes again on the next), at a failure of this node's store, or when no chunk arrived for a while.
    private func fetchRun(_ missing: [ChunkID], of tree: SigningPublicKey, from session: Session) throws(StoreError)
        -> [ChunkID: ChunkLocation]
    {
        guard missing.count >= Self.forwardThreshold else {
            return missing.isEmpty ? [:] : fetcher.fetch(missing, via: session)
        }
        // The same run may come from two peers (a relay, the writer): what the other fetch stores from now on is
        // found in its slot, what it stored already in the catalog, so no chunk is fetched twice.
        fetcher.hold(missing)
        defer { fetcher.unhold(missing) }
        let absent = try store.missingChunks(missing)
        fetcher.forgetLocalFailures(absent)
        let found = demand.fetch(
            absent, idle: ChunkFetcher.stallLimit,
            while: { !session.isEnded && fetcher.localFailure(among: absent) == nil },
            from: {
                state.withLock { s in
                    let holders = s.peers.values.filter {
                        $0.session === session || $0.hello?.trees.contains(tree) == true
                    }
                    let willing = holders.filter { !$0.heldBack.contains(tree) }
                    return (willing.isEmpty ? holders : willing).map { $0.session as any PeerLink }
                }
            })
        return Dictionary(found.map { ($0.id, $0) }) { a, _ in a }
    }

    /// `receive` again in a second, with the session's later runs held back until then.
    private func retryLater(
        _ entries: [LogEntry], tree: SigningPublicKey, storeID: String, held: Bool, from session: Session
    ) {
        session.receiveQueue.suspend()
        DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(1)) { [self] in
            defer { session.receiveQueue.resume() }
            if session.isEnded { return }
            receive(entries, tree: tree, storeID: storeID, held: held, from: session, retrying: true)
        }
    }

    /// Plumtree's prune and graft, for relayed runs: a live run of revisions this node got first from a third
    /// node (so it has another source) asks the peer to hold its relays back; a run with news undoes that.
    /// A `held` run proves nothing: it is mostly echoes of what this node sent the peer.
    private func adjustRelay(
        of tree: SigningPublicKey, from session: Session, news: Bool, held: Bool, ids: [RevisionID]
    ) {
        guard let node = session.node else { return }
        let key = ObjectIdentifier(session)
        let onDemand = news && store.content(of: tree) == .onDemand
        let message = state.withLock { s -> Message? in
            guard let p = s.peers[key], p.caughtUp.contains(tree) else { return nil }
            if news {
                // A tree held on demand stays pruned: it wants no pushed chunks.
                return onDemand ? nil : s.peers[key]?.pruning.remove(tree).map { .graft(tree: $0) }
            }
            guard !held, !p.pruning.contains(tree), ids.contains(where: { s.origins[$0].map { $0 != node } ?? false })
            else { return nil }
            s.peers[key]?.pruning.insert(tree)
            return .prune(tree: tree)
        }
        if let message { session.send(message) }
    }

    /// Whether `session` sent a live run of `tree` with no chunk pushed ahead (it counts this node among its
    /// lazy subscribers) while another connected peer also sends live runs of `tree`.
    private func hasOtherSource(of tree: SigningPublicKey, than session: Session) -> Bool {
        state.withLock { s in
            guard let p = s.peers[ObjectIdentifier(session)], p.caughtUp.contains(tree), p.pushedBytes == 0 else {
                return false
            }
            return s.peers.values.contains {
                $0.session !== session && $0.caughtUp.contains(tree) && !$0.session.isEnded
            }
        }
    }

    private func releaseRun(_ tree: SigningPublicKey, of session: Session) {
        state.withLock { s in
            s.peers[ObjectIdentifier(session)]?.queuedRuns[tree, default: 1] -= 1
            s.peers[ObjectIdentifier(session)]?.pushedBytes = 0
        }
    }

    /// A chunk frame, off the event loop: verified against its id and appended to the packs.
    private func store(chunk id: ChunkID, sealed: [UInt8]?, from session: Session, requested: Bool) {
        guard requested else {
            // What a closed session still had queued is dropped: a fetch it served has failed over already.
            guard let sealed, !session.isEnded else { return }
            do {
                if try !store.missingChunks([id]).isEmpty {
                    fetcher.pushed(try store.receiveChunk(id: id, sealed: sealed), by: session)
                    announcer.arrived([id])
                }
            } catch {
                // Checked against its id on arrival: this node could not store it. Its run fetches it again.
                logger.debug("a pushed chunk was not stored: \(error)", metadata: ["peer": "\(session)"])
            }
            return
        }
        // A copy that came first from another peer, or is being stored from one (end game, re-issue), makes this one a
        // duplicate: dropped.
        guard let sealed, fetcher.claim(id, by: session) else { return fetcher.answered(id, by: session, .notHeld) }
        do {
            let location = try store.receiveChunk(id: id, sealed: sealed)
            transfers.received(sealed.count, from: session.node)
            fetcher.answered(id, by: session, .held(location))
            announcer.arrived([id])
        } catch {
            guard case .corrupt = error else {
                // This node's failure (its disk full or failing), not the peer's: the run waiting for the chunk
                // says so (`receive`).
                return fetcher.answered(id, by: session, .localFailure(error))
            }
            logger.warning("rejected chunk \(id.hex): \(error)", metadata: ["peer": "\(session)"])
            fetcher.answered(id, by: session, .notHeld)
            // Bytes that do not match the id they were asked for: the peer is broken or hostile.
            session.close("sent a chunk whose bytes do not match its id")
        }
    }

    // MARK: Repair

    /// Asks the peers for the damaged chunks now and returns when that pass ended (`hypernet fsck`).
    public func repairNow() {
        repairQueue.sync { repairDamaged() }
    }

    private func scheduleRepair() {
        guard !repairQueued.exchange(true, ordering: .acquiringAndReleasing) else { return }
        repairQueue.async { [self] in
            repairQueued.store(false, ordering: .releasing)
            repairDamaged()
        }
    }

    /// Asks each connected peer in turn for the chunks noted damaged here, exactly as for missing ones (`want`:
    /// the copy is checked against its id and appended), until every one arrived; each arrival replaces its
    /// damaged record (docs/protocol.md, "Repair"). What no peer holds now is asked again when a peer connects.
    private func repairDamaged() {
        var wanted = store.damagedChunks
        let sessions = state.withLock { s in s.stopped ? [] : s.peers.values.map(\.session).filter { $0.node != nil } }
        for session in sessions where !wanted.isEmpty {
            let arrived = fetcher.fetch(wanted, via: session)
            do { try store.repair(Array(arrived.values)) } catch {
                logger.error("repairing damaged chunks failed: \(error)")
                return
            }
            fetcher.forget(arrived.keys)
            wanted.removeAll { arrived[$0] != nil }
        }
        if !wanted.isEmpty, !sessions.isEmpty {
            logger.warning("\(wanted.count) damaged chunk(s) not held by any connected peer: asked again at the next")
        }
    }

    // MARK: Content on demand

    /// Fetches chunks a read needs from the connected peers (`Store.fetchAbsent`), within the fetch timeout.
    private func fetchOnDemand(_ ids: [ChunkID]) -> [ChunkLocation] {
        // Stopping: no peer will send it.
        if state.withLock({ $0.stopped }) { return [] }
        let found = demand.fetch(ids) {
            state.withLock { s in s.stopped ? [] : s.peers.values.map { $0.session as any PeerLink } }
        }
        fetcher.forget(found.map(\.id))
        if found.count < ids.count {
            logger.warning(
                "\(ids.count - found.count) chunk(s) read here not sent by any reachable peer within the fetch timeout")
        }
        return found
    }

    /// Fetches, on the repair queue, the chunks still absent of trees now held in full (`pin --content all` on a
    /// tree held on demand): a full copy acks the tree's new file revisions only once it lacks nothing
    /// (docs/protocol.md, "Content on demand"). One pass at a time; what no peer sent is asked at the next.
    private func scheduleCompletion() {
        guard !completionQueued.exchange(true, ordering: .acquiringAndReleasing) else { return }
        repairQueue.async { [self] in
            completionQueued.store(false, ordering: .releasing)
            do { try store.keepFullTrees() } catch {
                return logger.error("keeping the content of a full tree: \(error)")
            }
            guard let absent = try? store.absentInFullTrees(), !absent.isEmpty else { return }
            for start in stride(from: 0, to: absent.count, by: ChunkFetcher.wantBatch) {
                do {
                    let batch = Array(absent[start..<min(start + ChunkFetcher.wantBatch, absent.count)])
                    try store.fetchAbsent(batch, caching: false)
                } catch {
                    return logger.error("fetching the content of a tree now held in full failed: \(error)")
                }
            }
        }
    }

    // MARK: Status

    public var listenAddress: String? { configuration.listen }
    /// The peers kept connected now, and at most.
    public var connections: (count: Int, maximum: Int) { (peerSet.keptCount, peerSet.maxPeers) }

    public func peerStatus() -> [PeerStatus] {
        let records = (try? store.peers()) ?? []
        let connected = state.withLock { s in
            s.peers.values.compactMap { p -> (String, PeerState)? in p.session.node.map { (Hex.encode($0.bytes), p) } }
        }.filter { peerSet.isKept($0.1.session) }
        var out: [PeerStatus] = []
        var shown = Set<String>()
        let counts = transfers.snapshot()
        for r in records {
            let live = connected.first { $0.0 == r.node || $0.1.hello?.listen == r.address }
            let node = live?.0 ?? r.node
            out.append(
                PeerStatus(
                    address: r.address, node: r.node, connected: live != nil, since: live?.1.since ?? r.lastSeen,
                    lastError: live == nil ? r.lastError : nil, bytesServed: node.flatMap { counts[$0]?.served },
                    bytesReceived: node.flatMap { counts[$0]?.received }))
            if let live { shown.insert(live.0) }
        }
        for (node, p) in connected where !shown.contains(node) {
            let listen = p.hello?.listen ?? ""
            out.append(
                PeerStatus(
                    address: listen.isEmpty ? p.session.channel.remoteAddress?.description ?? "?" : listen, node: node,
                    connected: true, since: p.since, lastError: nil, bytesServed: counts[node]?.served,
                    bytesReceived: counts[node]?.received))
        }
        return out
    }
}

/// The dialer's tick. @unchecked Sendable: a dispatch source is thread-safe (libdispatch documents every
/// call as such); the reference never changes.
private final class DialTimer: @unchecked Sendable {
    let queue = DispatchQueue(label: "hypernet.sync.dial")
    let source: DispatchSourceTimer

    init() { source = DispatchSource.makeTimerSource(queue: queue) }
}
