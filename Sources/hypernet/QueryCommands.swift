import ArgumentParser
import FoundationEssentials
import Glibc
import HypernetDaemon
import HypernetStore
import HypernetVFS

struct Status: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the running node: ids, home, mountpoint, store, open files, peers, backlog.",
        discussion: "--json prints one JSON object instead (its fields: docs/cli.md, status).")

    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print one JSON object instead of lines.") var json = false

    func execute() throws(Failure) {
        let report = try ControlClient(home: global.home).send(
            ControlRequest(command: .status), expecting: StatusReport.self)
        if json { return print(jsonLine(report)) }
        var lines = [
            "node: \(report.node)",
            "identity: \(report.identity)",
        ]
        if let name = report.name { lines.append("name: \(name)") }
        lines += [
            "home: \(report.home)",
            "mountpoint: \(report.mountpoint ?? "none (serving only)")",
            "pid: \(report.pid)",
            "store: \(report.statistics.documents) documents, \(report.statistics.revisions) revisions, "
                + "\(report.statistics.chunks) chunks, \(report.statistics.packBytes) bytes in packs",
        ]
        lines += report.filesystem
        lines.append("listen: \(report.listen ?? "none")")
        lines.append("pins: \(report.pins.isEmpty ? "none" : report.pins.joined(separator: ", "))")
        lines.append("connections: \(report.connections) of at most \(report.maxPeers)")
        lines.append(report.peers.isEmpty ? "peers: none" : "peers:")
        lines += peerLines(report.peers).map { "  " + $0 }
        lines.append("replication backlog: \(report.backlogRevisions) revisions, \(report.backlogBytes) bytes")
        let c = report.cache
        let reads = c.hits + c.misses
        lines.append(
            "cache: \(c.bytes) of \(c.bound) bytes used, \(c.keptBytes) bytes kept; hit rate "
                + (reads > 0 ? "\(c.hits * 100 / reads)%" : "none") + " (\(c.hits) hits, \(c.misses) misses); "
                + "fetched \(c.fetchedBytes) bytes, served \(c.servedBytes) bytes; "
                + "\(c.evictions) evictions (\(c.evictedBytes) bytes)")
        print(lines.joined(separator: "\n"))
    }
}

struct Log: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the history of PATH, newest first.",
        discussion: """
            Columns: revision, time (UTC), author, size in bytes, parent revisions, then markers: [merge] for a \
            revision with several parents, [deleted] for a tombstone and, when the document has several heads, \
            [visible] for the head shown and [conflict] for the others; [refused] for a revision a permission block \
            made invalid after this node stored it (an edit made after its author's right was revoked); [released] \
            for a revision whose content the retention policy released (its record stays). The author \
            is "me" for this identity, a contact's name, or the identity token.
            """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "A file or directory in the mounted folder.") var path: String
    @OptionGroup var authors: AuthorOptions

    func execute() throws(Failure) {
        let entries = try ControlClient(home: global.home).send(
            ControlRequest(command: .log, path: Paths.absolute(path)), expecting: [HistoryEntry].self)
        if authors.json { return print(jsonLine(entries)) }
        let forked = entries.filter(\.isHead).count > 1
        // The visible head comes first among the heads: the log is ordered as the winner rule orders them.
        let visible = entries.first { $0.isHead && $0.kind != "tombstone" } ?? entries.first(where: \.isHead)
        for entry in entries {
            var columns =
                [short(entry.revision), entry.time, authors.shown(entry.author, entry.authorName), "\(entry.size)"]
                + entry.parents.map(short)
            if entry.parents.count > 1 { columns.append("[merge]") }
            if entry.kind == "tombstone" { columns.append("[deleted]") }
            if forked, entry.isHead { columns.append(entry.revision == visible?.revision ? "[visible]" : "[conflict]") }
            if entry.isRefused { columns.append("[refused]") }
            if entry.isReleased { columns.append("[released]") }
            print(columns.joined(separator: "  "))
        }
    }
}

/// Revision ids as `log` prints them; `cat --rev` and `restore` accept any unique prefix.
func short(_ revision: String) -> String { String(revision.prefix(12)) }

/// How `log` and `conflicts` show authors.
struct AuthorOptions: ParsableArguments {
    @Flag(help: "Show authors by identity token, not by name.") var long = false
    @Flag(help: "Print one JSON array: each author as its token (author) and name (authorName, if any).") var json =
        false

    /// "me", the contact's name, or the token (always the token with --long).
    func shown(_ token: String, _ name: String?) -> String { long ? token : name ?? token }
}

