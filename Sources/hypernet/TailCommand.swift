import ArgumentParser
import FoundationEssentials
import Glibc
import HypernetDaemon
import HypernetModel
import HypernetScan
import HypernetStore
import HypernetVFS

struct Tail: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the last lines of the files at or below PATH…; with -f, the lines appended to them after.",
        discussion: """
            The files of each directory PATH are taken recursively, and with -f new files that appear below it \
            join (from their first line). Lines are printed in the order this node stored the revisions that \
            added them (made here or received from a peer; each file's in commit order), only once complete: a \
            partial last line waits for its newline. Several files, or a directory: each line as PATH:LINE. A file \
            truncated or rewritten is read again from its start, after "hypernet: PATH: file truncated" (or \
            "rewritten") on stderr. If the daemon restarts or the stream overflows, tail reconnects and goes on \
            from where it was: no line is lost or printed twice. --cursor FILE keeps that position across runs \
            of tail too (docs/cli.md, "tail").
            """)

    @OptionGroup var global: GlobalOptions
    @Option(name: .customShort("n"), help: ArgumentHelp("Print the last N lines of each file first.", valueName: "N"))
    var lines = 10
    @Flag(name: .customShort("f"), help: "Follow: print lines as they are appended, until interrupted.")
    var follow = false
    @Option(
        help: ArgumentHelp(
            "Print only the lines PATTERN matches (GNU grep's default dialect: docs/grep.md).", valueName: "PATTERN"))
    var grep: String?
    @Option(help: ArgumentHelp("Resume from the position kept in FILE, and keep it there.", valueName: "FILE"))
    var cursor: String?
    @Flag(help: "One JSON object per line: path, line, time, cursor.") var json = false
    @Argument(help: "Files or directories in the mounted folder.") var paths: [String]

    func validate() throws {
        guard lines >= 0 else { throw ValidationError("-n must be 0 or more") }
    }

    func execute() throws(Failure) {
        var filter: LinePattern?
        if let grep {
            do { filter = try LinePattern(pattern: grep) } catch { throw Failure(.usage, "bad pattern: \(error)") }
        }
        var tail = try Follower(
            home: global.home, paths: paths.map(Paths.absolute), json: json, pattern: grep, filter: filter,
            cursorFile: cursor.map(Paths.absolute))
        if !tail.resumed { try tail.printLast(lines) }
        guard follow else { return }
        try tail.follow()
    }
}

/// The position of a `tail`: the last log position whose event it handled, and a cursor per file it printed.
struct TailPosition: Codable {
    var seq: Int64
    /// By document id.
    var files: [String: TailCursor]
}

/// One line of `tail --json`.
struct TailLine: Codable {
    var path: String
    var line: String
    var time: String
    var cursor: TailCursor
}

/// The state of one `tail`: where it is, where the mount is, how it prints.
struct Follower {
    let home: Home
    let paths: [String]
    let json: Bool
    /// `--grep`: only the lines it matches are printed; `pattern` is its text, for the peers that scan.
    let pattern: String?
    let filter: LinePattern?
    let cursorFile: String?
    let mountpoint: String
    /// Lines are prefixed with their file's path (several files, or a directory).
    let prefixed: Bool
    var position: TailPosition
    /// The position came from the cursor file: the last lines were printed by an earlier run.
    let resumed: Bool
    /// The revisions each file listed first had when it was read: their events are no news.
    var seen: [String: Set<String>] = [:]

    init(
        home: Home, paths: [String], json: Bool, pattern: String?, filter: LinePattern?, cursorFile: String?
    ) throws(Failure) {
        self.home = home
        self.paths = paths
        self.json = json
        self.pattern = pattern
        self.filter = filter
        self.cursorFile = cursorFile
        let status = try ControlClient(home: home).send(ControlRequest(command: .status), expecting: StatusReport.self)
        guard let mountpoint = status.mountpoint else {
            throw Failure(.notHypernetPath, "this node serves without a mount (hypernet serve)")
        }
        self.mountpoint = mountpoint
        var isDirectory = false
        for path in paths {
            var st = stat()
            if stat(Paths.cString(path), &st) == 0, st.st_mode & mode_t(S_IFMT) == mode_t(S_IFDIR) {
                isDirectory = true
            }
        }
        prefixed = paths.count > 1 || isDirectory
        if let cursorFile, let data = try? Data(contentsOf: URL(fileURLWithPath: cursorFile)) {
            guard let saved = try? JSONDecoder().decode(TailPosition.self, from: data) else {
                throw Failure(.failure, "\(cursorFile): not a tail cursor")
            }
            position = saved
            resumed = true
        } else {
            position = TailPosition(seq: status.logPosition ?? 0, files: [:])
            resumed = false
        }
    }

