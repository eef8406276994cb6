import Dispatch
import Glibc
import HypernetFUSE
import HypernetStore
import HypernetVFS
import Logging
import Synchronization

/// What `hypernet mount --foreground` runs with.
public struct DaemonOptions: Sendable {
    public var home: Home
    /// As given; validated and made canonical at start.
    public var mountpoint: String
    public var configuration: VFSConfiguration
    /// `-o` options for FUSE, split at commas (`default_permissions` is always added by the mount).
    public var fuseOptions: [String]

    public init(home: Home, mountpoint: String, configuration: VFSConfiguration, fuseOptions: [String]) {
        self.home = home
        self.mountpoint = mountpoint
        self.configuration = configuration
        self.fuseOptions = fuseOptions
    }
}

/// The composition root: one node with one mount, in this process, until it is unmounted.
public enum Daemon {
    /// Locks the home, opens keyring, store and filesystem, mounts, serves the control socket and
    /// runs the FUSE loop; returns after the mount is gone and everything is flushed. `readiness`
    /// learns when the mount answers. Throws a `Failure` for anything that stops the start.
    public static func run(_ options: DaemonOptions, readiness: Readiness, logger: Logger) throws(Failure) {
        let home = options.home
        try Home.makeDirectoryOrFail(home.path)
        let lock = try HomeLock.acquire(home: home)
        defer { lock.release() }
        try lock.writePid()
        // Everything the daemon creates in the home is private to its owner.
        umask(0o077)
        let mountpoint = try Mountpoint.validate(options.mountpoint)
        // Bound before any other thread exists: the server sets the process umask around bind.
        let server = try ControlServer(path: home.controlSocketPath, logger: logger)
        defer { server.stop() }
        // Signals are caught from here on, so one that comes before the mount exists cancels it
        // instead of killing a half-started daemon.
        let stopSwitch = StopSwitch()
        let signals = installSignalHandlers(logger: logger) { stopSwitch.request() }
        defer { for source in signals { source.cancel() } }

        logger.info(
            "daemon starting",
            metadata: ["pid": "\(getpid())", "home": "\(home.path)", "mountpoint": "\(mountpoint)"])
        let keyring: Keyring
        let store: Store
        let fileSystem: VirtualFileSystem
        do {
            keyring = try Keyring.loadOrCreate(directory: home.keysDirectory, name: nil).keyring
            store = try Store(home: home, keyring: keyring, logger: logger)
            fileSystem = try VirtualFileSystem(store: store, configuration: options.configuration, logger: logger)
        } catch {
            throw Failure(.store, "cannot open the store in \(home.path): \(error)")
        }
        let mount = FUSEMount(
            fileSystem: fileSystem, mountpoint: mountpoint, options: options.fuseOptions, logger: logger)
        do throws(FUSEError) {
            guard stopSwitch.attach(mount) else { throw FUSEError("stopped by a signal while starting") }
            try mount.mount()
        } catch {
            fileSystem.shutdown()
            throw Failure(.mountpoint, error.message)
        }

        let controller = Controller(
            home: home, mountpoint: mountpoint, keyring: keyring, store: store, fileSystem: fileSystem,
            logger: logger, requestExit: { mount.requestExit() })
        server.start(handler: controller.handle)

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
        server.stop()
        fileSystem.shutdown()
        logger.info("daemon stopped")
        if let loopError {
            throw Failure(.failure, loopError.message)
        }
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

/// Where a stop request (a signal) goes: to the mount once it exists, else remembered so that the
/// mount is never made.
private final class StopSwitch: Sendable {
    private let state = Mutex<(requested: Bool, mount: FUSEMount?)>((false, nil))

    func request() {
        let mount = state.withLock { state in
            state.requested = true
            return state.mount
        }
        mount?.requestExit()
    }

    /// Routes later requests to `mount`; false if a stop was already requested.
    func attach(_ mount: FUSEMount) -> Bool {
        state.withLock { state in
            state.mount = mount
            return !state.requested
        }
    }
}

extension Home {
    /// Creates the home (0700) if missing, as a `Failure` for the CLI.
    public static func makeDirectoryOrFail(_ path: String) throws(Failure) {
        do {
            try Home.makeDirectory(path)
        } catch {
            throw Failure(.store, "cannot create \(path): \(error)")
        }
    }
}
