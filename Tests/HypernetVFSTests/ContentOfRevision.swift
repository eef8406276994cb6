import HypernetVFS

extension VirtualFileSystem {
    /// The whole content of `path` at `revision`, as `hypernet cat` streams it.
    func content(path: String, revision: String) throws(VFSError) -> [UInt8] {
        var out: [UInt8] = []
        try streamContent(path: path, revision: revision) {
            out += $0
            return true
        }
        return out
    }
}
