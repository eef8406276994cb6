import Glibc

/// The files of one node's home directory (`--home`, `HYPERNET_HOME`, default `~/.hypernet`).
///
///     HOME/keys/          identity, node and tree keys (0700 dir, 0600 files)
///     HOME/store/         catalog.sqlite (+ -wal, -shm), packs/NNNNNNNN.pack and reserve (0700 dirs, 0600 files)
///     HOME/control.sock   the daemon's control socket (0600)
///     HOME/hypernet.log   the daemon's log (0600)
///     HOME/daemon.pid     PID of the running daemon (0600)
///     HOME/contacts       petnames for identities (`Contacts`, 0600)
///     HOME/search.sqlite  the local search index (+ -wal, -shm; 0600): derived, dropped and rebuilt at will
///
/// HOME itself is 0700. Every file is created with an explicit mode, whatever the umask.
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
    /// Space kept free for deletes on a full disk (`Store.reclaimSpace`, docs/store-format.md "Layout").
    public var reservePath: String { storeDirectory + "/reserve" }
    public var controlSocketPath: String { path + "/control.sock" }
    /// Outside `store/`: it holds in plaintext what this identity reads of other identities' trees (security.md).
    public var searchIndexPath: String { path + "/search.sqlite" }
    public var logPath: String { path + "/hypernet.log" }
    public var pidPath: String { path + "/daemon.pid" }

    /// Takes the group and other permission bits away from the home, its own files (log, pid, contacts) and
    /// everything in `store/` (symlinks are left alone; `keys/` is the `Keyring`'s, which refuses a key others can
    /// read). A home made by an older version, whose catalog was 0644, is private again before it is opened.
    /// Returns the paths changed.
    public func makePrivate() throws(StoreError) -> [String] {
        var changed: [String] = []
        var pending = [path, logPath, pidPath, path + "/" + Contacts.file, storeDirectory]
        while let current = pending.popLast() {
            var st = stat()
            if lstat(current, &st) != 0 {
                if errno == ENOENT { continue }
                throw .io(path: current, errno: errno)
            }
            let isDirectory = st.st_mode & S_IFMT == S_IFDIR
            guard isDirectory || st.st_mode & S_IFMT == S_IFREG else { continue }
            if st.st_mode & 0o077 != 0 {
                guard chmod(current, st.st_mode & 0o700) == 0 else { throw .io(path: current, errno: errno) }
                changed.append(current)
            }
            // The home's own directory is not walked: only the files above are Hypernet's.
            guard isDirectory, current != path else { continue }
            guard let directory = opendir(current) else { throw .io(path: current, errno: errno) }
            defer { closedir(directory) }
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) {
                    String(cString: $0.bindMemory(to: CChar.self).baseAddress!)
                }
                if name != ".", name != ".." { pending.append(current + "/" + name) }
            }
        }
        return changed
    }

    /// Creates `directory` (and parents) with `mode` if missing; returns the directories it created.
    @discardableResult
    public static func makeDirectory(_ directory: String, mode: mode_t = 0o700) throws(StoreError) -> [String] {
        var built = directory.hasPrefix("/") ? "" : "."
        var created: [String] = []
        for part in directory.split(separator: "/") {
            built += "/" + part
            if mkdir(built, mode) == 0 {
                created.append(built)
            } else if errno != EEXIST {
                throw StoreError.io(path: built, errno: errno)
            }
        }
        return created
    }
}
