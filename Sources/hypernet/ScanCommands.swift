import ArgumentParser
import FoundationEssentials
import Glibc
import HypernetDaemon
import HypernetScan
import HypernetStore

struct Grep: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the lines of the files below PATH… that match PATTERN, scanned by the daemon (docs/grep.md).",
        discussion: """
            Output and exit status as GNU grep's: PATH:LINE (PATH:N:LINE with -n; no PATH: for a single file), \
            -c a count per file, -l the files with a match; 0 if a line was selected, 1 if none, 2 on an error. \
            Patterns are GNU grep's in the C locale (basic, -E extended, -F fixed); directories are searched \
            recursively. --json prints one JSON object per line, count or file instead. A PATTERN that starts \
            with '-' follows '--'.
            """)

    @OptionGroup var global: GlobalOptions
    @Flag(name: .customShort("i"), help: "Ignore case (ASCII letters).") var ignoreCase = false
    @Flag(name: .customShort("w"), help: "Select only matches that are whole words.") var wholeWord = false
    @Flag(name: .customShort("F"), help: "PATTERN is a fixed string.") var fixed = false
    @Flag(name: .customShort("E"), help: "PATTERN is an extended regular expression.") var extended = false
    @Flag(name: .customShort("c"), help: "Print a count of selected lines per file.") var count = false
    @Flag(name: .customShort("l"), help: "Print only the names of files with a selected line.") var list = false
    @Flag(name: .customShort("n"), help: "Prefix each line with its number in its file.") var lineNumber = false
    @Flag(name: .customShort("v"), help: "Select the lines that do not match.") var invert = false
    @Flag(help: "One JSON object per line, count or file.") var json = false
    @Argument(help: "The pattern.") var pattern: String
    @Argument(help: "Files or directories in the mounted folder.") var paths: [String]

    func validate() throws {
        if fixed && extended { throw ValidationError("-F and -E exclude each other") }
        if paths.isEmpty { throw ValidationError("grep needs a PATH") }
    }

    func run() throws {
        let query = ScanQuery(
            pattern: pattern, syntax: fixed ? .fixed : extended ? .extended : .basic, ignoreCase: ignoreCase,
            wholeWord: wholeWord, invert: invert, output: list ? .files : count ? .counts : .lines)
        let names = OperandNames(paths)
        let prefixed = paths.count > 1 || paths.contains { Self.isDirectory($0) }
        let selected = try scan(.grep, query, paths: names.absolute, home: global.home) { (line) throws(Failure) in
            if let match = line.match {
                if json { return try printJSON(match) }
                var out = prefixed ? Array((names.shown(match.path) + ":").utf8) : []
                if lineNumber { out += Array("\(match.line):".utf8) }
                out += ScanLine.bytes(text: match.text, base64: match.base64) + [0x0A]
                try writeStandardOutput(Data(out))
            } else if let file = line.file {
                if json { return try printJSON(file) }
                let path = names.shown(file.path)
                let text = file.count.map { prefixed ? "\(path):\($0)" : "\($0)" } ?? path
                try writeStandardOutput(Data((text + "\n").utf8))
            }
        }
        throw ExitCode(selected > 0 ? 0 : 1)
    }

    private static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(Paths.cString(path), &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }
}

