import ArgumentParser
import Glibc
import HypernetDaemon
import HypernetStore
import HypernetSync
import HypernetVFS
import Logging

struct Init: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create the identity, node key and store (idempotent); print the identity.")

    @OptionGroup var global: GlobalOptions
    @Option(help: "A name for the new identity, shown to contacts.") var name: String?

    func execute() throws(Failure) {
        let home = global.home
        try Home.makeDirectoryOrFail(home.path)
        let logger = bootstrapLogging(home: home)
        let keyring: Keyring
        do {
            keyring = try Keyring.loadOrCreate(directory: home.keysDirectory, name: name).keyring
        } catch {
            throw Failure(.store, "cannot create the keys in \(home.keysDirectory): \(error)")
        }
        // A running daemon owns (and has created) the store; otherwise create or check it here.
        let lock: HomeLock
        do throws(Failure) {
            lock = try HomeLock.acquire(home: home)
        } catch {
            guard error.status == .alreadyRunning else { throw error }
            print(keyring.identityToken)
            return
        }
        defer { lock.release() }
        do {
            _ = try Store(home: home, keyring: keyring, logger: logger)
        } catch {
            throw Failure(.store, "cannot open the store in \(home.storeDirectory): \(error)")
        }
        logger.info("initialized", metadata: ["home": "\(home.path)", "identity": "\(keyring.identityToken)"])
        print(keyring.identityToken)
    }
}

/// Options of a node's peer side, shared by `mount` and `serve`.
struct PeerOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Accept peers on this address.", valueName: "HOST:PORT")) var listen: String?
    @Option(help: ArgumentHelp("Connect to this node (repeatable; remembered).", valueName: "HOST:PORT")) var peer:
        [String] = []
    @Option(help: ArgumentHelp("Store and serve WHO's tree (an identity token, or '*'); repeatable.", valueName: "WHO"))
    var pin: [String] = []
    @Option(help: ArgumentHelp("Keep at most N peers connected.", valueName: "N"))
    var maxPeers = SyncConfiguration.defaultMaxPeers

    func validate() throws {
        guard (1...SyncConfiguration.maximumConnections).contains(maxPeers) else {
            throw ValidationError("--max-peers must be 1 to 256")
        }
        do {
            if let listen { _ = try PeerCommands.validAddress(listen) }
            for p in peer { _ = try PeerCommands.validAddress(p) }
            for p in pin { _ = try PeerCommands.validPin(p) }
        } catch {
            throw ValidationError(error.message)
        }
    }

    var arguments: [String] {
        (listen.map { ["--listen", $0] } ?? []) + peer.flatMap { ["--peer", $0] } + pin.flatMap { ["--pin", $0] }
            + ["--max-peers", "\(maxPeers)"]
    }
}

/// Options of a node's store, shared by `mount` and `serve`.
struct StoreOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Bound the store (packs and catalog): new writes past it fail with ENOSPC; reads go on.",
            valueName: "SIZE"))
    var maxStoreSize: String?
    @Option(
        help: ArgumentHelp(
            "Bytes of content fetched on demand kept at most (suffix K, M, G or T: powers of 1024; default 4G).",
            valueName: "SIZE"))
    var cacheSize: String?
    @Flag(help: "Keep every revision's content, whatever the retention policies or release statements would release.")
    var keepAll = false

    /// `--max-store-size` in bytes.
    var maximumBytes: Int64? { maxStoreSize.flatMap(Self.bytes) }

    /// `--cache-size` in bytes.
    var cacheBytes: Int64 { cacheSize.flatMap(Self.bytes) ?? DaemonOptions.defaultCacheSize }

    /// A whole number of bytes, with K, M, G or T for powers of 1024 (an optional B or iB after); nil if malformed.
    static func bytes(_ text: String) -> Int64? {
        var digits = Substring(text.uppercased())
        for suffix in ["IB", "B"] where digits.hasSuffix(suffix) {
            digits = digits.dropLast(suffix.count)
            break
        }
        var shift: Int64 = 0
        if let unit = digits.last, let i = "KMGT".firstIndex(of: unit) {
            shift = Int64(10 * ("KMGT".distance(from: "KMGT".startIndex, to: i) + 1))
            digits = digits.dropLast()
        }
        guard let n = Int64(digits), n >= 0, n <= Int64.max >> shift else { return nil }
        return n << shift
    }

    func validate() throws {
        guard maxStoreSize == nil || maximumBytes ?? 0 >= 1 << 20 else {
            throw ValidationError(
                "--max-store-size: not a size of 1M or more (bytes, or a number with K, M, G or T): \(maxStoreSize!)")
        }
        if let cacheSize, Self.bytes(cacheSize) == nil {
            throw ValidationError("--cache-size must be a number of bytes, optionally with K, M, G or T")
        }
    }

    var arguments: [String] {
        (maxStoreSize.map { ["--max-store-size", $0] } ?? []) + (cacheSize.map { ["--cache-size", $0] } ?? [])
            + (keepAll ? ["--keep-all"] : [])
    }
}