struct Cat: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the content of PATH to stdout: the current revision, or REV.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "A file in the mounted folder.") var path: String
    @Option(help: ArgumentHelp("A revision id or unique prefix (from hypernet log).", valueName: "REV"))
    var rev: String?

    func execute() throws(Failure) {
        try readContent(home: global.home, path: Paths.absolute(path), revision: rev) { (bytes) throws(Failure) in
            try writeStandardOutput(Data(bytes))
        }
    }
}

/// Hands the content of `path` (at `revision`, else the current one) from byte `offset` to `body` in pieces as the
/// daemon reads it: content held on demand comes as it is fetched from peers.
func readContent(
    home: Home, path: String, revision: String?, offset: UInt64 = 0, _ body: ([UInt8]) throws(Failure) -> Void
) throws(Failure) {
    let client = try ControlClient(home: home)
    _ = try client.send(
        ControlRequest(command: .cat, path: path, revision: revision, offset: Int(offset)),
        expecting: Acknowledgement.self)
    var failure: Failure?
    try client.streamLines { line in
        do throws(Failure) {
            guard let piece = try? JSONDecoder().decode(ContentLine.self, from: Data(line)) else {
                throw Failure(.failure, "malformed content from the daemon")
            }
            if let error = piece.error {
                throw Failure(piece.code.flatMap(ExitStatus.init(rawValue:)) ?? .failure, error)
            }
            if let content = piece.content {
                guard let bytes = Data(base64Encoded: content) else {
                    throw Failure(.failure, "malformed content from the daemon")
                }
                try body(Array(bytes))
            }
            return piece.end != true
        } catch {
            failure = error
            return false
        }
    }
    if let failure { throw failure }
}

struct Restore: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make REV's content of PATH current, as a new revision; print the new revision id.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "A file in the mounted folder.") var path: String
    @Argument(help: "A revision id or unique prefix (from hypernet log).") var rev: String

    func execute() throws(Failure) {
        let reply = try ControlClient(home: global.home).send(
            ControlRequest(command: .restore, path: Paths.absolute(path), revision: rev),
            expecting: RestoreReply.self)
        print(reply.revision)
    }
}

struct Fsck: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check the store: every catalog row against the packs, every pack record against its id.",
        discussion: """
            Asks the running daemon, or opens the store directly when none runs. Reports problems, \
            never deletes. Exits 7 when it finds any.
            """)

    @OptionGroup var global: GlobalOptions

    func execute() throws(Failure) {
        let home = global.home
        let problems: [String]
        if let report = try checkThroughDaemon(home) {
            for line in report.repaired ?? [] { print(line) }
            problems = report.problems
        } else {
            problems = try checkDirectly(home)
        }
        for problem in problems { print(problem) }
        guard problems.isEmpty else {
            throw Failure(.store, "\(problems.count) problem\(problems.count == 1 ? "" : "s") found in \(home.path)")
        }
        print("store is consistent")
    }

    /// nil when no daemon runs for `home`.
    private func checkThroughDaemon(_ home: Home) throws(Failure) -> FsckReport? {
        guard HomeLock.holder(home: home) != nil else { return nil }
        return try ControlClient(home: home).send(ControlRequest(command: .fsck), expecting: FsckReport.self)
    }

    private func checkDirectly(_ home: Home) throws(Failure) -> [String] {
        try withStoreDirectly(home, failing: "cannot open the store in \(home.path)") { store in
            store.check() + SearchIndexer.check(home: home)
        }
    }
}

/// Runs `body` on the store of `home` opened by this process (no daemon runs): holding the home lock keeps a daemon
/// from starting on it meanwhile. A failure is `failing: ERROR`.
func withStoreDirectly<T>(_ home: Home, failing: String, _ body: (Store) throws -> T) throws(Failure) -> T {
    guard access(home.catalogPath, F_OK) == 0 else {
        throw Failure(.store, "no store in \(home.path) (run: hypernet init)")
    }
    let lock = try HomeLock.acquire(home: home)
    defer { lock.release() }
    let logger = bootstrapLogging(home: home)
    do {
        let keyring = try Keyring.load(directory: home.keysDirectory)
        return try body(try Store(home: home, keyring: keyring, logger: logger))
    } catch {
        throw Failure(.store, "\(failing): \(error)")
    }
}

func writeStandardOutput(_ data: Data) throws(Failure) {
    let ok = data.withUnsafeBytes { buffer in
        var done = 0
        while done < buffer.count {
            let n = write(STDOUT_FILENO, buffer.baseAddress! + done, buffer.count - done)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            done += n
        }
        return true
    }
    if !ok { throw Failure(.failure, "writing to stdout: \(Failure.errnoText(errno))") }
}