struct Count: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Count the matches of REGEX in the files below PATH… per captured value (docs/grep.md).",
        discussion: """
            REGEX is an extended regular expression (as grep -E); each non-overlapping match in each line counts \
            once for the value of its capturing groups (several joined by a tab; without groups, the match). \
            Prints COUNT VALUE per value, most frequent first; --json one object per value. Exit status 0 if \
            something was counted, 1 if nothing, 2 on an error.
            """)

    @OptionGroup var global: GlobalOptions
    @Option(help: ArgumentHelp("What to count, with capturing groups.", valueName: "REGEX")) var by: String
    @Option(help: ArgumentHelp("Only the K most frequent values.", valueName: "K")) var top: Int?
    @Flag(name: .customShort("i"), help: "Ignore case (ASCII letters).") var ignoreCase = false
    @Flag(help: "One JSON object per value.") var json = false
    @Argument(help: "Files or directories in the mounted folder.") var paths: [String]

    func validate() throws {
        if let top, top < 1 { throw ValidationError("--top must be 1 or more") }
        if paths.isEmpty { throw ValidationError("count needs a PATH") }
    }

    func run() throws {
        let query = ScanQuery(pattern: by, syntax: .extended, ignoreCase: ignoreCase, output: .groups)
        var table = GroupCounts()
        _ = try scan(.count, query, paths: OperandNames(paths).absolute, home: global.home) { (line) throws(Failure) in
            guard let group = line.group else { return }
            // Each node's table is whole: adding them is the reduce.
            table.merge(GroupCounts(counts: [ScanLine.bytes(text: group.value, base64: group.base64): group.count]))
        }
        let top = table.top(self.top)
        for (value, count) in top {
            if json {
                let (text, base64) = ScanLine.text(value)
                try printJSON(ScanLine.Group(value: text, base64: base64, count: count))
            } else {
                try writeStandardOutput(Data(Array("\(count) ".utf8) + value + [0x0A]))
            }
        }
        throw ExitCode(top.isEmpty ? 1 : 0)
    }
}

/// The command line's paths, absolute for the daemon, and the daemon's absolute paths shown as the operand they
/// are below was written (as grep names the files it finds).
private struct OperandNames {
    let written: [String]
    let absolute: [String]

    init(_ paths: [String]) {
        written = paths
        absolute = paths.map(Paths.absolute)
    }

    func shown(_ path: String) -> String {
        for (operand, full) in zip(written, absolute) {
            if path == full { return operand }
            let directory = full == "/" ? "/" : full + "/"
            if path.hasPrefix(directory) {
                return (operand.hasSuffix("/") ? operand : operand + "/") + path.dropFirst(directory.count)
            }
        }
        return path
    }
}

private func printJSON(_ value: some Encodable) throws(Failure) {
    try writeStandardOutput(Data((jsonLine(value) + "\n").utf8))
}

/// Sends the scan and hands each result line to `body` as it arrives; shows the progress on a terminal. Returns what
/// the daemon selected. Every failure (a bad pattern, no daemon, an unreadable file) is a line on stderr and, once
/// the scan ends, exit 2, as grep's.
private func scan(
    _ command: ControlRequest.Command, _ query: ScanQuery, paths: [String], home: Home,
    _ body: (ScanLine) throws(Failure) -> Void
) throws -> Int {
    let terminal = isatty(STDERR_FILENO) == 1
    var failed = false
    var showsProgress = false
    func clearProgress() {
        guard showsProgress else { return }
        writeProgress("\r\u{1B}[K")
        showsProgress = false
    }
    var done: ScanLine.Progress?
    do throws(Failure) {
        // Refused here, before any daemon is asked.
        _ = try query.compiled()
        let client = try ControlClient(home: home)
        _ = try client.send(
            ControlRequest(command: command, paths: paths, scan: query), expecting: Acknowledgement.self)
        var failure: Failure?
        try client.streamLines { bytes in
            guard let line = try? JSONDecoder().decode(ScanLine.self, from: Data(bytes)) else { return true }
            do throws(Failure) {
                if let progress = line.progress, terminal {
                    showsProgress = true
                    writeProgress("\rscanned \(progress.bytes / 1_000_000) MB in \(progress.documents) files")
                } else if let error = line.error {
                    failed = true
                    clearProgress()
                    writeStandardError("hypernet: \(error)")
                } else if let last = line.done {
                    done = last
                    return false
                } else {
                    // The progress line goes before a result is printed on the same terminal.
                    clearProgress()
                    try body(line)
                }
            } catch {
                failure = error
                return false
            }
            return true
        }
        if let failure { throw failure }
    } catch {
        failed = true
        clearProgress()
        writeStandardError("hypernet: \(error.message)")
    }
    clearProgress()
    if failed { throw ExitCode(ExitStatus.usage.rawValue) }
    return done?.selected ?? 0
}

/// A progress line on the terminal, rewritten in place (no newline).
func writeProgress(_ text: String) {
    Array(text.utf8).withUnsafeBytes { _ = write(STDERR_FILENO, $0.baseAddress, $0.count) }
}
