import Glibc

enum Paths {
    /// `path` made absolute against the working directory, with `.`, `..` and repeated slashes
    /// removed, and its directory part resolved through symlinks when it exists. The last
    /// component is kept as written and need not exist (a deleted file still has a history), and a
    /// symlink there stays the symlink rather than its target.
    static func absolute(_ path: String) -> String {
        var joined = path
        if !path.hasPrefix("/") {
            if let directory = getcwd(nil, 0) {
                joined = String(cString: directory) + "/" + path
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
        guard let resolved = realpath(directory, nil) else { return directory + (parts.isEmpty ? "" : "/") + last }
        defer { free(resolved) }
        let real = String(cString: resolved)
        return (real == "/" ? "" : real) + "/" + last
    }
}
