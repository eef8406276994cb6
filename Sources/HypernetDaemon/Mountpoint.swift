import Glibc
import HypernetFUSE

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

    /// Whether `canonical` appears as a mount point in `/proc/self/mountinfo`.
    public static func isMountPoint(_ canonical: String) -> Bool {
        MountTable.fileSystemType(at: canonical) != nil
    }
}
