// hypernet-forge: a modified node for tests (tests/integration/test_forgery.py).
//
// A node build that cheats: it writes forged records straight into a *stopped* node's catalog
// (HOME/store/catalog.sqlite) and packs, skipping every check an honest node applies to what it stores. When
// that node's ordinary daemon starts again it serves them to its peers in its log of the tree, since a log is
// served from the catalog as it stands (`Store.log`: the `revisions` and `blocks` rows in seq order), never
// re-verified. Every honest receiver must refuse them (docs/protocol.md, "Storing received revisions").
//
//   hypernet-forge --home HOME --tree OWNER --document HEX MODE [--epoch N] [--content TEXT]
//
// HOME is the forging node's home: its identity ("bob") signs whatever needs a signature. OWNER is the tree's
// owner ("alice"), an identity token or 64 hex digits of its signing key; HEX a document of that tree (32 hex
// digits). Revision modes forge a revision of that document (a file); block modes forge a block of the chain
// that governs it (its own, else the one its heads were written under). The forged rows get the next seq
// (one more than the greatest of `revisions` and `blocks`), shaped as `StoreTransaction.insert` writes them.
// Prints the forged record's id (64 hex digits); `swapped-chunk` prints the swapped chunk's id on a second
// line. Exit status: 0 forged; 1 not (a daemon holds HOME, or the store lacks what the mode needs); 2 usage.
//
// Modes, and what an honest receiver does with them:
//   revoked-writer     a file revision signed by this identity naming an old epoch of the chain (--epoch,
//                      default 0) in which it held `write`, though the current block no longer gives it.
//                      Parents: the document's heads here; metadata and content sealed under that epoch's key,
//                      which this identity still holds. Refused for good: "author has no right for it".
//   swapped-chunk      a revision this identity may make (--epoch, default the current one: run it while it
//                      holds `write`) whose data chunk this store serves with other bytes: the chunk's catalog
//                      row points at a pack record carrying the chunk's id in front of random bytes. The node
//                      checks what it serves and answers "not held" (a damaged chunk, to be fetched again); a
//                      receiver checks every chunk against its id as well. The revision lacks a chunk, a transient
//                      rejection: it is never stored, and is asked for again on every later connection.
//   unauthorised-delete  a tombstone of the document signed by this identity, naming the current epoch (--epoch
//                      to choose another), in which it holds no `delete` (a reader, or a writer without it).
//                      Refused for good: "author has no right for it"; the document stays.
//   hostile-names      a directory revision of the document (a directory; --epoch as for swapped-chunk: run it
//                      while this identity holds `write`) listing what its head lists plus entries named "", ".",
//                      "..", "a/b", "nul\0byte" and 256 bytes, each naming a new document. The revision is one
//                      this identity may make, so every node stores it; a node that shows the directory must
//                      leave the invalid names out ("names no file may have"), never hand them to the kernel.
//   edited-block       the next block, with this identity made an admin, carrying the current block's signer and
//                      signature (an edit of a signed block): the signature does not verify. A receiver cannot
//                      decode it ("rejected a log record: invalid permission block signature", a line that names
//                      no id, since the record did not decode).
//   self-signed-block  a well-formed next block making this identity an admin, signed by this identity, which is
//                      no admin of the current block: "permission block refused: the signer is not an admin".
//   rolled-back-block  a different block for the current epoch (previous = the block before it), signed by this
//                      identity, making it an admin: a fork. This store's own rows from that epoch on are deleted
//                      first (one block per epoch). A receiver holding the current epoch refuses it as not the
//                      next link: "epoch N where N+1 is next (replayed, rolled back or out of order)".
//   replayed-block     the chain's epoch-0 block, its exact signed bytes, made the newest record of this store's
//                      log (its seq moved to the end; a row cannot be inserted twice), after deleting this store's
//                      rows of the later epochs: this node rolls its own chain back to epoch 0 and serves the old
//                      block as its latest word. The block is genuine, so there is nothing to reject: a receiver
//                      that holds it skips it as no news (no log line), keeps its one row of it at its old seq,
//                      its later epochs and its rights. What is testable is that nothing changes there while the
//                      receiver's progress moves past the replay. A *different* block for an epoch already held
//                      is `rolled-back-block`.
//
// It refuses to run while a daemon holds HOME (the flock on HOME/daemon.pid) and holds that lock while it writes.

