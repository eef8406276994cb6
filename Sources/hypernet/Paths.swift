import Glibc
import HypernetVFS

enum Paths {
    /// The arguments as the kernel passed them. A name may hold bytes that are not UTF-8 (the mount keeps them);
    /// `CommandLine.arguments` would turn those into U+FFFD, so they are kept as `FileName` keeps them in the
    /// folder, and turned back into the same bytes by `cString` and on stderr.
    static func arguments() -> [String] {
        (1..<Int(CommandLine.argc)).compactMap { CommandLine.unsafeArgv[$0].map { string($0) } }
    }

    /// A C string from the system (a name, a path): any bytes.
    static func string(_ bytes: UnsafePointer<CChar>) -> String {
        FileName.decode(UnsafeRawBufferPointer(start: bytes, count: strlen(bytes)))
    }

    /// The bytes to hand the system for `path` (NUL-terminated).
    static func cString(_ path: String) -> [CChar] { FileName.encode(path).map { CChar(bitPattern: $0) } + [0] }

    /// `path` made absolute against the working directory, with `.`, `..` and repeated slashes
    /// removed, and its directory part resolved through symlinks when it exists. The last
    /// component is kept as written and need not exist (a deleted file still has a history), and a
    /// symlink there stays the symlink rather than its target.
    static func absolute(_ path: String) -> String {
        var joined = path
        if !path.hasPrefix("/") {
            if let directory = getcwd(nil, 0) {
                joined = string(directory) + "/" + path
                free(directory)
            }
        }
        var parts: [Substring] = []
        for part in joined.split(separator: "/") {
            switch part {
            case ".": continue
            case "..": _ = parts.popLast()
            default: parts.append(part)
            }
        }
        guard let last = parts.popLast() else { return "/" }
        let directory = "/" + parts.joined(separator: "/")
        guard let resolved = realpath(cString(directory), nil) else {
            return directory + (parts.isEmpty ? "" : "/") + last
        }
        defer { free(resolved) }
        let real = string(resolved)
        return (real == "/" ? "" : real) + "/" + last
    }
}
