import ArgumentParser
import Glibc
import HypernetDaemon
import HypernetStore
import HypernetVFS

@main
struct Hypernet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hypernet",
        abstract: "A peer-to-peer persistence layer met as a mounted folder.",
        discussion: "Exit codes are listed in docs/cli.md.",
        version: version,
        subcommands: [
            Init.self, Mount.self, Serve.self, Unmount.self, Stop.self, Status.self, Id.self, Peer.self, Pin.self,
            Unpin.self, Pins.self, Contact.self, Rights.self, Grant.self, Revoke.self, Retention.self, Log.self,
            Cat.self, Restore.self,
            Watch.self, Tail.self, Conflicts.self, Resolve.self, Search.self, IndexCommand.self, Grep.self,
            Count.self, Fsck.self, Gc.self, Du.self, Keep.self, Unkeep.self,
        ])

    @OptionGroup var global: GlobalOptions

    /// argument-parser's own entry point, except that usage errors exit with 2 (docs/cli.md) and
    /// every message is prefixed `hypernet:`.
    static func main() {
        do {
            var command = try parseAsRoot(Paths.arguments())
            try command.run()
        } catch {
            if exitCode(for: error) == .validationFailure {
                var message = fullMessage(for: error)
                if message.hasPrefix("Error: ") { message = "hypernet: " + message.dropFirst("Error: ".count) }
                writeStandardError(message)
                Glibc.exit(ExitStatus.usage.rawValue)
            }
            exit(withError: error)
        }
    }
}

/// Options every command takes.
struct GlobalOptions: ParsableArguments {
    @Option(
        name: .customLong("home"),
        help: ArgumentHelp(
            "The node's directory: keys, store, log, control socket (default: $HYPERNET_HOME, else ~/.hypernet).",
            valueName: "DIR"))
    var explicitHome: String?

    /// The resolved home, as an absolute path (the daemon changes directory to /).
    var home: Home {
        let resolved = Home.resolve(explicitHome)
        return Home(path: Paths.absolute(resolved.path))
    }
}

/// A command whose failures are one `hypernet: …` line on stderr and an exit code from docs/cli.md.
protocol HypernetCommand: ParsableCommand {
    func execute() throws(Failure)
}

extension HypernetCommand {
    func run() throws {
        do {
            try execute()
        } catch {
            writeStandardError("hypernet: \(error.message)")
            throw ExitCode(error.status.rawValue)
        }
    }
}

/// One line to stderr (fd 2 directly: the C `stderr` global is not concurrency-safe in Swift 6).
func writeStandardError(_ line: String) {
    // A path with bytes that are not UTF-8 is printed as those bytes (`Paths.arguments`).
    let bytes = FileName.encode(line.hasSuffix("\n") ? line : line + "\n")
    bytes.withUnsafeBytes { _ = write(STDERR_FILENO, $0.baseAddress, $0.count) }
}
