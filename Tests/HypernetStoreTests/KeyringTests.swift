import Glibc
import HypernetCrypto
import HypernetStore
import Testing

@Suite struct KeyringTests {
    /// A fresh private directory, removed by the caller through `removeTree`.
    static func temporaryDirectory() -> String {
        var template = Array("/tmp/hypernet-keyring-XXXXXX".utf8CString)
        let path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        return path
    }

    /// Removes what these tests create: ROOT/keys/* , ROOT/keys, ROOT.
    static func removeTree(_ root: String) {
        for name in names(root + "/keys") { unlink(root + "/keys/" + name) }
        rmdir(root + "/keys")
        rmdir(root)
    }

    /// Entry names, "." and ".." excluded.
    static func names(_ directory: String) -> [String] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(cString: $0.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    static func mode(_ path: String) -> mode_t {
        var info = stat()
        precondition(stat(path, &info) == 0)
        return info.st_mode & 0o777
    }

    static func overwrite(_ path: String, _ bytes: [UInt8]) {
        let fd = open(path, O_WRONLY | O_TRUNC)
        precondition(fd >= 0)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    static func contents(_ path: String) -> [UInt8] {
        let fd = open(path, O_RDONLY)
        precondition(fd >= 0)
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        return Array(buffer.prefix(n))
    }

    @Test func createReloadSameKeys() throws {
        let root = Self.temporaryDirectory()
        defer { Self.removeTree(root) }
        let directory = root + "/keys"

        #expect(throws: StoreError.self) { try Keyring.load(directory: directory) }
        let (keyring, created) = try Keyring.loadOrCreate(directory: directory, name: "alice")
        #expect(created)
        #expect(keyring.name == "alice")
        #expect(keyring.treeKey.count == 32)
        #expect(keyring.identity.publicKey != keyring.node.publicKey)

        let again = try Keyring.loadOrCreate(directory: directory, name: "someone else")
        #expect(!again.created)
        #expect(again.keyring.name == "alice")
        let loaded = try Keyring.load(directory: directory)
        for other in [again.keyring, loaded] {
            #expect(other.identity.publicKey == keyring.identity.publicKey)
            #expect(other.identityBox.publicKey == keyring.identityBox.publicKey)
            #expect(other.node.publicKey == keyring.node.publicKey)
            #expect(other.treeKey.isEqual(to: keyring.treeKey))
            #expect(other.identityToken == keyring.identityToken)
        }
        #expect(keyring.identityToken.signing == keyring.identity.publicKey)

        #expect(Self.mode(directory) == 0o700)
        for file in ["identity.key", "node.key", "tree.key"] {
            #expect(Self.mode(directory + "/" + file) == 0o600, "\(file)")
        }
        // Only the three key files: no temporary file left behind.
        let names = Self.names(directory)
        #expect(names.sorted() == ["identity.key", "node.key", "tree.key"])
    }

    @Test func unnamedIdentityAndMissingNodeKeyIsRecreated() throws {
        let root = Self.temporaryDirectory()
        defer { Self.removeTree(root) }
        let directory = root + "/keys"
        let first = try Keyring.loadOrCreate(directory: directory, name: nil).keyring
        #expect(first.name == nil)
        unlink(directory + "/node.key")
        #expect(throws: StoreError.self) { try Keyring.load(directory: directory) }
        let (second, created) = try Keyring.loadOrCreate(directory: directory, name: nil)
        #expect(!created)
        #expect(second.identity.publicKey == first.identity.publicKey)
        #expect(second.node.publicKey != first.node.publicKey)
    }

    @Test func refusesBadFiles() throws {
        let root = Self.temporaryDirectory()
        defer { Self.removeTree(root) }
        let directory = root + "/keys"
        _ = try Keyring.loadOrCreate(directory: directory, name: "bob")
        let identity = directory + "/identity.key"
        let good = Self.contents(identity)

        func expectFailure(
            _ bytes: [UInt8], _ check: (StoreError) -> Bool, sourceLocation: SourceLocation = #_sourceLocation
        ) {
            Self.overwrite(identity, bytes)
            do {
                _ = try Keyring.load(directory: directory)
                Issue.record("loaded a bad identity file", sourceLocation: sourceLocation)
            } catch {
                #expect(check(error), "\(error)", sourceLocation: sourceLocation)
            }
        }
        func isCorrupt(_ e: StoreError) -> Bool { if case .corrupt = e { true } else { false } }

        expectFailure([], isCorrupt)
        expectFailure(Array("hello world, not a key".utf8), isCorrupt)
        expectFailure(Array(good.dropLast()), isCorrupt)
        expectFailure(good + [0], isCorrupt)
        var wrongKind = good
        wrongKind[9] = 3
        expectFailure(wrongKind, isCorrupt)
        var newer = good
        newer[8] = 2
        expectFailure(newer) { if case .unsupportedFormat(found: 2, supported: 1) = $0 { true } else { false } }
        var badName = good
        badName[badName.count - 1] = 0xff
        expectFailure(badName, isCorrupt)

        Self.overwrite(identity, good)
        #expect(throws: Never.self) { try Keyring.load(directory: directory) }
        chmod(identity, 0o644)
        #expect {
            try Keyring.load(directory: directory)
        } throws: { error in
            if case .invalid(let why) = error as! StoreError { why.contains("chmod 600") } else { false }
        }
        chmod(identity, 0o600)
        chmod(directory, 0o755)
        #expect(throws: StoreError.self) { try Keyring.load(directory: directory) }
        chmod(directory, 0o700)
        #expect(throws: StoreError.self) { try Keyring.loadOrCreate(directory: directory, name: "") }
    }

    @Test func concurrentCreationAgreesOnOneIdentity() async throws {
        let root = Self.temporaryDirectory()
        defer { Self.removeTree(root) }
        let directory = root + "/keys"
        let tokens = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    try Keyring.loadOrCreate(directory: directory, name: nil).keyring.identityToken.description
                }
            }
            return try await group.reduce(into: Set<String>()) { $0.insert($1) }
        }
        #expect(tokens.count == 1)
    }
}
