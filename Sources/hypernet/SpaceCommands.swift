import ArgumentParser
import FoundationEssentials
import Glibc
import HypernetDaemon
import HypernetStore

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
