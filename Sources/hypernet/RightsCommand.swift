import ArgumentParser
import CLinux
import Glibc
import HypernetDaemon

struct Rights: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the members of PATH's document and their roles: WHO ROLE,ROLE… per line.",
        discussion: "The same as `getfattr --only-values -n user.hypernet.rights PATH` (docs/xattrs.md).")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "A file or directory in the mounted folder.") var path: String

    func execute() throws(Failure) {
        print(try RightsChange.get("user.hypernet.rights", path: path), terminator: "")
    }
}

struct Grant: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "Give WHO roles on PATH (and what PATH holds): read, write, delete, admin.",
        discussion: """
            WHO is a contact name, an identity token, or '*' (everyone: with read, PATH becomes public). Needs admin \
            on PATH. The same as `setfattr -n user.hypernet.grant -v 'WHO ROLE,…' PATH` (docs/xattrs.md).
            """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "A file or directory in the mounted folder.") var path: String
    @Argument(help: "A contact name, an identity token (hn1…), or '*'.") var who: String
    @Argument(help: "read, write, delete, admin.") var roles: [String]

    func execute() throws(Failure) {
        try RightsChange.set("user.hypernet.grant", "\(who) \(roles.joined(separator: ","))", path: path)
    }
}

struct Revoke: HypernetCommand {
    static let configuration = CommandConfiguration(
        abstract: "Take roles (or, with none named, membership) on PATH from WHO: a new epoch with a fresh key.",
        discussion: """
            Revisions made from now on are sealed under a key WHO does not get; what WHO could read before stays \
            readable to it (docs/security.md). The same as `setfattr -n user.hypernet.revoke -v 'WHO[ ROLE,…]' PATH`.
            """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "A file or directory in the mounted folder.") var path: String
    @Argument(help: "A contact name, an identity token (hn1…), or '*'.") var who: String
    @Argument(help: "Roles to remove; none: every role.") var roles: [String] = []

    func execute() throws(Failure) {
        try RightsChange.set(
            "user.hypernet.revoke", roles.isEmpty ? who : "\(who) \(roles.joined(separator: ","))", path: path)
    }
}

/// The rights and retention commands are their xattrs, so that both go through one path in the daemon.
enum RightsChange {
    static func get(_ name: String, path: String) throws(Failure) -> String {
        var value = [UInt8](repeating: 0, count: 64 << 10)
        let count = CLinux_getxattr(Paths.cString(path), name, &value, UInt(value.count))
        guard count >= 0 else { throw failure(errno, path: path) }
        return String(decoding: value[..<Int(count)], as: UTF8.self)
    }

    static func set(
        _ name: String, _ value: String, path: String, failure: (Int32, String) -> Failure = failure(_:path:)
    ) throws(Failure) {
        // Elsewhere (ext4, tmpfs) the set would succeed and store an ordinary user xattr.
        var id = [UInt8](repeating: 0, count: 64)
        let file = Paths.cString(path)
        guard CLinux_getxattr(file, "user.hypernet.id", &id, UInt(id.count)) >= 0 else {
            throw failure(errno, path)
        }
        let bytes = Array(value.utf8)
        guard CLinux_setxattr(file, name, bytes, UInt(bytes.count)) == 0 else { throw failure(errno, path) }
    }

    static func failure(_ code: Int32, path: String) -> Failure {
        switch code {
        case ENODATA, ENOTSUP: Failure(.notHypernetPath, "not a Hypernet path: \(path)")
        case EACCES:
            Failure(.failure, "\(path): not allowed: needs admin, and must leave an admin and every writer a reader")
        case EINVAL:
            Failure(
                .usage,
                "\(path): bad value: WHO must be a contact, an identity token or '*', ROLE one of read, write, delete, admin"
            )
        default: Failure(.failure, "\(path): \(Failure.errnoText(code))")
        }
    }
}
