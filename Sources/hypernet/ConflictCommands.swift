import ArgumentParser
import HypernetDaemon
import HypernetVFS

struct Conflicts: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "List unresolved conflicts: the heads of PATH (or of every file) other than the one shown.",
        discussion: """
            One line per other head: path, revision, time (UTC), author ("me", a contact's name, or the identity \
            token). Nothing when there are none.
            """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "A file in the mounted folder (default: the whole tree).") var path: String?
    @OptionGroup var authors: AuthorOptions

    func execute() throws(Failure) {
        let entries = try ControlClient(home: global.home).send(
            ControlRequest(command: .conflicts, path: path.map(Paths.absolute)), expecting: [ConflictEntry].self)
        if authors.json { return print(jsonLine(entries)) }
        for entry in entries {
            let author = authors.shown(entry.author, entry.authorName)
            print([entry.path, short(entry.revision), entry.time, author].joined(separator: "  "))
        }
    }
}

struct Resolve: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "Merge every head of PATH into a new revision with REV's content; print its id.",
        discussion: "REV is any revision of PATH (hypernet conflicts, hypernet log). Without a conflict, resolving "
            + "to the current revision changes nothing and prints it.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "A file in the mounted folder.") var path: String
    @Argument(help: "The revision whose content wins (an id or unique prefix).") var rev: String

    func execute() throws(Failure) {
        let reply = try ControlClient(home: global.home).send(
            ControlRequest(command: .resolve, path: Paths.absolute(path), revision: rev), expecting: RestoreReply.self)
        print(reply.revision)
    }
}
