import Glibc
import HypernetCrypto
import HypernetModel
import HypernetStore
import Logging

/// A store with a new identity in a new directory under /tmp named after `label`; the caller removes it
/// (`removeTemporaryStore`).
func temporaryStore(_ label: String) throws -> Store {
    var template = Array("/tmp/hypernet-\(label)-XXXXXX".utf8CString)
    let path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    let home = Home(path: path)
    let keyring = try Keyring.loadOrCreate(directory: home.keysDirectory, name: nil).keyring
    return try Store(home: home, keyring: keyring, logger: Logger(label: "test"))
}

func removeTemporaryStore(_ store: Store) { _ = system("rm -rf '\(store.home.path)'") }

/// Log entries of `tree` as replication hands them to `storeRemote`.
func remoteRecords(_ entries: [LogEntry], tree: SigningPublicKey) throws -> [RemoteRecord] {
    try entries.map { e -> RemoteRecord in
        switch try LogRecord(record: e.record) {
        case .revision(let r): .revision(RemoteRevision(signed: r, tree: tree, chunks: e.chunks))
        case .block(let b): .block(b, tree: tree)
        case .release(let s): .release(s, tree: tree)
        }
    }
}
