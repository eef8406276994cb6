import Glibc
import HypernetCrypto
import HypernetModel

/// An identity moved between nodes (`hypernet id export` / `id import`): the identity's Ed25519 seed and
/// X25519 secret, its name, and the tree key (the epoch key of the owner's tree, without which another
/// node could not read the tree). Never the node key: every node has its own.
///
/// Always sealed under a passphrase. File format version 1 (docs/security.md, "Identity export file"),
/// all integers little-endian:
///
///     offset  size  field
///     0       8     magic "hnidexp\0"
///     8       1     format version (1)
///     9       1     key derivation algorithm: 2 = Argon2id v1.3 (libsodium crypto_pwhash_ALG_ARGON2ID13)
///     10      8     opslimit (u64)
///     18      8     memlimit in bytes (u64)
///     26      16    salt (random)
///     42      24    nonce (random)
///     66      ...   XChaCha20-Poly1305-IETF(key, nonce, plaintext, associated data = bytes 0..<66): ciphertext || tag (16)
///
///     key        = crypto_pwhash(32 bytes, passphrase, salt, opslimit, memlimit, algorithm)
///     plaintext  = Ed25519 seed (32) || X25519 secret key (32) || tree key (32) || name length (1) || name (UTF-8, 0...255)
///
/// A file of a newer version is refused before any passphrase is asked for; a wrong passphrase and any
/// change to the header or the ciphertext fail the same way (the AEAD tag), and nothing is installed.
public struct IdentityExport: Sendable {
    public let identity: SigningKeyPair
    public let identityBox: BoxKeyPair
    public let treeKey: SecureBytes
    public let name: String?

    public var identityToken: IdentityToken { IdentityToken(signing: identity.publicKey, box: identityBox.publicKey) }

    public static let magic: [UInt8] = Array("hnidexp".utf8) + [0]
    public static let version: UInt8 = 1
    public static let headerByteCount = 66
    static let keyByteCount = 32
    /// Seed, box secret, tree key, name length.
    static let fixedPlaintextByteCount = 3 * keyByteCount + 1
    /// The smallest and largest version-1 files (empty name, 255-byte name).
    public static let minimumByteCount = headerByteCount + fixedPlaintextByteCount + AEAD.tagByteCount
    public static let maximumByteCount = minimumByteCount + 255
    /// What `open` accepts from a header, so that a damaged or hostile file cannot ask for absurd work
    /// (the header is authenticated only after the key is derived). Far above anything written today.
    public static let maximumOpsLimit: UInt64 = 64
    public static let maximumMemLimit: UInt64 = 4 << 30

    /// What this node's keyring would export.
    public init(keyring: Keyring) {
        identity = keyring.identity
        identityBox = keyring.identityBox
        treeKey = keyring.treeKey
        name = keyring.name
    }

    public init(
        identity: SigningKeyPair, identityBox: BoxKeyPair, treeKey: SecureBytes, name: String?
    ) throws(IdentityExportError) {
        guard treeKey.count == Self.keyByteCount else {
            throw .damaged("tree key of \(treeKey.count) bytes, expected \(Self.keyByteCount)")
        }
        if let name, name.utf8.isEmpty || name.utf8.count > 255 {
            throw .damaged("identity name must be 1 to 255 bytes of UTF-8")
        }
        self.identity = identity
        self.identityBox = identityBox
        self.treeKey = treeKey
        self.name = name
    }

    // MARK: - Parameters

    /// The cost of new exports from `HYPERNET_PWHASH`: unset or empty or `moderate` (the default,
    /// libsodium's OPSLIMIT_MODERATE/MEMLIMIT_MODERATE), `interactive` (tests), `sensitive`.
    public static func parameters(environmentValue value: String?) throws(IdentityExportError)
        -> PasswordHash.Parameters
    {
        switch value ?? "" {
        case "", "moderate": return .moderate
        case "interactive": return .interactive
        case "sensitive": return .sensitive
        case let other:
            throw .invalidSetting("HYPERNET_PWHASH must be interactive, moderate or sensitive, not \(other)")
        }
    }

    // MARK: - Sealing and opening

    /// The header of an export file: everything before the ciphertext, and its associated data.
    public struct Header: Sendable {
        public let parameters: PasswordHash.Parameters
        public let salt: [UInt8]
        public let nonce: [UInt8]

        /// The 66 header bytes as written (the AEAD's associated data).
        var bytes: [UInt8] {
            var out = IdentityExport.magic + [IdentityExport.version, PasswordHash.argon2id13]
            withUnsafeBytes(of: parameters.opsLimit.littleEndian) { out.append(contentsOf: $0) }
            withUnsafeBytes(of: parameters.memLimit.littleEndian) { out.append(contentsOf: $0) }
            out += salt + nonce
            assert(out.count == IdentityExport.headerByteCount)
            return out
        }

