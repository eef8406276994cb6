import Glibc

/// Errors of the durable store. Corruption names the object so a log line can point at it.
public enum StoreError: Error, Sendable, CustomStringConvertible {
    case io(path: String, errno: Int32)
    case corrupt(object: String, reason: String)
    case notFound(String)
    case unsupportedFormat(found: Int, supported: Int)
    case invalid(String)
    case database(String)
    /// A permission change or a sealing this identity has no right or key for.
    case rights(RightsError)

    /// The disk holding the store is full (a pack or the catalog could not grow).
    public var isNoSpace: Bool {
        if case .io(_, let e) = self { return e == ENOSPC || e == EDQUOT }
        return false
    }

    public var description: String {
        switch self {
        case .io(let path, let e): return "\(path): \(String(cString: strerror(e)))"
        case .corrupt(let object, let reason): return "corrupt \(object): \(reason)"
        case .notFound(let what): return "not found: \(what)"
        case .unsupportedFormat(let found, let supported):
            return "store format \(found) is newer than this hypernet understands (\(supported)); upgrade hypernet"
        case .invalid(let why): return why
        case .database(let why): return "catalog: \(why)"
        case .rights(let why): return why.description
        }
    }
}
