import ArgumentParser
import FoundationEssentials
import Glibc
import HypernetDaemon
import HypernetStore
import HypernetVFS

struct Gc: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "Collect garbage now: rewrite the packs whose dead share passes the threshold, freeing space.",
        discussion: """
            Runs a pass in the running daemon, or opens the store directly when none runs. Shows its progress on a \
            terminal, then a summary; --dry-run only measures; --json prints the summary as one JSON object \
            (docs/cli.md, gc).
            """)

    @OptionGroup var global: GlobalOptions
    @Flag(help: "Measure only: what a pass would rewrite and free.") var dryRun = false
    @Flag(help: "Print the summary as one JSON object.") var json = false

    func execute() throws(Failure) {
        let home = global.home
        let show: (GarbageProgress) -> Void = { p in showProgress("gc: pack \(p.pack) of \(p.of) (\(p.bytes) bytes)") }
        let report =
            try HomeLock.holder(home: home) != nil
            ? followProgress(home, ControlRequest(command: .gc, dryRun: dryRun), status: .store, show: show)
            : directly(home, show: show)
        showProgress(nil)
        if json { return print(jsonLine(report)) }
        if let plan = report.retention {
            print(
                "retention \(report.dryRun ? "would release" : "released") the content of \(plan.revisions) "
                    + "revisions: \(plan.chunks) chunks, \(plan.bytes) bytes")
        }
        if let error = report.retentionError { print("retention released nothing: \(error)") }
        if report.dryRun {
            print(
                "would reclaim \(report.bytesReclaimed) bytes by rewriting \(report.packsDue) packs "
                    + "(\(report.deadBytes) dead bytes in all)")
        } else {
            print(
                "reclaimed \(report.bytesReclaimed) bytes: rewrote \(report.packsRewritten) of \(report.packsDue) packs, "
                    + "copied \(report.liveBytesCopied) live bytes, in \(String(format: "%.1f", report.seconds)) s")
        }
    }

    private func directly(_ home: Home, show: (GarbageProgress) -> Void) throws(Failure) -> GarbageReport {
        try withStoreDirectly(home, failing: "gc in \(home.path)") { store in
            // What a daemon's start does first: finish a compaction a crash interrupted.
            store.reclaimSpace()
            return try store.collectGarbage(dryRun: dryRun, progress: show)
        }
    }
}

struct Du: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the space PATH and each directory below it take in the store: current, history, shared.",
        discussion: """
            One line per directory, deepest first and PATH last: current bytes (what the current contents need), \
            history bytes (what their other revisions and deleted documents' retained revisions need besides), \
            shared bytes (the part of both used by more than one document), and the path. Bytes in the packs, each \
            stored object counted once. --json prints one JSON array instead (docs/cli.md, du).
            """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "A file or directory in the mounted folder (default: the mount's root).") var path: String?
    @Flag(help: "Print one JSON array of {path, current, history, shared}.") var json = false

    func execute() throws(Failure) {
        let usage = try ControlClient(home: global.home).send(
            ControlRequest(command: .du, path: path.map(Paths.absolute)), expecting: [SpaceUsage].self)
        if json { return print(jsonLine(usage)) }
        for u in usage { print("\(u.current)\t\(u.history)\t\(u.shared)\t\(u.path)") }
    }
}

/// Sends `request`, whose answer streams `ProgressLine`s: shows each progress, returns the report; an error line
/// fails with `status`.
func followProgress<P: Codable & Sendable, R: Codable & Sendable>(
    _ home: Home, _ request: ControlRequest, status: ExitStatus, show: (P) -> Void
) throws(Failure) -> R {
    let client = try ControlClient(home: home)
    _ = try client.send(request, expecting: Acknowledgement.self)
    var result: Result<R, Failure>?
    try client.streamLines { bytes in
        guard let line = try? JSONDecoder().decode(ProgressLine<P, R>.self, from: Data(bytes)) else {
            result = .failure(Failure(.failure, "unreadable reply from the daemon"))
            return false
        }
        if let p = line.progress { show(p) }
        if let report = line.report { result = .success(report) }
        if let error = line.error { result = .failure(Failure(status, "\(request.command.rawValue): \(error)")) }
        return result == nil
    }
    return try result!.get()
}

/// A progress line on a terminal's standard error, rewritten in place; nil clears it. Nothing when not a terminal.
func showProgress(_ text: String?) {
    guard isatty(STDERR_FILENO) == 1 else { return }
    let line = "\r" + (text ?? "") + "\u{1B}[K"
    Array(line.utf8).withUnsafeBytes { _ = write(STDERR_FILENO, $0.baseAddress, $0.count) }
}

struct Keep: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "Keep PATH's content on this node (available offline): fetched now, never evicted.",
        discussion: """
            PATH is a file or folder in the mounted folder, this identity's or below /@NAME/; files that appear \
            below a kept folder later are kept too. Shows its progress on a terminal, then a summary; --json prints \
            the summary as one JSON object. Exits with 1 when some content could not be fetched (no reachable \
            peer sent it): it stays kept and is fetched later (docs/cli.md, keep).
            """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "A file or folder in the mounted folder.") var path: String
    @Flag(help: "Print the summary as one JSON object.") var json = false

    func execute() throws(Failure) {
        let summary: KeepSummary = try followProgress(
            global.home, ControlRequest(command: .keep, path: Paths.absolute(path)), status: .failure
        ) { (p: KeepProgress) in showProgress("keep: file \(p.files) of \(p.of), \(p.fetched) bytes fetched") }
        showProgress(nil)
        if json { print(jsonLine(summary)) } else { print(summary.text) }
        if summary.incomplete > 0 {
            throw Failure(.failure, "\(summary.incomplete) kept file(s) not complete: no reachable peer sent them")
        }
    }
}

struct Unkeep: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stop keeping PATH's content on this node: it may be evicted again, nothing is deleted.",
        discussion: """
            PATH must be a file or folder given to `hypernet keep` (one kept through a kept folder above it fails). \
            Prints what is still kept; --json as one JSON object (docs/cli.md, keep).
            """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "A file or folder in the mounted folder.") var path: String
    @Flag(help: "Print the summary as one JSON object.") var json = false

    func execute() throws(Failure) {
        let summary = try ControlClient(home: global.home).send(
            ControlRequest(command: .unkeep, path: Paths.absolute(path)), expecting: KeepSummary.self)
        if json { print(jsonLine(summary)) } else { print(summary.text) }
    }
}

extension KeepSummary {
    var text: String {
        "kept: \(files) files, \(bytes) bytes; fetched \(fetched) bytes"
            + (incomplete > 0 ? "; \(incomplete) files not complete" : "")
    }
}
