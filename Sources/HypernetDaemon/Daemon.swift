import CLinux
import Dispatch
import Glibc
import HypernetCrypto
import HypernetFUSE
import HypernetFailpoint
import HypernetModel
import HypernetStore
import HypernetSync
import HypernetVFS
import Logging
import Synchronization

/// What `hypernet mount --foreground` and `hypernet serve --foreground` run with.
public struct DaemonOptions: Sendable {
    public var home: Home
    /// As given; validated and made canonical at start. nil: serve without a mount.
    public var mountpoint: String?
    /// The quorum is `configuration.quorum` if `quorumGiven`, else 1 with no configured peer and 2 with one.
    public var configuration: VFSConfiguration
    public var quorumGiven: Bool
    /// `-o` options for FUSE, split at commas (`default_permissions` is always added by the mount).
    public var fuseOptions: [String]
    public var listen: String?
    public var peers: [String]
    /// Identity tokens or `*`, added to the node's pins.
    public var pins: [String]
    public var maxPeers: Int
    /// `--max-store-size` in bytes (`Store.limitSize`).
    public var maxStoreSize: Int64?
    /// Seconds a read of content not held here waits for a peer to send it (`--fetch-timeout`).
    public var fetchTimeout: Double = 10
    /// Bytes of content fetched on demand kept at most (`--cache-size`).
    public var cacheSize: Int64 = DaemonOptions.defaultCacheSize
    public static let defaultCacheSize: Int64 = 4 << 30
    /// Keep every revision's content, whatever the retention policies release (`--keep-all`).
    public var keepAll = false

    public init(
        home: Home, mountpoint: String?, configuration: VFSConfiguration, quorumGiven: Bool, fuseOptions: [String],
        listen: String?, peers: [String], pins: [String], maxPeers: Int = SyncConfiguration.defaultMaxPeers,
        maxStoreSize: Int64? = nil
    ) {
        self.home = home
        self.mountpoint = mountpoint
        self.configuration = configuration
        self.quorumGiven = quorumGiven
        self.fuseOptions = fuseOptions
        self.listen = listen
        self.peers = peers
        self.pins = pins
        self.maxPeers = maxPeers
        self.maxStoreSize = maxStoreSize
    }
}

