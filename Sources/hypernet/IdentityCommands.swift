import ArgumentParser
import Glibc
import HypernetCrypto
import HypernetDaemon
import HypernetStore

/// `hypernet id` (print the identity), `id export FILE`, `id import FILE`.
struct Id: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print this node's identity token, or move the identity to another node.",
        discussion: """
            `hypernet id` alone prints the identity token. `export` writes the identity and the key of its \
            tree to a passphrase-protected file; `import` installs such a file in a home without an \
            identity, so that both nodes see and edit the same tree. The node key stays on each node.
            """,
        subcommands: [Show.self, Export.self, Import.self],
        defaultSubcommand: Show.self)

    struct Show: HypernetCommand {
        static let configuration = CommandConfiguration(
            commandName: "show", abstract: "Print this node's identity token (the default).")

        @OptionGroup var global: GlobalOptions

        func execute() throws(Failure) {
            print(try loadKeyring(global.home).identityToken)
        }
    }

    struct Export: HypernetCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the identity and its tree key to FILE, encrypted under a passphrase.",
            discussion: """
                The passphrase comes from --passphrase-file (its first line), else $HYPERNET_PASSPHRASE, \
                else a prompt on the terminal (asked twice). The key is derived with Argon2id; \
                $HYPERNET_PWHASH=interactive makes it cheaper (for tests), the default is moderate. \
                FILE is created with mode 0600; an existing FILE is kept unless --force.
                """)

        @OptionGroup var global: GlobalOptions
        @Argument(help: "The file to write.") var file: String
        @Option(help: ArgumentHelp("Read the passphrase from the first line of FILE.", valueName: "FILE"))
        var passphraseFile: String?
        @Flag(help: "Replace FILE if it exists.") var force = false

        func execute() throws(Failure) {
            let keyring = try loadKeyring(global.home)
            let parameters: PasswordHash.Parameters
            do {
                parameters = try IdentityExport.parameters(environmentValue: environment("HYPERNET_PWHASH"))
            } catch {
                throw Failure(.usage, error.description)
            }
            if !force && access(file, F_OK) == 0 {
                throw Failure(.failure, IdentityExportError.exists(file).description)
            }
            let passphrase = try Passphrase.obtain(
                file: passphraseFile, prompt: "Passphrase for \(file)", confirm: true)
            do {
                try IdentityExport(keyring: keyring).write(
                    to: file, passphrase: passphrase, parameters: parameters, replacing: force)
            } catch {
                throw failure(error)
            }
        }
    }

    struct Import: HypernetCommand {
        static let configuration = CommandConfiguration(
            abstract: "Install the identity in FILE (from `id export`) in this home; print it.",
            discussion: """
                The home must have no identity yet (then a node key is made for it), or already this one \
                (nothing changes). A home with another identity is refused and left unchanged. The \
                passphrase comes from --passphrase-file, $HYPERNET_PASSPHRASE or the terminal.
                """)

        @OptionGroup var global: GlobalOptions
        @Argument(help: "A file written by `hypernet id export`.") var file: String
        @Option(help: ArgumentHelp("Read the passphrase from the first line of FILE.", valueName: "FILE"))
        var passphraseFile: String?

        func execute() throws(Failure) {
            let home = global.home
            let imported: IdentityExport
            do {
                let bytes = try IdentityExport.read(file)
                _ = try IdentityExport.Header.parse(bytes)  // a newer or foreign file is refused before the prompt
                let passphrase = try Passphrase.obtain(
                    file: passphraseFile, prompt: "Passphrase for \(file)", confirm: false)
                imported = try IdentityExport.open(bytes, passphrase: passphrase)
            } catch let error as Failure {
                throw error
            } catch let error as IdentityExportError {
                throw failure(error)
            } catch {
                throw Failure(.failure, "\(error)")
            }

            // A daemon only runs with an identity, so it never meets a half-installed one; holding the
            // home lock keeps one from starting while the keys are written. With a daemon running the
            // home has an identity, which install compares and never replaces.
            try Home.makeDirectoryOrFail(home.path)
            var lock: HomeLock?
            do throws(Failure) {
                lock = try HomeLock.acquire(home: home)
            } catch {
                guard error.status == .alreadyRunning else { throw error }
            }
            defer { lock?.release() }

            let result: (keyring: Keyring, outcome: IdentityExport.InstallOutcome)
            do {
                result = try imported.install(into: home)
            } catch {
                throw failure(error)
            }
            if case .alreadyPresent = result.outcome {
                writeStandardError("hypernet: \(home.path) already has this identity; nothing changed")
            }
            print(result.keyring.identityToken)
        }
    }
}

/// The keyring of `home`, or the failure `hypernet id` has always reported.
private func loadKeyring(_ home: Home) throws(Failure) -> Keyring {
    guard access(home.keysDirectory, F_OK) == 0 else {
        throw Failure(.failure, "no identity in \(home.path) (run: hypernet init)")
    }
    do {
        return try Keyring.load(directory: home.keysDirectory)
    } catch {
        throw Failure(.store, "cannot read the keys in \(home.keysDirectory): \(error)")
    }
}

/// Exit codes (docs/cli.md): the keys directory is a store error (7), everything else 1.
private func failure(_ error: IdentityExportError) -> Failure {
    switch error {
    case .store(let underlying): Failure(.store, "cannot use the keys: \(underlying)")
    case .invalidSetting(let why): Failure(.usage, why)
    default: Failure(.failure, error.description)
    }
}

private func environment(_ name: String) -> String? {
    guard let value = getenv(name), value.pointee != 0 else { return nil }
    return String(cString: value)
}

