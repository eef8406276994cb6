import Glibc
import HypernetCrypto
import HypernetModel

/// The node's secrets, in HOME/keys (dir 0700, files 0600, written atomically: temp + fsync + rename).
///
/// One file per key, each `KeyFile` format version 1:
///
///     offset  size  field
///     0       8     magic "hnkey\0\0\0"
///     8       1     format version (1)
///     9       1     kind: 1 identity, 2 node, 3 tree
///     10      ...   payload
///
///     identity.key  Ed25519 seed (32) || X25519 secret key (32) || name length (1) || name (UTF-8, 0...255)
///     node.key      Ed25519 seed (32)
///     tree.key      epoch key (32)
///
/// A file with another magic, kind or length is corrupt; a newer version is refused, never guessed at.
/// Files must be regular, owned by this user, and unreadable by group and others.
/// `hypernet id import` (`IdentityExport.install`) writes identity.key and tree.key from an export file,
/// in the same order as `loadOrCreate`: identity.key last.
public final class Keyring: Sendable {
    public let identity: SigningKeyPair  // the user identity (Ed25519)
    public let identityBox: BoxKeyPair  // the user identity (X25519)
    public let node: SigningKeyPair  // the node key
    /// Epoch key of the owner's own tree until permission blocks exist (issue 4): 32 random bytes.
    public let treeKey: SecureBytes
    public let name: String?

    public var identityToken: IdentityToken { IdentityToken(signing: identity.publicKey, box: identityBox.publicKey) }

    private init(
        identity: SigningKeyPair, identityBox: BoxKeyPair, node: SigningKeyPair, treeKey: SecureBytes, name: String?
    ) {
        self.identity = identity
        self.identityBox = identityBox
        self.node = node
        self.treeKey = treeKey
        self.name = name
    }

    static let identityFile = "identity.key"
    static let nodeFile = "node.key"
    static let treeFile = "tree.key"
    static let secretByteCount = 32

    /// Loads the keyring in `directory`, creating any missing key (idempotent). `created` is true if the identity was new.
    /// An existing identity keeps its name; `name` only names a new one.
    public static func loadOrCreate(directory: String, name: String?) throws(StoreError) -> (
        keyring: Keyring, created: Bool
    ) {
        if let name, name.utf8.isEmpty || name.utf8.count > 255 {
            throw .invalid("identity name must be 1 to 255 bytes of UTF-8")
        }
        try Home.makeDirectory(directory)
        try checkDirectory(directory)
        // Identity last: once it exists, the other keys do too, which is what `load` relies on.
        for file in [nodeFile, treeFile] where try KeyFile.read(directory + "/" + file) == nil {
            let kind: KeyFile.Kind = file == nodeFile ? .node : .tree
            try KeyFile.create(directory, file, kind: kind, payload: SecureBytes.random(count: secretByteCount))
        }
        var created = false
        if try KeyFile.read(directory + "/" + identityFile) == nil {
            let payload = identityPayload(signing: .generate(), box: .generate(), name: name)
            // false: another process created it first; load theirs, it is the identity now.
            created = try KeyFile.create(directory, identityFile, kind: .identity, payload: payload)
        }
        return (try load(directory: directory), created)
    }

    /// Loads; fails with StoreError.notFound if there is no identity (`hypernet init` not run).
    public static func load(directory: String) throws(StoreError) -> Keyring {
        try checkDirectory(directory)
        let identityPath = directory + "/" + identityFile
        guard let identityFile = try KeyFile.read(identityPath) else {
            throw .notFound("identity in \(directory) (run `hypernet init`)")
        }
        let (signing, box, name) = try parseIdentity(identityFile, path: identityPath)
        let node = try secret(directory, nodeFile, kind: .node)
        let tree = try secret(directory, treeFile, kind: .tree)
        let nodeKey: SigningKeyPair
        do { nodeKey = try SigningKeyPair(seed: node) } catch {
            throw .corrupt(object: directory + "/" + nodeFile, reason: "\(error)")
        }
        return Keyring(identity: signing, identityBox: box, node: nodeKey, treeKey: tree, name: name)
    }