        /// Checks everything that can be checked without the passphrase: magic, version, algorithm,
        /// parameters, length. Run it before asking for a passphrase.
        public static func parse(_ file: [UInt8]) throws(IdentityExportError) -> Header {
            let magic = IdentityExport.magic
            guard file.count >= magic.count + 1, file.starts(with: magic) else { throw .notAnExport }
            let version = file[magic.count]
            guard version == IdentityExport.version else {
                if version > IdentityExport.version {
                    throw .newerVersion(found: version, supported: IdentityExport.version)
                }
                throw .damaged("unknown format version \(version)")
            }
            guard file.count >= IdentityExport.minimumByteCount else { throw .damaged("truncated") }
            guard file.count <= IdentityExport.maximumByteCount else { throw .damaged("too long") }
            let algorithm = file[9]
            guard algorithm == PasswordHash.argon2id13 else {
                throw .unsupportedParameters("unknown key derivation algorithm \(algorithm)")
            }
            let parameters = PasswordHash.Parameters(opsLimit: u64(file, at: 10), memLimit: u64(file, at: 18))
            guard parameters.opsLimit >= PasswordHash.minimumOpsLimit,
                parameters.opsLimit <= IdentityExport.maximumOpsLimit,
                parameters.memLimit >= PasswordHash.minimumMemLimit,
                parameters.memLimit <= IdentityExport.maximumMemLimit
            else { throw .unsupportedParameters("key derivation \(parameters)") }
            return Header(
                parameters: parameters, salt: Array(file[26..<42]),
                nonce: Array(file[42..<IdentityExport.headerByteCount]))
        }

