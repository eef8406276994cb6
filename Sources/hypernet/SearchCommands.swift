import ArgumentParser
import FoundationEssentials
import Glibc
import HypernetDaemon
import HypernetStore

struct Search: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "Search what this identity may read, by metadata and full text (docs/search.md).",
        discussion: """
            One line per result: its path, then, for a query with words, the text around the first match indented \
            on the next line. --json prints one JSON object per result instead. A query that starts with '-' \
            follows '--'. --watch then keeps running and prints each new match as revisions arrive (a document \
            again at each revision that matches), until interrupted. Bad syntax: exit 9 with the column of the \
            offending token.
            """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The query, e.g. '\"quarterly plan\" -draft modified:<7d'.") var query: String
    @Flag(help: "One JSON object per result.") var json = false
    @Option(help: "At most N results (1 to 10000).") var limit = 20
    @Option(help: "Skip the first N results (paging).") var offset = 0
    @Option(help: "relevance (default), modified, created, size, name or path.") var sort = "relevance"
    @Flag(help: "Then print each new match as revisions arrive, until interrupted.") var watch = false

    func execute() throws(Failure) {
        // Subscribed first, so that nothing indexed between the answer and the stream is missed.
        let stream = try watch ? ControlClient(home: global.home) : nil
        if let stream {
            _ = try stream.send(
                ControlRequest(command: .search, query: query, follow: true), expecting: Acknowledgement.self)
        }
        let results = try ControlClient(home: global.home).send(
            ControlRequest(command: .search, query: query, limit: limit, offset: offset, sort: sort),
            expecting: [SearchResult].self)
        for result in results { show(result) }
        guard let stream else { return }
        try stream.streamLines { line in
            if let result = try? JSONDecoder().decode(SearchResult.self, from: Data(line)) { show(result) }
            return true
        }
    }

    private func show(_ result: SearchResult) {
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            guard let data = try? encoder.encode(result) else { return }
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(result.path)
            if let snippet = result.snippet { print("    " + snippet) }
        }
        fflush(nil)
    }
}

struct IndexCommand: HypernetCommand {
    static let configuration = CommandConfiguration(
        commandName: "index",
        abstract: "Show the search index's progress, or rebuild it.",
        discussion: """
            --rebuild empties the index and waits until the running daemon has indexed everything again, showing \
            its progress on a terminal. Without a running daemon it deletes the index, which the next start rebuilds.
            """)

    @OptionGroup var global: GlobalOptions
    @Flag(help: "Rebuild the index from the store.") var rebuild = false
    @Flag(help: "The status as one JSON object, with the indexer's counters.") var json = false

    func execute() throws(Failure) {
        let home = global.home
        guard HomeLock.holder(home: home) != nil else {
            guard rebuild else { throw Failure(.noDaemon, "no daemon running for \(home.path)") }
            for suffix in ["", "-wal", "-shm"] where unlink(home.searchIndexPath + suffix) != 0 && errno != ENOENT {
                throw Failure(.store, "cannot delete \(home.searchIndexPath + suffix): \(Failure.errnoText(errno))")
            }
            print("the search index is rebuilt when the node starts")
            return
        }
        let client = try ControlClient(home: home)
        var status = try client.send(
            ControlRequest(command: .index, argument: rebuild ? "rebuild" : "status"), expecting: IndexStatus.self)
        if rebuild {
            let target = status.logged
            let terminal = isatty(STDERR_FILENO) == 1
            while status.indexed < target {
                if terminal { writeProgress("\rindexing: log entry \(status.indexed) of \(target)") }
                usleep(200_000)
                status = try client.send(ControlRequest(command: .index), expecting: IndexStatus.self)
            }
            if terminal { writeProgress("\r\u{1B}[K") }
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            if let data = try? encoder.encode(status) { print(String(decoding: data, as: UTF8.self)) }
            return
        }
        print("\(status.documents) documents indexed, log entry \(status.indexed) of \(status.logged)")
        if status.orphans > 0 { print("\(status.orphans) unreachable text rows (dropped by --rebuild)") }
    }
}
