import ArgumentParser
import FoundationEssentials
import HypernetDaemon

struct Watch: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print one JSON line per new revision below PATH…, as it is stored on this node, until interrupted.",
        discussion: """
            Fields: event, path (in the tree: "/" is the mount root), rev, author, time, seq, document, kind, \
            size, parents, conflict (docs/events.md). Revisions received from peers are printed once they show \
            in the folder. --since SEQ first prints the revisions after log position SEQ (the seq of the last \
            line seen), so a watcher that restarts misses nothing.
            """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "Files or directories in the mounted folder.") var paths: [String]
    @Option(help: ArgumentHelp("First print the stored revisions after this log position.", valueName: "SEQ"))
    var since: Int64?

    func execute() throws(Failure) {
        let absolute = paths.map(Paths.absolute)
        let client = try ControlClient(home: global.home)
        _ = try client.send(
            ControlRequest(command: .watch, paths: absolute, since: since), expecting: Acknowledgement.self)
        var failure: Failure?
        try client.streamLines { line in
            do throws(Failure) { try writeStandardOutput(Data(line)) } catch {
                failure = error
                return false
            }
            return true
        }
        if let failure { throw failure }
    }
}