/// The composition root: one node with one mount, in this process, until it is unmounted.
public enum Daemon {
    /// Locks the home, opens keyring, store and filesystem, starts the peer node, mounts (unless serving
    /// only), serves the control socket and runs until unmounted or stopped; returns after everything is
    /// flushed. `readiness` learns when the node (and its mount) answers. Throws a `Failure` for anything
    /// that stops the start.
    public static func run(_ options: DaemonOptions, readiness: Readiness, logger: Logger) throws(Failure) {
        // glibc gives each busy thread its own arena, up to 8 per core, and an arena keeps what it once held: the
        // daemon's many short-lived worker threads took its peak RSS from 137 to 206 MiB on an untar (BENCHMARKS.md).
        _ = CLinux_limit_malloc_arenas(Int32(max(2, sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
        let home = options.home
        try Home.makeDirectoryOrFail(home.path)
        let lock = try HomeLock.acquire(home: home)
        defer { lock.releaseAtExit() }
        try lock.writePid()
        // Everything the daemon creates in the home is private to its owner.
        umask(0o077)
        let mountpoint = try options.mountpoint.map { (m) throws(Failure) in try Mountpoint.validate(m) }
        // Bound before any other thread exists: the server sets the process umask around bind.
        let server = try ControlServer(path: home.controlSocketPath, logger: logger)
        defer { server.stop() }
        // Signals are caught from here on, so one that comes before the mount exists cancels it
        // instead of killing a half-started daemon.
        let stopSwitch = StopSwitch()
        let signals = installSignalHandlers(logger: logger) {
            readiness.stopping()
            stopSwitch.request()
        }
        defer { for source in signals { source.cancel() } }

        logger.info(
            "daemon starting",
            metadata: ["pid": "\(getpid())", "home": "\(home.path)", "mountpoint": "\(mountpoint ?? "none")"])
        switch Failpoint.arm() {
        case .success(let armed):
            if !armed.isEmpty { logger.warning("test build: failpoints armed", metadata: ["failpoints": "\(armed)"]) }
        case .failure(let error):
            throw Failure(.usage, "HYPERNET_FAILPOINT: \(error.message)")
        }
        let keyring: Keyring
        let store: Store
        do {
            keyring = try Keyring.loadOrCreate(directory: home.keysDirectory, name: nil).keyring
            store = try Store(home: home, keyring: keyring, logger: logger)
            store.reclaimSpace()
            store.limitSize(to: options.maxStoreSize)
            for pin in options.pins { try store.setPinned(pin, true) }
            try store.setCacheBound(options.cacheSize)
        } catch {
            throw Failure(.store, "cannot open the store in \(home.path): \(error)")
        }
        var configuration = options.configuration
        if !options.quorumGiven {
            let configured = !options.peers.isEmpty || ((try? store.peers()) ?? []).contains(where: \.configured)
            configuration.quorum = configured ? 2 : 1
        }

        let fileSystem: VirtualFileSystem?
        let mount: FUSEMount?
        let indexer: SearchIndexer?
        if let mountpoint {
            let vfs: VirtualFileSystem
            do { vfs = try VirtualFileSystem(store: store, configuration: configuration, logger: logger) } catch {
                throw Failure(.store, "cannot open the store in \(home.path): \(error)")
            }
            let fuse = FUSEMount(fileSystem: vfs, mountpoint: mountpoint, options: options.fuseOptions, logger: logger)
            let search: SearchIndexer
            do {
                search = try SearchIndexer(
                    home: home, mountpoint: mountpoint, store: store, fileSystem: vfs, logger: logger)
            } catch {
                vfs.shutdown()
                throw Failure(.store, "cannot open the search index \(home.searchIndexPath): \(error)")
            }
            // Before the node starts: every revision it receives from here on is shown (the filesystem's
            // start showed those received earlier).
            vfs.setKernelCache(fuse)
            showReceived(store: store, in: vfs, indexer: search)
            vfs.setSearchProvider { query in search.matches(query) }
            // What was stored before this start and is not indexed yet (all of it for a new or damaged index).
            search.wake()
            do throws(FUSEError) {
                guard stopSwitch.attach({ fuse.requestExit() }) else {
                    throw FUSEError("stopped by a signal while starting")
                }
                try fuse.mount()
            } catch {
                search.stop()
                vfs.shutdown()
                throw Failure(.mountpoint, error.message)
            }
            (fileSystem, mount, indexer) = (vfs, fuse, search)
        } else {
            (fileSystem, mount, indexer) = (nil, nil, nil)
        }

        let node = SyncNode(
            store: store, nodeKey: keyring.node,
            configuration: SyncConfiguration(
                listen: options.listen, peers: options.peers, software: "hypernet/\(version)",
                maxPeers: options.maxPeers, fetchTimeout: options.fetchTimeout,
                queryScanner: { [store] query, target in RemoteScan(store: store, query: query, target: target) },
                peerConnected: { fileSystem?.peerConnected() }),
            logger: logger)
        do { try node.start() } catch {
            node.stop()
            indexer?.stop()
            mount?.requestExit()
            fileSystem?.shutdown()
            throw Failure(.usage, "cannot start the peer node: \(error)")
        }
        defer {
            node.stop()
            store.finishReplicaRows()
        }

        let stopped = DispatchSemaphore(value: 0)
        let requestExit: @Sendable () -> Void = { if let mount { mount.requestExit() } else { stopped.signal() } }
        if mount == nil, !stopSwitch.attach(requestExit) { return }
        let controller = Controller(
            home: home, mountpoint: mountpoint, keyring: keyring, store: store, fileSystem: fileSystem,
            indexer: indexer, node: node, quorum: configuration.quorum, keepAll: options.keepAll, logger: logger,
            requestExit: requestExit)
        server.start(handler: controller.handle)
        let collector = collectInBackground(
            store, retention: { controller.retention() }, statements: controller.appliesStatements, logger: logger)
        defer { collector.cancel() }
        // `/.hypernet/status`: the node's lines after the filesystem's.
        fileSystem?.setStatusProvider {
            let peers = node.peerStatus()
            return [
                "node: \(Hex.encode(keyring.node.publicKey.bytes))", "identity: \(keyring.identityToken)",
                "listen: \(node.listenAddress ?? "none")",
                "peers: \(peers.filter(\.connected).count) of \(peers.count) connected",
            ]
        }

        guard let mount, let mountpoint else {
            logger.info("serving", metadata: ["listen": "\(options.listen ?? "none")"])
            readiness.ready()
            // Without a mount's once-a-second pass, the WAL is checkpointed here.
            while stopped.wait(timeout: .now() + 1) == .timedOut { store.checkpointIfNeeded() }
            readiness.stopping()
            store.stopGarbageCollection()
            store.checkpointAtStop()
            logger.info("daemon stopped")
            return
        }
        // The loop below answers this stat; until it does the mount is not ready for the caller.
        DispatchQueue.global().async {
            var info = stat()
            if stat(mountpoint, &info) == 0 {
                logger.info("mount ready", metadata: ["mountpoint": "\(mountpoint)"])
                readiness.ready()
            } else {
                let failure = Failure.system("the new mount at \(mountpoint) does not answer", status: .mountpoint)
                logger.error("mount does not answer", metadata: ["errno": "\(errno)"])
                readiness.fail(failure)
                mount.requestExit()
            }
        }

        let loopError: FUSEError?
        do {
            try mount.run()
            loopError = nil
        } catch {
            loopError = error
        }
        logger.info("unmounted; stopping", metadata: ["mountpoint": "\(mountpoint)"])
        readiness.stopping()
        server.stop()
        indexer?.stop()
        fileSystem?.shutdown()
        store.stopGarbageCollection()
        store.checkpointAtStop()
        logger.info("daemon stopped")
        if let loopError {
            throw Failure(.failure, loopError.message)
        }
    }

    /// Revisions of this identity's tree received from peers appear in the mount, applied in arrival order
    /// off the replication threads; then every new revision, local or received, of any tree, goes to event
    /// readers (which leave out what this identity cannot read) and to the search index, which also learns of
    /// permission blocks (a revoke removes what it made unreadable).
    private static func showReceived(store: Store, in fileSystem: VirtualFileSystem, indexer: SearchIndexer) {
        let own = store.keyring.identity.publicKey
        let queue = DispatchQueue(label: "hypernet.apply")
        store.observeRevisions { added in
            let revisions = added.filter { !$0.isBlock && !$0.isStatement }
            let blocks = Array(Set(added.filter(\.isBlock).map(\.tree)))
            let documents = revisions.filter { $0.tree == own && !$0.isLocal }.map(\.document)
            queue.async {
                if !documents.isEmpty { fileSystem.applyRemote(documents) }
                fileSystem.wakeKeeper(for: Set(revisions.map(\.tree)).subtracting([own]))
                // After they show, so that their events and index entries carry their paths.
                if !revisions.isEmpty { fileSystem.publishEvents() }
                indexer.wake(rightsChanged: blocks)
            }
        }
        store.observeRepairs { queue.async { fileSystem.applyRepaired() } }
    }

    /// Every `Store.collectionInterval` a throttled garbage collection pass (docs/store-format.md, "Compaction"),
    /// releasing what the retention policies `retention` gives then no longer keep, or, `statements`, what the
    /// trees' owners' release statements say.
    private static func collectInBackground(
        _ store: Store, retention: @escaping @Sendable () -> (rules: Store.RetentionRules, now: UInt64)?,
        statements: Bool, logger: Logger
    ) -> any DispatchSourceTimer {
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "hypernet.gc", qos: .background))
        timer.schedule(deadline: .now() + Store.collectionInterval, repeating: Store.collectionInterval)
        timer.setEventHandler {
            do { _ = try store.collectGarbage(throttled: true, retention: retention(), statements: statements) } catch {
                logger.error("background garbage collection failed: \(error)")
            }
        }
        timer.resume()
        return timer
    }

    /// SIGTERM, SIGINT and SIGHUP end the FUSE loop (then the usual shutdown runs); SIGPIPE is
    /// ignored so a vanished control client is an error return, not a death.
    private static func installSignalHandlers(
        logger: Logger, _ requestExit: @escaping @Sendable () -> Void
    ) -> [any DispatchSourceSignal] {
        signal(SIGPIPE, SIG_IGN)
        let queue = DispatchQueue(label: "hypernet.signals")
        return [SIGTERM, SIGINT, SIGHUP].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler {
                logger.info("signal received; unmounting", metadata: ["signal": "\(number)"])
                requestExit()
            }
            source.resume()
            return source
        }
    }
}