struct Mount: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start the node and mount its folder at MOUNTPOINT.",
        discussion: """
            Without --foreground the command returns once the mount answers, and the daemon runs on \
            (its log: HOME/hypernet.log). The mount always uses default_permissions.
            """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "An existing directory that is not a mount point.") var mountpoint: String
    @OptionGroup var peers: PeerOptions
    @OptionGroup var space: StoreOptions
    @Option(
        help:
            "Nodes that must hold a revision durably before fsync returns (default: 1 without a configured peer, else 2)."
    )
    var quorum: Int?
    @Option(
        help: ArgumentHelp("How long fsync waits for the quorum before EIO; 0 waits forever.", valueName: "SECONDS"))
    var fsyncTimeout = 30.0
    @Option(
        help: ArgumentHelp(
            "How long a read of content not held here waits for a peer to send it before EIO.", valueName: "SECONDS"))
    var fetchTimeout = 10.0
    @Option(
        name: .customShort("o"),
        help: ArgumentHelp("FUSE mount options, comma-separated (e.g. allow_other); repeatable.", valueName: "OPTS"))
    var options: [String] = []
    @Flag(help: "Run the daemon in this process until unmounted.") var foreground = false

    func validate() throws {
        if let quorum, !(1...255).contains(quorum) { throw ValidationError("--quorum must be 1 to 255") }
        guard fsyncTimeout >= 0, fsyncTimeout.isFinite else {
            throw ValidationError("--fsync-timeout must be a number of seconds, 0 or more")
        }
        guard fetchTimeout > 0, fetchTimeout <= 86400 else {
            throw ValidationError("--fetch-timeout must be a number of seconds, more than 0 and at most 86400")
        }
    }

    func execute() throws(Failure) {
        let home = global.home
        let timeout: Duration? = fsyncTimeout == 0 ? nil : .milliseconds(Int64(fsyncTimeout * 1000))
        var options = DaemonOptions(
            home: home, mountpoint: Paths.absolute(mountpoint),
            configuration: VFSConfiguration(quorum: quorum ?? 1, fsyncTimeout: timeout), quorumGiven: quorum != nil,
            fuseOptions: fuseOptions, listen: peers.listen, peers: peers.peer, pins: peers.pin,
            maxPeers: peers.maxPeers, maxStoreSize: space.maximumBytes)
        options.fetchTimeout = fetchTimeout
        options.cacheSize = space.cacheBytes
        options.keepAll = space.keepAll
        if foreground { return try runDaemon(options) }
        let canonical = try Mountpoint.validate(mountpoint)
        var arguments =
            ["mount", canonical, "--fsync-timeout", "\(fsyncTimeout)", "--fetch-timeout", "\(fetchTimeout)"]
            + peers.arguments + space.arguments
        if let quorum { arguments += ["--quorum", "\(quorum)"] }
        for option in fuseOptions { arguments += ["-o", option] }
        try launch(home: home, arguments)
    }

    private var fuseOptions: [String] {
        options.flatMap { $0.split(separator: ",").map(String.init) }
    }
}

