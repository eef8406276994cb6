import Glibc

/// The files of one node's home directory (`--home`, `HYPERNET_HOME`, default `~/.hypernet`).
///
///     HOME/keys/          identity, node and tree keys (0700 dir, 0600 files)
///     HOME/store/         catalog.sqlite (+ -wal, -shm) and packs/NNNNNNNN.pack
///     HOME/control.sock   the daemon's control socket (0600)
///     HOME/hypernet.log   the daemon's log
///     HOME/daemon.pid     PID of the running daemon
///     HOME/contacts       petnames for identities (`Contacts`)
public struct Home: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    /// `--home`, else `HYPERNET_HOME`, else `~/.hypernet`.
    public static func resolve(_ explicit: String?) -> Home {
        if let explicit, !explicit.isEmpty { return Home(path: explicit) }
        if let env = getenv("HYPERNET_HOME"), env.pointee != 0 { return Home(path: String(cString: env)) }
        let home = getenv("HOME").map { String(cString: $0) } ?? "/root"
        return Home(path: home + "/.hypernet")
    }

    public var keysDirectory: String { path + "/keys" }
    public var storeDirectory: String { path + "/store" }
    public var catalogPath: String { storeDirectory + "/catalog.sqlite" }
    public var packsDirectory: String { storeDirectory + "/packs" }
    public var controlSocketPath: String { path + "/control.sock" }
    public var logPath: String { path + "/hypernet.log" }
    public var pidPath: String { path + "/daemon.pid" }

    /// Creates `directory` (and parents) with `mode` if missing.
    public static func makeDirectory(_ directory: String, mode: mode_t = 0o700) throws(StoreError) {
        var built = directory.hasPrefix("/") ? "" : "."
        for part in directory.split(separator: "/") {
            built += "/" + part
            if mkdir(built, mode) != 0 && errno != EEXIST {
                throw StoreError.io(path: built, errno: errno)
            }
        }
    }
}
