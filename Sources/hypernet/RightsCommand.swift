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
        let name = "user.hypernet.rights"
        var value = [UInt8](repeating: 0, count: 64 << 10)
        let count = CLinux_getxattr(path, name, &value, UInt(value.count))
        guard count >= 0 else {
            let code = errno
            if code == ENODATA || code == ENOTSUP { throw Failure(.notHypernetPath, "not a Hypernet path: \(path)") }
            throw Failure(.failure, "\(path): \(Failure.errnoText(code))")
        }
        print(String(decoding: value[..<Int(count)], as: UTF8.self), terminator: "")
    }
}