    /// Prints the last `count` lines of every file, the files in the order of their current revisions' times.
    mutating func printLast(_ count: Int) throws(Failure) {
        var files: [String] = []
        for path in paths { try Self.walk(path, mountpoint: mountpoint) { files.append($0) } }
        var found: [(time: String, path: String, cursor: TailCursor, lines: [ArraySlice<UInt8>])] = []
        for file in files { found += try last(count, of: file) }
        found.sort { $0.time < $1.time }
        try Self.atomically { () throws(Failure) in
            for f in found {
                try output(f.lines, path: f.path, time: f.time, cursor: f.cursor)
                position.files[f.cursor.document] = f.cursor
            }
            try save()
        }
    }

    /// The regular files at or below `path`, through the mount (the virtual `/.hypernet` left out).
    private static func walk(_ path: String, mountpoint: String, _ body: (String) -> Void) throws(Failure) {
        var st = stat()
        guard lstat(Paths.cString(path), &st) == 0 else { throw Self.failed(path) }
        if st.st_mode & mode_t(S_IFMT) == mode_t(S_IFREG) { return body(path) }
        guard st.st_mode & mode_t(S_IFMT) == mode_t(S_IFDIR) else { return }
        guard let dir = opendir(Paths.cString(path)) else { throw Self.failed(path) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                Paths.string(raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." && !(path == mountpoint && name == ".hypernet") { names.append(name) }
        }
        closedir(dir)
        for name in names.sorted() { try walk((path == "/" ? "" : path) + "/" + name, mountpoint: mountpoint, body) }
    }

    /// The last `count` lines of the file at `path` (its current revision), read from its end.
    private mutating func last(_ count: Int, of path: String) throws(Failure) -> [(
        time: String, path: String, cursor: TailCursor, lines: [ArraySlice<UInt8>]
    )] {
        let history = try ControlClient(home: home).send(
            ControlRequest(command: .log, path: path), expecting: [HistoryEntry].self)
        guard let head = history.first(where: { $0.isHead && $0.kind == "file" }) else { return [] }
        let document = try RightsChange.get("user.hypernet.id", path: path).trimmingCharacters(
            in: .whitespacesAndNewlines)
        seen[document] = Set(history.map(\.revision))
        var back: UInt64 = 64 << 10
        while true {
            let start = head.size > back ? head.size - back : 0
            let bytes = try content(of: path, revision: head.revision, from: start)
            if let found = TailCursor.last(
                count, document: document, revision: head.revision, bytes: bytes, from: start)
            {
                return [(head.time, path, found.cursor, found.lines)]
            }
            back *= 4
        }
    }

    private func content(of path: String, revision: String, from start: UInt64) throws(Failure) -> [UInt8] {
        var bytes: [UInt8] = []
        try readContent(home: home, path: path, revision: revision, offset: start) { bytes += $0 }
        return bytes
    }

    /// Prints the lines appended from now on (from the saved position with --cursor), reconnecting whenever the
    /// daemon's stream ends, until interrupted.
    mutating func follow() throws(Failure) {
        var waiting = false
        while true {
            do throws(Failure) {
                let client = try ControlClient(home: home)
                _ = try client.send(
                    ControlRequest(command: .watch, paths: paths, since: position.seq), expecting: Acknowledgement.self)
                waiting = false
                var failure: Failure?
                try client.streamLines { line in
                    do throws(Failure) { return try handle(line) } catch {
                        failure = error
                        return false
                    }
                }
                if let failure { throw failure }
            } catch {
                // The daemon is restarting, or a read failed: try again from the same position.
                guard error.status == .noDaemon || error.status == .store else { throw error }
                if !waiting { writeStandardError("hypernet: \(error.message); waiting") }
                waiting = true
                usleep(500_000)
            }
        }
    }

    /// One event line: prints what its revision added to its file. False: start the stream again (overflow).
    private mutating func handle(_ line: [UInt8]) throws(Failure) -> Bool {
        guard let event = try? JSONDecoder().decode(TailEvent.self, from: Data(line)) else {
            throw Failure(.failure, "malformed event from the daemon")
        }
        // Events were lost: reconnecting replays them from the position.
        guard event.event == "revision" else { return false }
        guard event.kind == "file", let relative = event.path, let seq = event.seq, let revision = event.rev,
            let document = event.document, seen[document]?.contains(revision) != true
        else {
            if let seq = event.seq { position.seq = max(position.seq, seq) }
            return true
        }
        let path = (mountpoint == "/" ? "" : mountpoint) + relative
        var cursor = position.files[document] ?? TailCursor(document: document)
        var step = try scanned(path: path, revision: revision, size: event.size ?? 0, cursor: &cursor)
        if step == nil {
            let start = cursor.start(forSize: event.size ?? 0)
            step = cursor.advance(
                revision: revision, bytes: try content(of: path, revision: revision, from: start), from: start)
        }
        if step == nil {
            // The bytes before the cursor changed: the whole revision is read.
            step = cursor.advance(
                revision: revision, bytes: try content(of: path, revision: revision, from: 0), from: 0)
        }
        guard let step else { return true }
        try Self.atomically { () throws(Failure) in
            if let change = step.change { writeStandardError("hypernet: \(path): file \(change.rawValue)") }
            try output(step.lines, path: path, time: event.time ?? "", cursor: cursor)
            position.files[document] = cursor
            position.seq = max(position.seq, seq)
            try save()
        }
        return true
    }

    /// The lines `revision` of the file adds after `cursor`, when a peer holds its content and this node does not:
    /// the peer scans it and sends only the complete lines after the cursor that `--grep` selects (docs/grep.md,
    /// "hypernet tail"). nil when the content is held here: read it. A file shorter than the cursor is scanned from
    /// its start ("truncated"); a rewrite that leaves it as long is taken for an append (the bytes before the cursor
    /// do not come over to be checked).
    private func scanned(path: String, revision: String, size: UInt64, cursor: inout TailCursor) throws(Failure) -> (
        lines: [ArraySlice<UInt8>], change: TailCursor.Change?
    )? {
        let change: TailCursor.Change? = size < cursor.offset ? .truncated : nil
        let start = change == nil ? cursor.offset : 0
        let client = try ControlClient(home: home)
        _ = try client.send(
            ControlRequest(
                command: .grep, path: path, revision: revision, offset: Int(start),
                scan: ScanQuery(pattern: pattern ?? "", output: .tail)),
            expecting: Acknowledgement.self)
        var lines: [ArraySlice<UInt8>] = []
        var done: ScanLine.Progress?
        var failure: Failure?
        try client.streamLines { line in
            guard let scanned = try? JSONDecoder().decode(ScanLine.self, from: Data(line)) else {
                failure = Failure(.failure, "malformed scan line from the daemon")
                return false
            }
            if let match = scanned.match { lines.append(ScanLine.bytes(text: match.text, base64: match.base64)[...]) }
            // No peer answers for it now (the writer restarting): the event is handled again after a wait.
            if let error = scanned.error { failure = Failure(.store, error) }
            done = scanned.done
            return failure == nil && done == nil
        }
        if let failure { throw failure }
        guard let done else { throw Failure(.noDaemon, "the daemon ended the scan of \(path)") }
        guard let end = done.cursor else { return nil }
        cursor = TailCursor(document: cursor.document, revision: revision, offset: UInt64(end))
        return (lines, change)
    }

    private func output(_ lines: [ArraySlice<UInt8>], path: String, time: String, cursor: TailCursor) throws(Failure) {
        var out: [UInt8] = []
        for line in lines {
            if let filter {
                let selected: Bool
                do { selected = try filter.matches(Array(line)) } catch {
                    throw Failure(.failure, "--grep: \(error)")
                }
                if !selected { continue }
            }
            if json {
                let text = String(decoding: line, as: UTF8.self)
                out += Array((jsonLine(TailLine(path: path, line: text, time: time, cursor: cursor)) + "\n").utf8)
            } else {
                if prefixed { out += FileName.encode(path + ":") }
                out += line
                out.append(UInt8(ascii: "\n"))
            }
        }
        if !out.isEmpty { try writeStandardOutput(Data(out)) }
    }

    /// Writes the position to the cursor file (a new file renamed over the old: never half written).
    private func save() throws(Failure) {
        guard let cursorFile, let data = try? JSONEncoder().encode(position) else { return }
        let temporary = cursorFile + ".new"
        do { try data.write(to: URL(fileURLWithPath: temporary)) } catch {
            throw Failure(.failure, "\(cursorFile): cannot write the cursor: \(error)")
        }
        guard rename(Paths.cString(temporary), Paths.cString(cursorFile)) == 0 else {
            throw Self.failed("\(cursorFile): saving the cursor")
        }
    }

    private static func failed(_ what: String) -> Failure {
        Failure(.failure, "\(what): \(Failure.errnoText(errno))")
    }

    /// Runs `body` (print lines, then keep the position) with SIGINT, SIGTERM and SIGHUP held, so that an
    /// interrupted tail has always saved exactly what it printed.
    private static func atomically(_ body: () throws(Failure) -> Void) throws(Failure) {
        var held = sigset_t()
        var previous = sigset_t()
        sigemptyset(&held)
        for signal in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&held, signal) }
        sigprocmask(SIG_BLOCK, &held, &previous)
        defer { sigprocmask(SIG_SETMASK, &previous, nil) }
        try body()
    }
}

/// The fields of a `watch` line that `tail` uses (docs/events.md).
struct TailEvent: Codable {
    var event: String
    var path: String?
    var rev: String?
    var seq: Int64?
    var document: String?
    var kind: String?
    var size: UInt64?
    var time: String?
}