/// Where a stop request (a signal) goes: to the mount (or the serving loop) once it exists, else
/// remembered so that the mount is never made.
private final class StopSwitch: Sendable {
    private let state = Mutex<(requested: Bool, stop: (@Sendable () -> Void)?)>((false, nil))

    func request() {
        let stop = state.withLock { state in
            state.requested = true
            return state.stop
        }
        stop?()
    }

    /// Routes later requests to `stop`; false if a stop was already requested.
    func attach(_ stop: @escaping @Sendable () -> Void) -> Bool {
        state.withLock { state in
            state.stop = stop
            return !state.requested
        }
    }
}

/// The version this build reports to peers.
public let version = "0.3"

extension Home {
    /// Creates the home (0700, and missing parents) if missing, as a `Failure` for the CLI.
    public static func makeDirectoryOrFail(_ path: String) throws(Failure) {
        let created: [String]
        do {
            created = try Home.makeDirectory(path)
        } catch {
            throw Failure(.store, "cannot create \(path): \(error)")
        }
        // Said on stderr (stdout is for scripts): a mistyped --home must not go unnoticed.
        for directory in created {
            _ = UnixSocket.writeAll(STDERR_FILENO, Array("hypernet: created \(directory)\n".utf8), isSocket: false)
        }
    }
}
