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
        let terminal = isatty(STDERR_FILENO) == 1
        let show: (GarbageProgress) -> Void = { p in
            guard terminal else { return }
            let text = "\rgc: pack \(p.pack) of \(p.of) (\(p.bytes) bytes)\u{1B}[K"
            Array(text.utf8).withUnsafeBytes { _ = write(STDERR_FILENO, $0.baseAddress, $0.count) }
        }
        let report =
            try HomeLock.holder(home: home) != nil
            ? throughDaemon(home, show: show) : directly(home, show: show)
        if terminal { writeStandardError("\r\u{1B}[K") }
        if json { return print(jsonLine(report)) }
        if let plan = report.retention {
            print(
                "retention would release the content of \(plan.revisions) revisions: \(plan.chunks) chunks, "
                    + "\(plan.bytes) bytes (not released yet)")
        }
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

    private func throughDaemon(_ home: Home, show: (GarbageProgress) -> Void) throws(Failure) -> GarbageReport {
        let client = try ControlClient(home: home)
        _ = try client.send(ControlRequest(command: .gc, dryRun: dryRun), expecting: Acknowledgement.self)
        var result: Result<GarbageReport, Failure>?
        try client.streamLines { bytes in
            guard let line = try? JSONDecoder().decode(GarbageLine.self, from: Data(bytes)) else {
                result = .failure(Failure(.failure, "unreadable reply from the daemon"))
                return false
            }
            if let p = line.progress { show(p) }
            if let report = line.report { result = .success(report) }
            if let error = line.error { result = .failure(Failure(.store, "gc: \(error)")) }
            return result == nil
        }
        return try result!.get()
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