        private static func u64(_ bytes: [UInt8], at offset: Int) -> UInt64 {
            (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) }
        }
    }

    /// The export file's bytes, sealed under `passphrase` (fresh salt and nonce every time).
    public func sealed(passphrase: SecureBytes, parameters: PasswordHash.Parameters) throws(IdentityExportError)
        -> [UInt8]
    {
        guard passphrase.count > 0 else { throw .emptyPassphrase }
        guard parameters.opsLimit <= Self.maximumOpsLimit, parameters.memLimit <= Self.maximumMemLimit else {
            throw .unsupportedParameters("key derivation \(parameters) is above what import accepts")
        }
        let header = Header(
            parameters: parameters, salt: SecureRandom.bytes(count: PasswordHash.saltByteCount),
            nonce: SecureRandom.bytes(count: AEAD.nonceByteCount))
        let key = try Self.deriveKey(passphrase, header)
        let nameBytes = Array((name ?? "").utf8)
        var plaintext = identity.seed.bytes + identityBox.secretKey.bytes + treeKey.bytes
        plaintext += [UInt8(nameBytes.count)] + nameBytes
        defer { SecureMemory.zero(&plaintext) }
        let headerBytes = header.bytes
        return headerBytes + AEAD.seal(plaintext, key: key, nonce: header.nonce, associatedData: headerBytes)
    }

    /// Opens an export file's bytes. `wrongPassphraseOrDamaged` for a wrong passphrase or any change to
    /// the file after the header checks.
    public static func open(_ file: [UInt8], passphrase: SecureBytes) throws(IdentityExportError) -> IdentityExport {
        let header = try Header.parse(file)
        guard passphrase.count > 0 else { throw .emptyPassphrase }
        let key = try deriveKey(passphrase, header)
        var plaintext: [UInt8]
        do {
            plaintext = try AEAD.open(
                Array(file[headerByteCount...]), key: key, nonce: header.nonce,
                associatedData: Array(file[..<headerByteCount]))
        } catch {
            throw .wrongPassphraseOrDamaged
        }
        defer { SecureMemory.zero(&plaintext) }
        // Authentic, so written by a Hypernet; a mismatch here is a writer's bug, reported all the same.
        guard plaintext.count >= fixedPlaintextByteCount else {
            throw .damaged("payload of \(plaintext.count) bytes, expected at least \(fixedPlaintextByteCount)")
        }
        let nameLength = Int(plaintext[fixedPlaintextByteCount - 1])
        guard plaintext.count == fixedPlaintextByteCount + nameLength else {
            throw .damaged("payload of \(plaintext.count) bytes, expected \(fixedPlaintextByteCount + nameLength)")
        }
        guard let name = String(validating: plaintext[fixedPlaintextByteCount...], as: UTF8.self) else {
            throw .damaged("identity name is not UTF-8")
        }
        let k = keyByteCount
        let signing: SigningKeyPair
        let box: BoxKeyPair
        do {
            signing = try SigningKeyPair(seed: SecureBytes(plaintext[0..<k]))
            box = try BoxKeyPair(secretKey: SecureBytes(plaintext[k..<2 * k]))
        } catch {
            throw .damaged("\(error)")
        }
        return try IdentityExport(
            identity: signing, identityBox: box, treeKey: SecureBytes(plaintext[2 * k..<3 * k]),
            name: name.isEmpty ? nil : name)
    }

    private static func deriveKey(_ passphrase: SecureBytes, _ header: Header) throws(IdentityExportError)
        -> SecureBytes
    {
        do {
            return try PasswordHash.deriveKey(
                passphrase: passphrase, salt: header.salt, parameters: header.parameters,
                outputByteCount: AEAD.keyByteCount)
        } catch {
            throw .keyDerivation("\(error)")
        }
    }

    // MARK: - Files

    /// Writes the sealed export to `path` (0600, atomically: temporary file, fsync, link or rename,
    /// fsync of the directory). An existing file is kept and `exists` thrown, unless `replacing`.
    public func write(
        to path: String, passphrase: SecureBytes, parameters: PasswordHash.Parameters, replacing: Bool
    ) throws(IdentityExportError) {
        var bytes = try sealed(passphrase: passphrase, parameters: parameters)
        defer { SecureMemory.zero(&bytes) }
        let (directory, file) = Self.split(path)
        guard !file.isEmpty, file != ".", file != ".." else { throw .file(path: path, errno: EISDIR) }
        let created: Bool
        do {
            created = try PrivateFile.write(directory, file, contents: bytes, replacing: replacing)
        } catch {
            if case .io(let failed, let code) = error { throw .file(path: failed, errno: code) }
            throw .store(error)
        }
        guard created else { throw .exists(path) }
    }

    /// The bytes of the export file at `path`: at most `maximumByteCount + 1` of them, so that
    /// `Header.parse` can tell a file that is too long. Any readable file (also a pipe) will do.
    public static func read(_ path: String) throws(IdentityExportError) -> [UInt8] {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .file(path: path, errno: errno) }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: maximumByteCount + 1)
        let count = try readFully(fd, into: &bytes).mapError { IdentityExportError.file(path: path, errno: $0.errno) }
            .get()
        // Too long is decided by Header.parse, after magic and version: a newer version may be longer.
        return Array(bytes[..<count])
    }

    static func split(_ path: String) -> (directory: String, file: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = String(path[..<slash])
        return (directory.isEmpty ? "/" : directory, String(path[path.index(after: slash)...]))
    }

    // MARK: - Installing

    public enum InstallOutcome: Sendable {
        /// The keys were written; the home now has this identity.
        case installed
        /// The home already had this identity (and tree key): nothing was written.
        case alreadyPresent
    }

    /// Makes this the identity of `home`, whose keys directory has no identity yet: keeps or creates
    /// node.key, writes tree.key, then identity.key last (the keyring takes an identity.key to mean the
    /// other keys exist). A home that already has this identity and tree key is left as it is; any other
    /// identity is refused and nothing is changed.
    ///
    /// The caller keeps a daemon from starting meanwhile (the home lock); `hypernet init` running at the
    /// same time cannot make two identities: identity.key is created with link(2).
    public func install(into home: Home) throws(IdentityExportError) -> (keyring: Keyring, outcome: InstallOutcome) {
        let directory = home.keysDirectory
        if let outcome = try compareWithExisting(directory) { return outcome }
        // No identity. A store without one was written under keys that are gone (or under these keys:
        // a home restoring its own export); never put a different tree key under it.
        let storeExists = access(home.catalogPath, F_OK) == 0
        try keys { () throws(StoreError) in
            try Home.makeDirectory(directory)
            try Keyring.checkDirectory(directory)
            if try KeyFile.read(directory + "/" + Keyring.nodeFile) == nil {
                try KeyFile.create(
                    directory, Keyring.nodeFile, kind: .node, payload: .random(count: Keyring.secretByteCount))
            }
            _ = try Keyring.secret(directory, Keyring.nodeFile, kind: .node)  // a corrupt one fails now, not later
        }
        let existingTree = try keys { () throws(StoreError) in
            try KeyFile.read(directory + "/" + Keyring.treeFile) == nil
                ? nil : try Keyring.secret(directory, Keyring.treeFile, kind: .tree)
        }
        if !(existingTree?.isEqual(to: treeKey) ?? false) {
            guard !storeExists else { throw .orphanStore(home.storeDirectory) }
            // Without an identity and a store, a tree.key is the leftover of an interrupted init: unused,
            // so it is replaced. A new one is linked: a concurrent init's key is never overwritten.
            let replacing = existingTree != nil
            let written = try keys { () throws(StoreError) in
                try KeyFile.create(directory, Keyring.treeFile, kind: .tree, payload: treeKey, replacing: replacing)
            }
            guard written else { throw .concurrentChange(directory) }
        }
        let payload = Keyring.identityPayload(signing: identity, box: identityBox, name: name)
        let created = try keys { () throws(StoreError) in
            try KeyFile.create(directory, Keyring.identityFile, kind: .identity, payload: payload)
        }
        guard created else {
            // Someone (a concurrent init or import) created an identity first: judge it like any other.
            if let outcome = try compareWithExisting(directory) { return outcome }
            throw .concurrentChange(directory)
        }
        let keyring = try keys { () throws(StoreError) in try Keyring.load(directory: directory) }
        guard keyring.treeKey.isEqual(to: treeKey) else { throw .concurrentChange(directory) }
        return (keyring, .installed)
    }

    /// nil when `directory` holds no identity; the outcome when it holds this one; throws for another.
    private func compareWithExisting(_ directory: String) throws(IdentityExportError) -> (
        keyring: Keyring, outcome: InstallOutcome
    )? {
        let identityPath = directory + "/" + Keyring.identityFile
        guard access(directory, F_OK) == 0 else { return nil }
        let existing = try keys { () throws(StoreError) -> IdentityToken? in
            try Keyring.checkDirectory(directory)
            guard let contents = try KeyFile.read(identityPath) else { return nil }
            let (signing, box, _) = try Keyring.parseIdentity(contents, path: identityPath)
            return IdentityToken(signing: signing.publicKey, box: box.publicKey)
        }
        guard let existing else { return nil }
        guard existing == identityToken else { throw .differentIdentity(existing: existing) }
        let keyring = try keys { () throws(StoreError) in try Keyring.load(directory: directory) }
        guard keyring.treeKey.isEqual(to: treeKey) else { throw .differentTreeKey }
        return (keyring, .alreadyPresent)
    }

    /// Runs key-directory work, reporting its failures as `store`.
    @discardableResult
    private func keys<T>(_ body: () throws(StoreError) -> T) throws(IdentityExportError) -> T {
        do { return try body() } catch { throw .store(error) }
    }
}