    /// The payload of identity.key: seed || box secret || name length || name (`name` checked by the caller).
    static func identityPayload(signing: SigningKeyPair, box: BoxKeyPair, name: String?) -> SecureBytes {
        let nameBytes = Array((name ?? "").utf8)
        precondition(nameBytes.count <= 255, "identity name longer than 255 bytes")
        var bytes = signing.seed.bytes + box.secretKey.bytes + [UInt8(nameBytes.count)] + nameBytes
        defer { SecureMemory.zero(&bytes) }
        return SecureBytes(bytes)
    }

    static func secret(_ directory: String, _ file: String, kind: KeyFile.Kind) throws(StoreError)
        -> SecureBytes
    {
        let path = directory + "/" + file
        guard let contents = try KeyFile.read(path) else { throw .notFound(path) }
        guard contents.kind == kind, contents.payload.count == secretByteCount else {
            throw .corrupt(object: path, reason: "not a \(kind) key of \(secretByteCount) bytes")
        }
        return contents.payload
    }

    static func parseIdentity(
        _ contents: KeyFile.Contents, path: String
    ) throws(StoreError) -> (SigningKeyPair, BoxKeyPair, String?) {
        let fixed = 2 * secretByteCount + 1
        let bytes = contents.payload
        guard contents.kind == .identity, bytes.count >= fixed else {
            throw .corrupt(object: path, reason: "not an identity key")
        }
        return try bytes.withUnsafeBytes { (raw) throws(StoreError) in
            let nameLength = Int(raw[fixed - 1])
            guard raw.count == fixed + nameLength else {
                throw .corrupt(object: path, reason: "length \(raw.count), expected \(fixed + nameLength)")
            }
            guard let name = String(validating: raw[fixed...], as: UTF8.self) else {
                throw .corrupt(object: path, reason: "name is not UTF-8")
            }
            do {
                let signing = try SigningKeyPair(seed: SecureBytes(raw[0..<secretByteCount]))
                let box = try BoxKeyPair(secretKey: SecureBytes(raw[secretByteCount..<2 * secretByteCount]))
                return (signing, box, name.isEmpty ? nil : name)
            } catch {
                throw .corrupt(object: path, reason: "\(error)")
            }
        }
    }

    /// Refuses a keys directory other users can enter: secrets there are only as private as the directory.
    static func checkDirectory(_ directory: String) throws(StoreError) {
        var info = stat()
        guard stat(directory, &info) == 0 else {
            if errno == ENOENT { throw .notFound("identity in \(directory) (run `hypernet init`)") }
            throw .io(path: directory, errno: errno)
        }
        guard info.st_mode & S_IFMT == S_IFDIR else { throw .invalid("\(directory) is not a directory") }
        guard info.st_mode & 0o077 == 0 else {
            throw .invalid(
                "\(directory) is accessible by other users (mode \(octal(info.st_mode))); run chmod 700 \(directory)")
        }
    }
}

private func octal(_ mode: mode_t) -> String { "0" + String(mode & 0o777, radix: 8) }

/// Reading and atomically creating one versioned key file (format in `Keyring`'s comment).
enum KeyFile {
    static let magic: [UInt8] = Array("hnkey".utf8) + [0, 0, 0]
    static let version: UInt8 = 1
    static let headerByteCount = magic.count + 2
    /// Real key files are under 400 bytes; anything much larger is not one.
    static let maximumByteCount = 4096

    enum Kind: UInt8 {
        case identity = 1
        case node = 2
        case tree = 3
    }

    struct Contents {
        var kind: Kind
        var payload: SecureBytes
    }