import Foundation
import GRDB
import Glibc
import HypernetCrypto
import HypernetModel
import HypernetStore
import Logging

enum Mode: String, CaseIterable {
    case revokedWriter = "revoked-writer"
    case swappedChunk = "swapped-chunk"
    case unauthorisedDelete = "unauthorised-delete"
    case hostileNames = "hostile-names"
    case editedBlock = "edited-block"
    case selfSignedBlock = "self-signed-block"
    case rolledBackBlock = "rolled-back-block"
    case replayedBlock = "replayed-block"
}

struct Options {
    var home: String
    var tree: SigningPublicKey
    var document: DocumentID
    var mode: Mode
    var epoch: UInt32?
    var content: String
}

struct ForgeError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

let usage = """
    usage: hypernet-forge --home HOME --tree OWNER --document HEX MODE [--epoch N] [--content TEXT]
    modes: \(Mode.allCases.map(\.rawValue).joined(separator: " "))
    OWNER: the tree owner's identity token (hn1...) or signing key (64 hex digits); HEX: a document id (32 hex digits)
    --epoch N: the epoch a forged revision names (revoked-writer: default 0; swapped-chunk: default the current one)
    --content TEXT: a forged revision's file content (default "forged by hypernet-forge\\n")
    The daemon of HOME must be stopped. Prints the forged record's id (swapped-chunk: then the swapped chunk's id).
    """

func fail(_ message: String, code: Int32) -> Never {
    FileHandle.standardError.write(Data("hypernet-forge: \(message)\n".utf8))
    exit(code)
}

func parseOptions() -> Options {
    var args = CommandLine.arguments.dropFirst()
    var home: String?
    var tree: SigningPublicKey?
    var document: DocumentID?
    var mode: Mode?
    var epoch: UInt32?
    var content = "forged by hypernet-forge\n"
    func value(_ name: String) -> String {
        guard let v = args.popFirst() else { fail("\(name) needs a value\n\(usage)", code: 2) }
        return v
    }
    while let a = args.popFirst() {
        switch a {
        case "--home": home = value(a)
        case "--tree":
            let v = value(a)
            if let token = IdentityToken(v) {
                tree = token.signing
            } else if v.utf8.count == 64, let bytes = Hex.decode(v), let key = try? SigningPublicKey(bytes: bytes) {
                tree = key
            } else {
                fail("--tree: not an identity token or a 64-hex-digit key: \(v)", code: 2)
            }
        case "--document":
            let v = value(a)
            guard let bytes = Hex.decode(v), let id = try? DocumentID(bytes: bytes) else {
                fail("--document: not 32 hex digits: \(v)", code: 2)
            }
            document = id
        case "--epoch":
            guard let n = UInt32(value(a)) else { fail("--epoch must be a number from 0", code: 2) }
            epoch = n
        case "--content": content = value(a)
        case "-h", "--help":
            print(usage)
            exit(0)
        default:
            guard mode == nil, let m = Mode(rawValue: a) else { fail("unknown argument \(a)\n\(usage)", code: 2) }
            mode = m
        }
    }
    guard let home, let tree, let document, let mode else {
        fail("--home, --tree, --document and a mode are required\n\(usage)", code: 2)
    }
    return Options(home: home, tree: tree, document: document, mode: mode, epoch: epoch, content: content)
}

