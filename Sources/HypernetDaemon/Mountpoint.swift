import Glibc

/// Checks on the directory `hypernet mount` is given, so that a missing or busy mountpoint is one
/// clear line (exit status 6) instead of a libfuse error in the log.
public enum Mountpoint {
    /// The canonical path of `path` if it is an existing directory that is not already a mount point.
    public static func validate(_ path: String) throws(Failure) -> String {
        guard let resolved = realpath(path, nil) else {
            switch errno {
            case ENOENT:
                throw Failure(.mountpoint, "mountpoint does not exist: \(path)")
            case ENOTCONN:
                throw Failure(.mountpoint, "mountpoint is busy: \(path) is a dead FUSE mount (fusermount3 -u \(path))")
            default:
                throw Failure.system(path, status: .mountpoint)
            }
        }
        defer { free(resolved) }
        let canonical = String(cString: resolved)
        var info = stat()
        if stat(canonical, &info) != 0 { throw Failure.system(path, status: .mountpoint) }
        if info.st_mode & S_IFMT != S_IFDIR { throw Failure(.mountpoint, "mountpoint is not a directory: \(path)") }
        if isMountPoint(canonical) {
            throw Failure(.mountpoint, "mountpoint is busy: \(canonical) is already a mount point")
        }
        return canonical
    }

    /// Whether `canonical` appears as a mount point in `/proc/self/mountinfo` (field 5, with
    /// spaces, tabs, newlines and backslashes octal-escaped).
    public static func isMountPoint(_ canonical: String) -> Bool {
        guard let file = fopen("/proc/self/mountinfo", "re") else { return false }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>? = nil
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0 {
            let fields = String(cString: line!).split(separator: " ")
            if fields.count > 4 && unescape(fields[4]) == canonical { return true }
        }
        return false
    }

    private static func unescape(_ field: Substring) -> String {
        var bytes: [UInt8] = []
        let utf8 = Array(field.utf8)
        var i = 0
        while i < utf8.count {
            if utf8[i] == UInt8(ascii: "\\"), i + 3 < utf8.count,
                let value = UInt8(String(decoding: utf8[(i + 1)...(i + 3)], as: UTF8.self), radix: 8)
            {
                bytes.append(value)
                i += 4
            } else {
                bytes.append(utf8[i])
                i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