struct Serve: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the node without a mount: a server that stores and relays the trees it pins.",
        discussion: "Without --foreground the command returns once the node runs (its log: HOME/hypernet.log).")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var peers: PeerOptions
    @OptionGroup var space: StoreOptions
    @Flag(help: "Run the daemon in this process until stopped.") var foreground = false

    func execute() throws(Failure) {
        var options = DaemonOptions(
            home: global.home, mountpoint: nil, configuration: VFSConfiguration(), quorumGiven: false, fuseOptions: [],
            listen: peers.listen, peers: peers.peer, pins: peers.pin, maxPeers: peers.maxPeers,
            maxStoreSize: space.maximumBytes)
        options.cacheSize = space.cacheBytes
        options.keepAll = space.keepAll
        if foreground { return try runDaemon(options) }
        try launch(home: global.home, ["serve"] + peers.arguments + space.arguments)
    }
}

/// Starts `hypernet --home HOME ARGUMENTS… --foreground` as the daemon and waits until it is ready.
private func launch(home: Home, _ arguments: [String]) throws(Failure) {
    if let pid = HomeLock.holder(home: home) {
        throw Failure(.alreadyRunning, "a daemon is already running for \(home.path) (pid \(pid))")
    }
    try Home.makeDirectoryOrFail(home.path)
    try Launcher.startDaemon(home: home, arguments: ["--home", home.path] + arguments + ["--foreground"])
}

/// Runs the daemon in this process (`--foreground`, or the process `launch` started).
private func runDaemon(_ options: DaemonOptions) throws(Failure) {
    let readiness = Readiness.fromEnvironment()
    var started: Logger?
    do throws(Failure) {
        try Home.makeDirectoryOrFail(options.home.path)
        let logger = bootstrapLogging(home: options.home, daemon: true)
        started = logger
        // Paths are absolute from here on; do not keep the caller's directory busy.
        chdir("/")
        try Daemon.run(options, readiness: readiness, logger: logger)
    } catch {
        readiness.fail(error)
        // Started by `launch`: stderr is the log, and the caller printed the message it got through the
        // pipe. Keep the log in its format instead of adding a bare stderr line.
        if readiness.launched, let logger = started {
            logger.error("daemon failed", metadata: ["reason": "\(error.message)"])
            Glibc.exit(error.status.rawValue)
        }
        throw error
    }
}

struct Unmount: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "Flush, unmount and stop the daemon serving MOUNTPOINT; returns once it has exited.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The directory the daemon of this home has mounted.") var mountpoint: String

    func execute() throws(Failure) {
        let path = Paths.absolute(mountpoint)
        try stopDaemon(home: global.home, request: ControlRequest(command: .unmount, path: path))
    }
}

struct Stop: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "Flush, unmount and stop the daemon of this home; returns once it has exited.")

    @OptionGroup var global: GlobalOptions

    func execute() throws(Failure) {
        try stopDaemon(home: global.home, request: ControlRequest(command: .stop))
    }
}

/// How long `stop`/`unmount` wait for the daemon to flush and exit.
private let stopTimeoutSeconds: UInt32 = 60

/// Sends `request` (stop or unmount) and waits for the daemon to exit: its home lock is released
/// when it does, so the wait is a blocking `flock`, not a poll.
private func stopDaemon(home: Home, request: ControlRequest) throws(Failure) {
    let pidFD = open(home.pidPath, O_RDONLY | O_CLOEXEC)
    defer { if pidFD >= 0 { close(pidFD) } }
    do {
        let client = try ControlClient(home: home)
        _ = try client.send(request, expecting: Acknowledgement.self)
    }
    guard pidFD >= 0 else { return }
    if !HomeLock.waitForRelease(openedFD: pidFD, timeoutSeconds: stopTimeoutSeconds) {
        throw Failure(
            .failure, "the daemon of \(home.path) did not exit within \(stopTimeoutSeconds) s (see \(home.logPath))")
    }
}
