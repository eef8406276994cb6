import ArgumentParser
import HypernetDaemon
import HypernetStore

struct Gc: HypernetCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Show what the retention policies release: revisions whose content goes, and the chunks it frees.",
        discussion: """
            Asks the running daemon. Needs --dry-run for now: releasing (dropping the catalog rows of dead chunks) \
            comes with pack compaction, which returns their space (docs/design.md, "Retention decisions"). A node \
            serving without a mount keeps everything.
            """)

    @OptionGroup var global: GlobalOptions
    @Flag(help: "Change nothing: print what a collection would release.") var dryRun = false
    @Flag(help: "Print one JSON object {revisions, chunks, bytes} instead of a line.") var json = false

    func execute() throws(Failure) {
        guard dryRun else { throw Failure(.usage, "gc releases nothing yet: run it with --dry-run") }
        let summary = try ControlClient(home: global.home).send(
            ControlRequest(command: .gc), expecting: CollectionSummary.self)
        if json { return print(jsonLine(summary)) }
        print(
            "would release the content of \(summary.revisions) revisions: \(summary.chunks) chunks, \(summary.bytes) bytes"
        )
    }
}