    /// nil if the file does not exist.
    static func read(_ path: String) throws(StoreError) -> Contents? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw .io(path: path, errno: errno)
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .io(path: path, errno: errno) }
        guard info.st_mode & S_IFMT == S_IFREG else { throw .invalid("\(path) is not a regular file") }
        guard info.st_uid == geteuid() else { throw .invalid("\(path) is owned by another user (uid \(info.st_uid))") }
        guard info.st_mode & 0o077 == 0 else {
            throw .invalid("\(path) is readable by other users (mode \(octal(info.st_mode))); run chmod 600 \(path)")
        }
        guard info.st_size <= maximumByteCount else { throw .corrupt(object: path, reason: "too large for a key file") }

        var bytes = [UInt8](repeating: 0, count: maximumByteCount + 1)
        defer { SecureMemory.zero(&bytes) }
        let count = try readFully(fd, into: &bytes).mapError { StoreError.io(path: path, errno: $0.errno) }.get()
        return try parse(bytes[..<count], path: path)
    }

    /// A key file's bytes as read (at most `maximumByteCount + 1`), checked: magic, version, kind.
    static func parse(_ bytes: ArraySlice<UInt8>, path: String) throws(StoreError) -> Contents {
        guard bytes.count >= headerByteCount, bytes.starts(with: magic) else {
            throw .corrupt(object: path, reason: "not a hypernet key file")
        }
        let start = bytes.startIndex
        let fileVersion = bytes[start + magic.count]
        guard fileVersion == version else {
            if fileVersion > version { throw .unsupportedFormat(found: Int(fileVersion), supported: Int(version)) }
            throw .corrupt(object: path, reason: "unknown key file version \(fileVersion)")
        }
        guard let kind = Kind(rawValue: bytes[start + magic.count + 1]) else {
            throw .corrupt(object: path, reason: "unknown key kind \(bytes[start + magic.count + 1])")
        }
        return Contents(kind: kind, payload: SecureBytes(bytes[(start + headerByteCount)...]))
    }

    /// Writes `directory/file` as a new file (`PrivateFile.write`): link(2), unlike rename, never
    /// replaces, so two processes creating the same key at once cannot each believe its own key won.
    /// Returns false if the file already existed.
    /// `replacing: true` renames over an existing file instead (only for keys no identity relies on yet).
    @discardableResult
    static func create(
        _ directory: String, _ file: String, kind: Kind, payload: SecureBytes, replacing: Bool = false
    ) throws(StoreError) -> Bool {
        var contents = magic + [version, kind.rawValue] + payload.bytes
        defer { SecureMemory.zero(&contents) }
        return try PrivateFile.write(directory, file, contents: contents, replacing: replacing)
    }
}

/// Atomic creation of a private file (key files, identity exports).
enum PrivateFile {
    /// Writes `directory/file`: a temporary file (0600, O_EXCL) in the same directory, fsync, then
    /// link(2) to the final name (false if it already exists; nothing is replaced) or, with
    /// `replacing`, rename(2) over it; then fsync of the directory. The temporary file never stays.
    static func write(_ directory: String, _ file: String, contents: [UInt8], replacing: Bool) throws(StoreError)
        -> Bool
    {
        let path = directory + "/" + file
        let temporary = directory + "/." + file + "." + Hex.encode(SecureRandom.bytes(count: 8)) + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw .io(path: temporary, errno: errno) }
        defer { unlink(temporary) }
        do {
            defer { close(fd) }
            // The umask may have narrowed 0600 further; it never widens it. Make it exactly 0600.
            guard fchmod(fd, 0o600) == 0 else { throw .io(path: temporary, errno: errno) }
            var written = 0
            while written < contents.count {
                let n = contents.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + written, $0.count - written) }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw .io(path: temporary, errno: errno)
                }
                written += n
            }
            guard fsync(fd) == 0 else { throw .io(path: temporary, errno: errno) }
        }
        if replacing {
            guard rename(temporary, path) == 0 else { throw .io(path: path, errno: errno) }
        } else {
            guard link(temporary, path) == 0 else {
                if errno == EEXIST { return false }
                throw .io(path: path, errno: errno)
            }
        }
        try syncDirectory(directory)
        return true
    }

    private static func syncDirectory(_ directory: String) throws(StoreError) {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(path: directory, errno: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw .io(path: directory, errno: errno) }
    }
}

/// The errno of a failed read.
struct ReadFailure: Error {
    let errno: Int32
}

/// Reads from `fd` until `bytes` is full or the file ends; the count read, or the errno of a failed read.
func readFully(_ fd: Int32, into bytes: inout [UInt8]) -> Result<Int, ReadFailure> {
    var count = 0
    while count < bytes.count {
        let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + count, $0.count - count) }
        if n < 0 {
            if errno == EINTR { continue }
            return .failure(ReadFailure(errno: errno))
        }
        if n == 0 { break }
        count += n
    }
    return .success(count)
}