/// Why an export or import failed. `description` is the one line the CLI prints.
public enum IdentityExportError: Error, Sendable, CustomStringConvertible {
    /// No export magic: some other file.
    case notAnExport
    case newerVersion(found: UInt8, supported: UInt8)
    /// Truncated, or malformed in a way the tag cannot catch (checked before the passphrase).
    case damaged(String)
    case unsupportedParameters(String)
    /// The AEAD tag did not verify: a wrong passphrase, or any changed byte.
    case wrongPassphraseOrDamaged
    case emptyPassphrase
    case keyDerivation(String)
    case invalidSetting(String)
    /// The home has another identity; nothing was changed.
    case differentIdentity(existing: IdentityToken)
    /// The home has this identity with another tree key (not made by Hypernet); nothing was changed.
    case differentTreeKey
    /// The home has a store but no identity; a different tree key would leave it unreadable.
    case orphanStore(String)
    /// Key files changed while installing (another init or import); run the import again.
    case concurrentChange(String)
    /// The export file already exists.
    case exists(String)
    /// Reading or writing the export file.
    case file(path: String, errno: Int32)
    /// The keys directory.
    case store(StoreError)

    public var description: String {
        switch self {
        case .notAnExport: return "not a hypernet identity export file"
        case .newerVersion(let found, let supported):
            return "identity export format \(found) is newer than this hypernet understands (\(supported)); "
                + "upgrade hypernet"
        case .damaged(let why): return "damaged identity export file (\(why))"
        case .unsupportedParameters(let why): return "unsupported identity export file: \(why)"
        case .wrongPassphraseOrDamaged: return "wrong passphrase or damaged file"
        case .emptyPassphrase: return "the passphrase is empty"
        case .keyDerivation(let why): return "cannot derive the key from the passphrase: \(why)"
        case .invalidSetting(let why): return why
        case .differentIdentity(let existing):
            return "this home already has another identity (\(existing)); nothing was changed "
                + "(import into a home without an identity)"
        case .differentTreeKey:
            return "this home already has this identity but with a different tree key; nothing was changed"
        case .orphanStore(let store):
            return "\(store) exists but the home has no identity; importing a tree key would leave it "
                + "unreadable; move it away first"
        case .concurrentChange(let directory):
            return "the keys in \(directory) changed during the import (another init or import?); try again"
        case .exists(let path): return "\(path) already exists (use --force to replace it)"
        case .file(let path, let code): return "\(path): \(String(cString: strerror(code)))"
        case .store(let error): return "\(error)"
        }
    }
}
