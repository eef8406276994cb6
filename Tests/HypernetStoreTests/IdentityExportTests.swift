import Glibc
import HypernetCrypto
import HypernetModel
import HypernetStore
import Testing

@Suite struct IdentityExportTests {
    /// The cheapest parameters libsodium accepts: the format, not Argon2id's cost, is under test here.
    static let fast = PasswordHash.Parameters(opsLimit: 1, memLimit: 8192)
    static let passphrase = SecureBytes(Array("correct horse battery staple".utf8))

    /// A fresh private directory; removed with `remove`.
    static func temporaryDirectory() -> String {
        var template = Array("/tmp/hypernet-idexport-XXXXXX".utf8CString)
        return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }

    /// rm -r.
    static func remove(_ path: String) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        if info.st_mode & S_IFMT == S_IFDIR {
            for name in names(path) { remove(path + "/" + name) }
            rmdir(path)
        } else {
            unlink(path)
        }
    }

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
        return names.sorted()
    }

    static func contents(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        return Array(buffer.prefix(max(n, 0)))
    }

    /// Every file under `root` with its bytes, to show that a refused import changed nothing.
    static func snapshot(_ root: String) -> [String: [UInt8]] {
        var result: [String: [UInt8]] = [:]
        for name in names(root) {
            let path = root + "/" + name
            var info = stat()
            guard lstat(path, &info) == 0 else { continue }
            if info.st_mode & S_IFMT == S_IFDIR {
                result[path + "/"] = []
                result.merge(snapshot(path)) { a, _ in a }
            } else {
                result[path] = contents(path) ?? []
            }
        }
        return result
    }

    static func makeKeyring(_ home: String, name: String?) throws -> Keyring {
        try Keyring.loadOrCreate(directory: home + "/keys", name: name).keyring
    }

    static func sameSecrets(_ a: IdentityExport, _ b: Keyring) -> Bool {
        a.identityToken == b.identityToken && a.identity.seed.isEqual(to: b.identity.seed)
            && a.identityBox.secretKey.isEqual(to: b.identityBox.secretKey) && a.treeKey.isEqual(to: b.treeKey)
            && a.name == b.name
    }

    @Test func roundTripCarriesIdentityTreeKeyAndName() throws {
        let root = Self.temporaryDirectory()
        defer { Self.remove(root) }
        let keyring = try Self.makeKeyring(root + "/a", name: "alice")
        let file = try IdentityExport(keyring: keyring).sealed(passphrase: Self.passphrase, parameters: Self.fast)
        #expect(file.count == IdentityExport.minimumByteCount + "alice".utf8.count)
        #expect(file.starts(with: Array("hnidexp".utf8) + [0, 1, PasswordHash.argon2id13]))

        let opened = try IdentityExport.open(file, passphrase: Self.passphrase)
        #expect(Self.sameSecrets(opened, keyring))
        let header = try IdentityExport.Header.parse(file)
        #expect(header.parameters == Self.fast)

        // Salt and nonce are fresh: the same identity never seals to the same bytes.
        let again = try IdentityExport(keyring: keyring).sealed(passphrase: Self.passphrase, parameters: Self.fast)
        #expect(again != file)
        #expect(Array(again[26..<66]) != Array(file[26..<66]))

        // An unnamed identity, and a 255-byte name, both round-trip.
        for name in [nil, String(repeating: "é", count: 127) + "x"] as [String?] {
            let other = try IdentityExport(
                identity: .generate(), identityBox: .generate(), treeKey: .random(count: 32), name: name)
            let bytes = try other.sealed(passphrase: Self.passphrase, parameters: Self.fast)
            let back = try IdentityExport.open(bytes, passphrase: Self.passphrase)
            #expect(back.identityToken == other.identityToken)
            #expect(back.treeKey.isEqual(to: other.treeKey))
            #expect(back.name == name)
        }
    }

    /// A version-1 file written independently of this code (Python calling libsodium directly, following
    /// docs/security.md): salt 00...0f, nonce 64...7b, opslimit 1, memlimit 8192, passphrase
    /// "golden passphrase", seed 01×32, X25519 secret 02×32, tree key 03×32, name "golden".
    /// If this stops opening, the format changed and every export already written would too.
    static let golden =
        "686e696465787000010201000000000000000020000000000000000102030405060708090a0b0c0d0e0f6465666768"
        + "696a6b6c6d6e6f707172737475767778797a7bc5087c40d3fb62d00504318e4502377596d477ba529db77a496a49"
        + "89d4bb81f91662d6f31d12dca9caa9b6bc2f4835ee6eb4e839a004fdae895123ccb1c8b765008a50a093af6f5d39f7"
        + "032f3821fb5ba8990cdfa7b3fcfc571dd756647d7900665ee8e603a47b8560873c20d9ce42265f4fa7bf0cc39d"

    @Test func opensAFileWrittenByAnotherImplementation() throws {
        let file = try #require(Hex.decode(Self.golden))
        let opened = try IdentityExport.open(file, passphrase: SecureBytes(Array("golden passphrase".utf8)))
        #expect(opened.identity.seed.bytes == [UInt8](repeating: 1, count: 32))
        #expect(opened.identityBox.secretKey.bytes == [UInt8](repeating: 2, count: 32))
        #expect(opened.treeKey.bytes == [UInt8](repeating: 3, count: 32))
        #expect(opened.name == "golden")
        let expected = try SigningKeyPair(seed: SecureBytes([UInt8](repeating: 1, count: 32)))
        #expect(opened.identity.publicKey == expected.publicKey)
    }

    @Test func headerRecordsTheParameters() throws {
        let keyring = try IdentityExport(
            identity: .generate(), identityBox: .generate(), treeKey: .random(count: 32), name: nil)
        let bytes = try keyring.sealed(passphrase: Self.passphrase, parameters: .interactive)
        let header = try IdentityExport.Header.parse(bytes)
        #expect(header.parameters == .interactive)
        #expect(bytes[9] == 2)  // crypto_pwhash_ALG_ARGON2ID13
        // Little-endian u64 opslimit at 10, memlimit at 18.
        #expect(
            bytes[10..<18].elementsEqual(
                withUnsafeBytes(of: PasswordHash.Parameters.interactive.opsLimit.littleEndian) { Array($0) }))
        #expect(
            bytes[18..<26].elementsEqual(
                withUnsafeBytes(of: PasswordHash.Parameters.interactive.memLimit.littleEndian) { Array($0) }))
        #expect(try IdentityExport.open(bytes, passphrase: Self.passphrase).identityToken == keyring.identityToken)
    }

    @Test func wrongPassphraseIsRefused() throws {
        let export = try IdentityExport(
            identity: .generate(), identityBox: .generate(), treeKey: .random(count: 32), name: "bob")
        let file = try export.sealed(passphrase: Self.passphrase, parameters: Self.fast)
        for wrong in ["correct horse battery stapl", "Correct horse battery staple", "x"] {
            #expect {
                try IdentityExport.open(file, passphrase: SecureBytes(Array(wrong.utf8)))
            } throws: { error in
                guard case .wrongPassphraseOrDamaged = error as? IdentityExportError else { return false }
                return "\(error)" == "wrong passphrase or damaged file"
            }
        }
        #expect(throws: IdentityExportError.self) { try IdentityExport.open(file, passphrase: SecureBytes([])) }
        #expect(throws: IdentityExportError.self) {
            try export.sealed(passphrase: SecureBytes([]), parameters: Self.fast)
        }
    }

    @Test func everyTruncationIsRefused() throws {
        let export = try IdentityExport(
            identity: .generate(), identityBox: .generate(), treeKey: .random(count: 32), name: "carol")
        let file = try export.sealed(passphrase: Self.passphrase, parameters: Self.fast)
        for length in 0..<file.count {
            #expect(throws: IdentityExportError.self, "truncated to \(length)") {
                try IdentityExport.open(Array(file[..<length]), passphrase: Self.passphrase)
            }
        }
        #expect(throws: IdentityExportError.self) {
            try IdentityExport.open(file + [0], passphrase: Self.passphrase)
        }
    }

    @Test func everyBitFlipIsRefused() throws {
        let export = try IdentityExport(
            identity: .generate(), identityBox: .generate(), treeKey: .random(count: 32), name: "dave")
        let file = try export.sealed(passphrase: Self.passphrase, parameters: Self.fast)
        for index in 0..<file.count {
            // In the header, one bit per byte: a high bit of memlimit would ask for gigabytes (refused
            // or not, the tag fails; it would only make the test slow). Everywhere else, every bit.
            let bits: [UInt8] = index < IdentityExport.headerByteCount ? [1] : (0..<8).map { 1 << $0 }
            for bit in bits {
                var damaged = file
                damaged[index] ^= bit
                #expect(throws: IdentityExportError.self, "byte \(index) bit \(bit)") {
                    try IdentityExport.open(damaged, passphrase: Self.passphrase)
                }
            }
        }
    }

    @Test func newerVersionIsRefusedBeforeThePassphrase() throws {
        let export = try IdentityExport(
            identity: .generate(), identityBox: .generate(), treeKey: .random(count: 32), name: nil)
        var file = try export.sealed(passphrase: Self.passphrase, parameters: Self.fast)
        file[8] = 2
        for bytes in [file, Array(file[..<9]), file + Array(repeating: 7, count: 5000)] {
            #expect {
                try IdentityExport.Header.parse(bytes)
            } throws: { error in
                guard case .newerVersion(found: 2, supported: 1) = error as? IdentityExportError else { return false }
                return "\(error)".contains("newer")
            }
        }
        file[8] = 0
        #expect(throws: IdentityExportError.self) { try IdentityExport.Header.parse(file) }
        #expect {
            try IdentityExport.Header.parse(Array("hnkey\0\0\0 something else entirely".utf8))
        } throws: { error in
            if case .notAnExport = error as? IdentityExportError { true } else { false }
        }
    }

    @Test func absurdParametersAreRefusedBeforeDerivation() throws {
        let export = try IdentityExport(
            identity: .generate(), identityBox: .generate(), treeKey: .random(count: 32), name: nil)
        let file = try export.sealed(passphrase: Self.passphrase, parameters: Self.fast)
        var huge = file
        huge[25] = 0x80  // memlimit 2^63
        var zero = file
        for i in 10..<18 { zero[i] = 0 }  // opslimit 0
        var algorithm = file
        algorithm[9] = 1  // Argon2i: not what version 1 uses
        for bytes in [huge, zero, algorithm] {
            #expect {
                try IdentityExport.Header.parse(bytes)
            } throws: { error in
                if case .unsupportedParameters = error as? IdentityExportError { true } else { false }
            }
        }
    }

    @Test func environmentSelectsTheCost() throws {
        #expect(try IdentityExport.parameters(environmentValue: nil) == .moderate)
        #expect(try IdentityExport.parameters(environmentValue: "") == .moderate)
        #expect(try IdentityExport.parameters(environmentValue: "moderate") == .moderate)
        #expect(try IdentityExport.parameters(environmentValue: "interactive") == .interactive)
        #expect(throws: IdentityExportError.self) { try IdentityExport.parameters(environmentValue: "fast") }
        #expect(PasswordHash.Parameters.moderate.memLimit == 256 << 20)
        #expect(PasswordHash.Parameters.interactive.memLimit == 64 << 20)
    }

    @Test func fileIsPrivateAndNeverSilentlyReplaced() throws {
        let root = Self.temporaryDirectory()
        defer { Self.remove(root) }
        let keyring = try Self.makeKeyring(root + "/a", name: "erin")
        let export = IdentityExport(keyring: keyring)
        let path = root + "/erin.hnid"
        try export.write(to: path, passphrase: Self.passphrase, parameters: Self.fast, replacing: false)
        var info = stat()
        #expect(stat(path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        let first = try IdentityExport.read(path)
        #expect(Self.sameSecrets(try IdentityExport.open(first, passphrase: Self.passphrase), keyring))

        #expect {
            try export.write(to: path, passphrase: Self.passphrase, parameters: Self.fast, replacing: false)
        } throws: { error in
            if case .exists = error as? IdentityExportError { true } else { false }
        }
        #expect(try IdentityExport.read(path) == first)
        try export.write(to: path, passphrase: Self.passphrase, parameters: Self.fast, replacing: true)
        #expect(try IdentityExport.read(path) != first)
        // No temporary file left beside it.
        #expect(Self.names(root) == ["a", "erin.hnid"])
        #expect(throws: IdentityExportError.self) { try IdentityExport.read(root + "/missing") }
    }

    @Test func installIntoAFreshHome() throws {
        let root = Self.temporaryDirectory()
        defer { Self.remove(root) }
        let original = try Self.makeKeyring(root + "/a", name: "frank")
        let file = try IdentityExport(keyring: original).sealed(passphrase: Self.passphrase, parameters: Self.fast)
        let opened = try IdentityExport.open(file, passphrase: Self.passphrase)

        let home = Home(path: root + "/b")
        let (installed, outcome) = try opened.install(into: home)
        guard case .installed = outcome else {
            Issue.record("expected installed, got \(outcome)")
            return
        }
        let loaded = try Keyring.load(directory: home.keysDirectory)
        for keyring in [installed, loaded] {
            #expect(keyring.identityToken == original.identityToken)
            #expect(keyring.identity.seed.isEqual(to: original.identity.seed))
            #expect(keyring.identityBox.secretKey.isEqual(to: original.identityBox.secretKey))
            #expect(keyring.treeKey.isEqual(to: original.treeKey))
            #expect(keyring.name == "frank")
            #expect(keyring.node.publicKey != original.node.publicKey)  // every node has its own
        }
        #expect(Self.names(home.keysDirectory) == ["identity.key", "node.key", "tree.key"])
        #expect(Self.contents(home.keysDirectory + "/tree.key") == Self.contents(root + "/a/keys/tree.key"))

        // The same identity again: nothing written.
        let before = Self.snapshot(home.path)
        let (_, second) = try opened.install(into: home)
        guard case .alreadyPresent = second else {
            Issue.record("expected alreadyPresent, got \(second)")
            return
        }
        #expect(Self.snapshot(home.path) == before)
        // And the home it came from is already home.
        guard case .alreadyPresent = try opened.install(into: Home(path: root + "/a")).outcome else {
            Issue.record("the exporting home did not recognise its own identity")
            return
        }
    }

    @Test func installRefusesAnotherIdentityAndChangesNothing() throws {
        let root = Self.temporaryDirectory()
        defer { Self.remove(root) }
        let alice = try Self.makeKeyring(root + "/a", name: "alice")
        let bob = try Self.makeKeyring(root + "/b", name: "bob")
        let before = Self.snapshot(root + "/b")
        #expect {
            try IdentityExport(keyring: alice).install(into: Home(path: root + "/b"))
        } throws: { error in
            guard case .differentIdentity(let existing) = error as? IdentityExportError else { return false }
            return existing == bob.identityToken
        }
        #expect(Self.snapshot(root + "/b") == before)
    }

    @Test func installReplacesALeftoverTreeKeyButNeverUnderAStore() throws {
        let root = Self.temporaryDirectory()
        defer { Self.remove(root) }
        let export = try IdentityExport(
            identity: .generate(), identityBox: .generate(), treeKey: .random(count: 32), name: nil)

        // An init interrupted before identity.key: node.key and tree.key, no identity, no store.
        let leftover = Home(path: root + "/left")
        _ = try Self.makeKeyring(leftover.path, name: nil)
        unlink(leftover.keysDirectory + "/identity.key")
        let node = Self.contents(leftover.keysDirectory + "/node.key")
        let (keyring, _) = try export.install(into: leftover)
        #expect(keyring.treeKey.isEqual(to: export.treeKey))
        #expect(Self.contents(leftover.keysDirectory + "/node.key") == node)  // the node key is kept

        // The same with a store present: its data is under the old tree key; refused, unchanged.
        let stored = Home(path: root + "/stored")
        _ = try Self.makeKeyring(stored.path, name: nil)
        unlink(stored.keysDirectory + "/identity.key")
        try Home.makeDirectory(stored.storeDirectory)
        close(open(stored.catalogPath, O_CREAT | O_WRONLY, 0o600))
        let before = Self.snapshot(stored.path)
        #expect {
            try export.install(into: stored)
        } throws: { error in
            if case .orphanStore = error as? IdentityExportError { true } else { false }
        }
        #expect(Self.snapshot(stored.path) == before)
    }
}