/// Where the passphrase comes from, in order: `--passphrase-file` (first line, newline stripped),
/// `HYPERNET_PASSPHRASE`, a prompt on /dev/tty with echo off; with none of them, a usage error.
/// The passphrase is never printed and is kept in sodium memory once read.
enum Passphrase {
    static let maximumByteCount = 4096

    static func obtain(file: String?, prompt: String, confirm: Bool) throws(Failure) -> SecureBytes {
        let passphrase: SecureBytes
        if let file {
            passphrase = try fromFile(file)
        } else if let value = getenv("HYPERNET_PASSPHRASE"), value.pointee != 0 {
            let count = strlen(value)
            guard count <= maximumByteCount else { throw tooLong }
            passphrase = SecureBytes(UnsafeRawBufferPointer(start: value, count: count))
        } else {
            passphrase = try fromTerminal(prompt: prompt, confirm: confirm)
        }
        guard passphrase.count > 0 else { throw Failure(.failure, IdentityExportError.emptyPassphrase.description) }
        return passphrase
    }

    private static var tooLong: Failure {
        Failure(.failure, "the passphrase is longer than \(maximumByteCount) bytes")
    }

    private static func fromFile(_ path: String) throws(Failure) -> SecureBytes {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Failure(.failure, "\(path): \(Failure.errnoText(errno))") }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: maximumByteCount + 2)
        defer { SecureMemory.zero(&buffer) }
        var count = 0
        while count < buffer.count {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + count, $0.count - count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Failure(.failure, "\(path): \(Failure.errnoText(errno))")
            }
            if n == 0 { break }
            if buffer[count..<count + n].contains(UInt8(ascii: "\n")) {
                count += n
                break
            }
            count += n
        }
        var line = buffer[..<count]
        if let newline = line.firstIndex(of: UInt8(ascii: "\n")) {
            line = line[..<newline]
        }
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        guard line.count <= maximumByteCount else { throw tooLong }
        return SecureBytes(line)
    }

    private static func fromTerminal(prompt: String, confirm: Bool) throws(Failure) -> SecureBytes {
        let tty = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard tty >= 0 else {
            throw Failure(
                .usage,
                "no passphrase: give --passphrase-file FILE or set HYPERNET_PASSPHRASE (no terminal to ask on)")
        }
        defer { close(tty) }
        let first = try readHidden(tty, prompt: prompt + ": ")
        guard confirm else { return first }
        let second = try readHidden(tty, prompt: "Repeat the passphrase: ")
        guard first.isEqual(to: second) else { throw Failure(.failure, "the passphrases do not match") }
        return first
    }

    /// One line from the terminal with echo off; echo is restored also when a signal ends the process.
    private static func readHidden(_ tty: Int32, prompt: String) throws(Failure) -> SecureBytes {
        var saved = termios()
        guard tcgetattr(tty, &saved) == 0 else { throw Failure(.usage, "/dev/tty: \(Failure.errnoText(errno))") }
        var quiet = saved
        quiet.c_lflag &= ~tcflag_t(ECHO)
        quiet.c_lflag |= tcflag_t(ICANON)
        TerminalRestore.arm(fd: tty, attributes: saved)
        defer { TerminalRestore.disarm() }
        put(tty, prompt)
        guard tcsetattr(tty, TCSAFLUSH, &quiet) == 0 else {
            throw Failure(.failure, "/dev/tty: \(Failure.errnoText(errno))")
        }
        var buffer = [UInt8](repeating: 0, count: maximumByteCount + 1)
        defer { SecureMemory.zero(&buffer) }
        var count = 0
        var failed: Int32 = 0
        var byte: UInt8 = 0
        while true {
            let n = read(tty, &byte, 1)
            if n < 0 {
                if errno == EINTR { continue }
                failed = errno
                break
            }
            if n == 0 || byte == UInt8(ascii: "\n") { break }
            if count < buffer.count {
                buffer[count] = byte
                count += 1
            }
        }
        byte = 0
        tcsetattr(tty, TCSAFLUSH, &saved)
        put(tty, "\n")
        if failed != 0 { throw Failure(.failure, "/dev/tty: \(Failure.errnoText(failed))") }
        var line = buffer[..<count]
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        guard line.count <= maximumByteCount else { throw tooLong }
        return SecureBytes(line)
    }

    private static func put(_ fd: Int32, _ text: String) {
        let bytes = Array(text.utf8)
        bytes.withUnsafeBytes { _ = write(fd, $0.baseAddress, $0.count) }
    }
}

/// While echo is off: SIGINT, SIGTERM, SIGHUP and SIGQUIT put the terminal back before the process
/// dies of the signal (the handler only calls async-signal-safe functions).
private enum TerminalRestore {
    nonisolated(unsafe) static var fd: Int32 = -1
    nonisolated(unsafe) static var attributes = termios()
    static let signals = [SIGINT, SIGTERM, SIGHUP, SIGQUIT]

    static func arm(fd: Int32, attributes: termios) {
        Self.attributes = attributes
        Self.fd = fd
        for signal in signals { Glibc.signal(signal, handler) }
    }

    static func disarm() {
        for signal in signals { Glibc.signal(signal, SIG_DFL) }
        fd = -1
    }

    private static let handler: @convention(c) (Int32) -> Void = { signal in
        if TerminalRestore.fd >= 0 {
            tcsetattr(TerminalRestore.fd, TCSAFLUSH, &TerminalRestore.attributes)
            _ = write(TerminalRestore.fd, "\n", 1)
        }
        Glibc.signal(signal, SIG_DFL)
        raise(signal)
    }
}