/// Takes the home's daemon lock (as `hypernet fsck` does offline), so no daemon runs while the rows are forged.
/// The descriptor stays open until exit.
func lockHome(_ home: Home) -> Int32 {
    let fd = open(home.pidPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
    guard fd >= 0 else { fail("\(home.pidPath): \(String(cString: strerror(errno)))", code: 1) }
    guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { fail("a daemon holds \(home.path): stop it first", code: 1) }
    return fd
}

struct Forger {
    let options: Options
    let home: Home
    let keyring: Keyring
    let store: Store
    /// A second connection to the catalog: the store's own is not public, and honest code never writes these rows.
    let catalog: DatabaseQueue

    init(options: Options, home: Home) throws {
        self.options = options
        self.home = home
        keyring = try Keyring.load(directory: home.keysDirectory)
        var logger = Logger(label: "hypernet-forge")
        logger.logLevel = .warning
        store = try Store(home: home, keyring: keyring, logger: logger)
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        catalog = try DatabaseQueue(path: home.catalogPath, configuration: configuration)
    }

    func run() throws -> [String] {
        let owner = try catalog.read { db in
            try Data.fetchOne(
                db, sql: "SELECT tree FROM revisions WHERE document = ? LIMIT 1",
                arguments: [Data(options.document.bytes)])
        }
        guard let owner else { throw ForgeError("document \(options.document) has no revision in this store") }
        guard Array(owner) == options.tree.bytes else {
            throw ForgeError("document \(options.document) belongs to tree \(Hex.encode(owner)), not to --tree")
        }
        switch options.mode {
        case .revokedWriter, .swappedChunk, .unauthorisedDelete, .hostileNames: return try forgeRevision()
        case .editedBlock, .selfSignedBlock, .rolledBackBlock, .replayedBlock: return [try forgeBlock().hex]
        }
    }

    /// The document whose chain governs `options.document`: its own, else the one its heads were written under.
    func chainDocument() throws -> DocumentID {
        if try !store.chain(of: options.document, tree: options.tree).blocks.isEmpty { return options.document }
        guard let rights = try store.governingChain(of: options.document) else {
            throw ForgeError("document \(options.document) is governed by no chain: only its owner writes it")
        }
        return rights
    }

    // MARK: Revisions

    func forgeRevision() throws -> [String] {
        let document = options.document
        let rights = try chainDocument()
        let chain = try store.chain(of: rights, tree: options.tree)
        guard let current = chain.current else { throw ForgeError("chain \(rights) has no block here") }
        let epoch = options.epoch ?? (options.mode == .revokedWriter ? 0 : current.block.epoch)
        guard Int(epoch) < chain.blocks.count else { throw ForgeError("chain \(rights) has no epoch \(epoch) here") }
        guard let key = store.epochKey(tree: options.tree, rights: rights, epoch: epoch) else {
            throw ForgeError("this identity holds no key of epoch \(epoch) of chain \(rights)")
        }
        let parents = try store.heads(of: document).sorted()
        guard !parents.isEmpty else { throw ForgeError("document \(document) has no head here") }

        let kind: RevisionKind
        let mode: mode_t
        let content: [UInt8]
        switch options.mode {
        case .unauthorisedDelete: (kind, mode, content) = (.tombstone, S_IFREG | 0o644, Array(options.content.utf8))
        case .hostileNames: (kind, mode, content) = (.directory, S_IFDIR | 0o755, try hostileListing(parents))
        default: (kind, mode, content) = (.file, S_IFREG | 0o644, Array(options.content.utf8))
        }
        let (root, written) = try store.writeContent(content, key: key)
        var rows = Dictionary(
            written.map { ($0.id, (pack: $0.pack, offset: $0.offset, length: $0.length)) },
            uniquingKeysWith: { a, _ in a })
        var swapped: ChunkID?
        if options.mode == .swappedChunk {
            // A data chunk this call wrote (not the manifest root): the swap must not touch one an honest
            // revision already lists.
            guard let data = written.first(where: { $0.id != root?.node.id })?.id, let real = rows[data] else {
                throw ForgeError("this content is stored already: pass another --content")
            }
            try store.sync()
            rows[data] = try appendPackRecord(id: data, bytes: SecureRandom.bytes(count: Int(real.length)))
            swapped = data
        }
        try store.sync()

        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let latest = try catalog.read { db in try Int64.fetchOne(db, sql: "SELECT MAX(time) FROM revisions") } ?? 0
        // Later than anything here: were it accepted, it would be the winning head.
        let time = max(
            HLCTime(milliseconds: UInt64(now.tv_sec) * 1000 + UInt64(now.tv_nsec / 1_000_000), counter: 0),
            HLCTime(rawValue: UInt64(bitPattern: latest) + 1))
        let metadata = RevisionMetadata(
            mode: mode, uid: getuid(), gid: getgid(), mtimeSeconds: Int64(now.tv_sec),
            mtimeNanoseconds: UInt32(now.tv_nsec), ctimeSeconds: Int64(now.tv_sec),
            ctimeNanoseconds: UInt32(now.tv_nsec),
            size: UInt64(content.count), quorum: 0, xattrs: [], content: root, symlinkTarget: [])
        let signed = Revision(
            document: document, kind: kind, epoch: epoch, rights: rights, time: time,
            author: keyring.identity.publicKey,
            parents: parents, sealedMetadata: metadata.sealed(epochKey: key, document: document)
        ).signed(by: keyring.identity)

        let id = Data(signed.id.bytes)
        let doc = Data(document.bytes)
        try catalog.write { db in
            try db.execute(
                sql:
                    "INSERT INTO revisions (id, document, time, kind, size, record, tree, seq, rights) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                arguments: [
                    id, doc, Int64(bitPattern: time.rawValue), Int(kind.rawValue), Int64(content.count),
                    Data(signed.record), Data(options.tree.bytes), try nextSeq(db), Data(rights.bytes),
                ])
            for p in parents {
                try db.execute(
                    sql: "DELETE FROM heads WHERE document = ? AND revision = ?", arguments: [doc, Data(p.bytes)])
            }
            try db.execute(sql: "INSERT OR IGNORE INTO heads (document, revision) VALUES (?, ?)", arguments: [doc, id])
            // Listed by the forged revision's log entry, so peers ask for them.
            for (chunk, row) in rows {
                try db.execute(
                    sql: "INSERT OR REPLACE INTO chunks (id, pack, offset, length, revision) VALUES (?, ?, ?, ?, ?)",
                    arguments: [Data(chunk.bytes), row.pack, row.offset, row.length, id])
            }
        }
        return [signed.id.hex] + (swapped.map { [$0.hex] } ?? [])
    }

    /// What the directory's first head lists, plus names no file may have, each naming a new document.
    func hostileListing(_ heads: [RevisionID]) throws -> [UInt8] {
        let (revision, metadata) = try store.revision(heads[0])
        guard revision.kind == .directory else { throw ForgeError("document \(options.document) is no directory") }
        let listed = try DirectoryListing(decoding: store.readContent(metadata.content)).entries
        let hostile = ["", ".", "..", "a/b", "nul\0byte", String(repeating: "n", count: 256)].map {
            DirectoryListing.Entry(name: $0, document: .random(), kind: .file)
        }
        return DirectoryListing(entries: listed + hostile).encoded()
    }

    /// Appends `u32 length | id | bytes` to the newest pack, whatever the bytes hash to. Called after the
    /// store's last write: its pack writer keeps its own end offset.
    func appendPackRecord(id: ChunkID, bytes: [UInt8]) throws -> (pack: Int64, offset: Int64, length: Int64) {
        let numbers = try FileManager.default.contentsOfDirectory(atPath: home.packsDirectory)
            .compactMap { $0.hasSuffix(".pack") ? Int64($0.dropLast(5)) : nil }
        guard let pack = numbers.max() else { throw ForgeError("no pack in \(home.packsDirectory)") }
        let digits = String(pack)
        let path =
            home.packsDirectory + "/" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits + ".pack"
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ForgeError("\(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ForgeError("\(path): \(String(cString: strerror(errno)))") }
        var record: [UInt8] = []
        withUnsafeBytes(of: UInt32(bytes.count).littleEndian) { record.append(contentsOf: $0) }
        record += id.bytes + bytes
        let written = record.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, st.st_size) }
        guard written == record.count, fsync(fd) == 0 else {
            throw ForgeError("\(path): \(String(cString: strerror(errno)))")
        }
        return (pack, Int64(st.st_size), Int64(bytes.count))
    }

    // MARK: Blocks

    func forgeBlock() throws -> BlockID {
        let rights = try chainDocument()
        let chain = try store.chain(of: rights, tree: options.tree)
        guard let current = chain.current else { throw ForgeError("chain \(rights) has no block here") }
        let me = keyring.identityToken
        func promoted(_ members: [PermissionBlock.Member]) -> [PermissionBlock.Member] {
            members.filter { $0.identity.signing != me.signing } + [.init(identity: me, roles: .all)]
        }
        // The label the real block carries, where this identity can open it: the forgery looks like the original.
        func label(_ block: SignedPermissionBlock) -> String? {
            store.epochKey(tree: options.tree, rights: rights, epoch: block.block.epoch).flatMap {
                block.label(epochKey: $0)
            }
        }
        func next(after previous: SignedPermissionBlock) -> SignedPermissionBlock {
            .make(
                document: rights, after: previous, members: promoted(previous.block.members),
                isPublic: previous.block.isPublic,
                label: label(previous), signer: keyring.identity)
        }

        switch options.mode {
        case .editedBlock:
            // The current block's signer and signature over an edited body: what editing a signed block gives.
            let tail = SigningPublicKey.byteCount + SigningKeyPair.signatureByteCount
            let record =
                Array(next(after: current).record.dropLast(tail)) + current.block.signer.bytes
                + Array(current.record.suffix(SigningKeyPair.signatureByteCount))
            return try insertBlock(record, rights: rights, epoch: current.block.epoch + 1)
        case .selfSignedBlock:
            return try insertBlock(next(after: current).record, rights: rights, epoch: current.block.epoch + 1)
        case .rolledBackBlock:
            guard chain.blocks.count >= 2 else {
                throw ForgeError("chain \(rights) has one block: nothing to fork from")
            }
            let fork = next(after: chain.blocks[chain.blocks.count - 2])
            return try insertBlock(fork.record, rights: rights, epoch: current.block.epoch, replacing: true)
        case .replayedBlock:
            guard chain.blocks.count >= 2 else {
                throw ForgeError("chain \(rights) has one block: nothing to roll back")
            }
            let first = chain.blocks[0]
            try catalog.write { db in
                try db.execute(
                    sql: "DELETE FROM blocks WHERE tree = ? AND document = ? AND epoch > 0",
                    arguments: [Data(options.tree.bytes), Data(rights.bytes)])
                try db.execute(
                    sql: "UPDATE blocks SET seq = ? WHERE id = ?", arguments: [try nextSeq(db), Data(first.id.bytes)])
            }
            return first.id
        case .revokedWriter, .swappedChunk, .unauthorisedDelete, .hostileNames:
            preconditionFailure("not a block mode")
        }
    }

    /// Inserts a block row as `StoreTransaction.insert` would, unchecked. `replacing`: this store's rows of that
    /// epoch and later go first (the catalog holds one block per epoch).
    func insertBlock(_ record: [UInt8], rights: DocumentID, epoch: UInt32, replacing: Bool = false) throws -> BlockID {
        let id = BLAKE2b.hash(record)
        try catalog.write { db in
            if replacing {
                try db.execute(
                    sql: "DELETE FROM blocks WHERE tree = ? AND document = ? AND epoch >= ?",
                    arguments: [Data(options.tree.bytes), Data(rights.bytes), Int64(epoch)])
            }
            try db.execute(
                sql: "INSERT INTO blocks (id, tree, document, epoch, record, seq) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [
                    Data(id.bytes), Data(options.tree.bytes), Data(rights.bytes), Int64(epoch), Data(record),
                    try nextSeq(db),
                ])
        }
        return id
    }
}

/// The next number of the store's one log, which revisions, blocks and release statements share.
func nextSeq(_ db: Database) throws -> Int64 {
    let revisions = try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM revisions") ?? 0
    let blocks = try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM blocks") ?? 0
    let statements = try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM statements") ?? 0
    return max(revisions, blocks, statements) + 1
}

let options = parseOptions()
let home = Home(path: options.home)
// Opening a store creates one where there is none: a typo in --home must not make an empty store.
guard access(home.catalogPath, F_OK) == 0 else { fail("no store at \(home.catalogPath)", code: 1) }
let lock = lockHome(home)
do {
    for line in try Forger(options: options, home: home).run() { print(line) }
} catch {
    fail("\(error)", code: 1)
}
close(lock)
