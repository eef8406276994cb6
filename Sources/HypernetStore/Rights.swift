import Foundation
import GRDB
import HypernetCrypto
import HypernetFailpoint
import HypernetModel
import Synchronization

/// How new content of one document is sealed: under the current epoch of the chain that governs it, or,
/// with no chain, under the tree owner's key (epoch 0).
public struct Sealing: Sendable {
    public let rights: DocumentID?
    public let epoch: UInt32
    public let key: SecureBytes
}

/// Why a permission change was refused.
public enum RightsError: Error, Sendable, Equatable, CustomStringConvertible {
    /// This identity is not an admin of the document's current block.
    case notAdmin
    /// This identity cannot open the key of the chain that governs the document (it is not a reader).
    case noKey
    /// A chain needs at least one admin, or nobody could change it again.
    case noAdmin
    /// This identity lacks the right the change needs in another identity's tree.
    case notAllowed
    /// A member could write, delete or admin without reading: each of those seals under the epoch key, which
    /// only readers get, so its changes would all be refused.
    case unreadable
    /// The tree's owner would lose read, write or delete: its mount writes the tree as the owner, so every
    /// change made there would be refused by every node.
    case ownerKeeps

    public var description: String {
        switch self {
        case .notAdmin: "this identity is not an admin of the document"
        case .noKey: "this identity holds no key of the document's current epoch"
        case .noAdmin: "the rights would leave the document without an admin"
        case .notAllowed: "this identity has no right to make that change"
        case .unreadable: "the rights would give a member write, delete or admin without read"
        case .ownerKeeps: "the tree's owner keeps read, write and delete in its own tree"
        }
    }
}

extension Store {
    /// `tree`'s permission chain of `document` as stored here (empty when it has none).
    public func chain(of document: DocumentID, tree: SigningPublicKey) throws(StoreError) -> PermissionChain {
        try catalog.readStatement { db in try Self.chain(db, document: document, tree: tree) }
    }

    static func chain(_ db: Database, document: DocumentID, tree: SigningPublicKey) throws -> PermissionChain {
        var chain = PermissionChain(document: document, creator: tree)
        let records = try Data.fetchAll(
            db.cachedStatement(sql: "SELECT record FROM blocks WHERE tree = ? AND document = ? ORDER BY epoch"),
            arguments: [Data(tree.bytes), Data(document.bytes)])
        for record in records {
            // Stored blocks were checked as links when they arrived; a failure here is damage to the catalog.
            do { try chain.append(try SignedPermissionBlock(record: Array(record))) } catch {
                throw StoreError.corrupt(object: "permission block of \(document)", reason: "\(error)")
            }
        }
        return chain
    }

    /// The key content of `tree` written under (`rights`, `epoch`) is sealed with; nil when this identity
    /// holds none (it is not a reader of that epoch or of a later one that passes the key back, or the block is
    /// not here).
    public func epochKey(tree: SigningPublicKey, rights: DocumentID?, epoch: UInt32) -> SecureBytes? {
        (try? catalog.readStatement { db in try epochKey(db, tree: tree, rights: rights, epoch: epoch) }) ?? nil
    }

    func epochKey(_ db: Database, tree: SigningPublicKey, rights: DocumentID?, epoch: UInt32) throws -> SecureBytes? {
        guard let rights else { return tree == keyring.identity.publicKey && epoch == 0 ? keyring.treeKey : nil }
        func cacheKey(_ epoch: UInt32) -> EpochKeyCache.Key { .init(tree: tree, document: rights, epoch: epoch) }
        if let key = epochKeys.get(cacheKey(epoch)) { return key }
        // The first block from `epoch` on whose key this identity holds, then back through the previous keys.
        let blocks = try Data.fetchAll(
            db.cachedStatement(
                sql: "SELECT record FROM blocks WHERE tree = ? AND document = ? AND epoch >= ? ORDER BY epoch"),
            arguments: [Data(tree.bytes), Data(rights.bytes), Int64(epoch)]
        ).compactMap { try? SignedPermissionBlock(record: Array($0)) }
        guard blocks.first?.block.epoch == epoch else { return nil }
        for (i, block) in blocks.enumerated() {
            guard var key = epochKeys.get(cacheKey(block.block.epoch)) ?? ownKey(block) else { continue }
            epochKeys.put(cacheKey(block.block.epoch), key)
            for newer in blocks.prefix(i + 1).dropFirst().reversed() {
                guard let previous = newer.previousEpochKey(epochKey: key) else { return nil }
                key = previous
                epochKeys.put(cacheKey(newer.block.epoch - 1), key)
            }
            return key
        }
        return nil
    }

    /// A block's key as sealed to this identity, or the public key.
    private func ownKey(_ block: SignedPermissionBlock) -> SecureBytes? {
        block.block.isPublic
            ? PermissionBlock.publicEpochKey : block.epochKey(for: keyring.identity.publicKey, box: keyring.identityBox)
    }

    /// How the next revision of `document` (of this identity's tree) is sealed.
    public func sealing(for document: DocumentID) throws(StoreError) -> Sealing {
        try catalog.read { db in try Self.sealing(db, store: self, document: document) }
    }

    static func sealing(_ db: Database, store: Store, document: DocumentID) throws -> Sealing {
        let own = store.keyring.identity.publicKey
        let rights = try Data.fetchOne(
            db.cachedStatement(sql: "SELECT rights FROM documents WHERE id = ?"), arguments: [Data(document.bytes)]
        ).flatMap { try? DocumentID(bytes: Array($0)) }
        guard let rights else { return Sealing(rights: nil, epoch: 0, key: store.keyring.treeKey) }
        return try sealing(db, store: store, tree: own, rights: rights)
    }

    /// How this identity seals a revision it writes in another identity's `tree` under chain `rights`: the
    /// chain's current epoch and its key. Throws `.rights(.noKey)` when the key is not sealed to it.
    public func sealing(tree: SigningPublicKey, rights: DocumentID) throws(StoreError) -> Sealing {
        try catalog.read { db in try Self.sealing(db, store: self, tree: tree, rights: rights) }
    }

    static func sealing(_ db: Database, store: Store, tree: SigningPublicKey, rights: DocumentID) throws -> Sealing {
        let epoch = try Int64.fetchOne(
            db.cachedStatement(sql: "SELECT MAX(epoch) FROM blocks WHERE tree = ? AND document = ?"),
            arguments: [Data(tree.bytes), Data(rights.bytes)])
        guard let epoch, let key = try store.epochKey(db, tree: tree, rights: rights, epoch: UInt32(epoch)) else {
            throw StoreError.rights(.noKey)
        }
        return Sealing(rights: rights, epoch: UInt32(epoch), key: key)
    }

    /// Signs and stores a revision this identity makes in another identity's `tree`, under chain `rights`'s
    /// current epoch, listing `locations` (its new chunks). Checked as every receiver will check it; refused
    /// with `.rights(.notAllowed)` when the chain does not give this identity the right.
    public func appendForeignRevision(
        tree: SigningPublicKey, document: DocumentID, kind: RevisionKind, metadata: RevisionMetadata,
        parents: [RevisionID], rights: DocumentID, locations: [ChunkLocation]
    ) throws(StoreError) -> RevisionID {
        try transaction { tx in
            let sealing = try Self.sealing(tx.db, store: self, tree: tree, rights: rights)
            let signed = Revision(
                document: document, kind: kind, epoch: sealing.epoch, rights: rights, time: nextTime(),
                author: keyring.identity.publicKey, parents: parents,
                sealedMetadata: metadata.sealed(epochKey: sealing.key, document: document)
            ).signed(by: keyring.identity)
            guard try tx.checkRights(signed.revision, tree: tree) == nil else { throw StoreError.rights(.notAllowed) }
            try tx.recordChunks(locations)
            try tx.insert(signed, tree: tree, size: metadata.size)
            try tx.claim(locations.map(\.id), for: signed.id)
            tx.added.list.append(AddedRevision(id: signed.id, document: document, tree: tree, isLocal: true))
            return signed.id
        }
    }

    /// The chain whose rights a new document in directory `parent` is written under: the directory's own
    /// chain if it has one, else the one the directory itself is written under.
    public func rightsForChildren(of parent: DocumentID) throws(StoreError) -> DocumentID? {
        try catalog.read { db in try Self.rightsForChildren(db, of: parent, tree: keyring.identity.publicKey) }
    }

    static func rightsForChildren(_ db: Database, of parent: DocumentID, tree: SigningPublicKey) throws -> DocumentID? {
        let ownChain = try Int.fetchOne(
            db.cachedStatement(sql: "SELECT 1 FROM blocks WHERE tree = ? AND document = ? LIMIT 1"),
            arguments: [Data(tree.bytes), Data(parent.bytes)])
        if ownChain != nil { return parent }
        return try Data.fetchOne(
            db.cachedStatement(sql: "SELECT rights FROM documents WHERE id = ?"), arguments: [Data(parent.bytes)]
        ).flatMap { try? DocumentID(bytes: Array($0)) }
    }

    /// `hypernet fsck`'s part for rights: every stored chain links as a receiver checks it, and every revision was
    /// allowed when it was stored: its author holds the right in the epoch it names and in the last block of
    /// that chain stored before it (log order), or, under the owner's key, is the tree's owner. A node stores
    /// nothing else, so a problem here is damage or a forgery written into the catalog.
    func checkRights() throws(StoreError) -> [String] {
        try catalog.read { db in
            var problems: [String] = []
            struct Key: Hashable {
                var tree: [UInt8]
                var document: DocumentID
            }
            var chains: [Key: (chain: PermissionChain, seqs: [Int64])] = [:]
            for row in try Row.fetchAll(
                db, sql: "SELECT id, tree, document, record, seq FROM blocks ORDER BY tree, document, epoch")
            {
                let id = Hex.encode(row[0] as Data)
                guard let tree = try? SigningPublicKey(bytes: Array(row[1] as Data)),
                    let document = try? DocumentID(bytes: Array(row[2] as Data))
                else {
                    problems.append("permission block \(id): malformed tree or document")
                    continue
                }
                let key = Key(tree: tree.bytes, document: document)
                var entry = chains[key] ?? (PermissionChain(document: document, creator: tree), [])
                do throws(DecodingError) {
                    let block = try SignedPermissionBlock(record: Array(row[3] as Data))
                    do { try entry.chain.append(block) } catch { problems.append("permission block \(id): \(error)") }
                } catch {
                    problems.append("permission block \(id): \(error)")
                }
                if entry.chain.blocks.count > entry.seqs.count { entry.seqs.append(row[4]) }
                chains[key] = entry
            }
            for row in try Row.fetchAll(db, sql: "SELECT id, tree, record, seq FROM revisions ORDER BY seq") {
                let id = Hex.encode(row[0] as Data)
                guard let tree = try? SigningPublicKey(bytes: Array(row[1] as Data)),
                    let r = try? SignedRevision(record: Array(row[2] as Data)).revision
                else { continue }  // reported with the signatures
                let seq: Int64 = row[3]
                guard let rights = r.rights else {
                    if r.author != tree { problems.append("revision \(id): its author is not the tree's owner") }
                    continue
                }
                guard let (chain, seqs) = chains[Key(tree: tree.bytes, document: rights)],
                    Int(r.epoch) < chain.blocks.count,
                    seqs[Int(r.epoch)] < seq
                else {
                    problems.append(
                        "revision \(id): names epoch \(r.epoch) of \(rights), which was not stored before it")
                    continue
                }
                let current = chain.blocks[seqs.lastIndex { $0 < seq }!].block
                if !chain.blocks[Int(r.epoch)].block.allows(r.author, r.kind) || !current.allows(r.author, r.kind) {
                    problems.append("revision \(id): its author had no right for it when it was stored")
                }
            }
            return problems
        }
    }

    /// The full identity (with its box key) of a signing key named as a member in a stored block.
    public func knownIdentity(_ key: SigningPublicKey) -> IdentityToken? {
        if let known = identities.withLock({ $0[key] }) { return known }
        let records = (try? catalog.read { db in try Data.fetchAll(db, sql: "SELECT record FROM blocks") }) ?? []
        var found: [SigningPublicKey: IdentityToken] = [:]
        for record in records {
            guard let block = try? SignedPermissionBlock(record: Array(record)) else { continue }
            for m in block.block.members { found[m.identity.signing] = m.identity }
        }
        identities.withLock { $0.merge(found) { a, _ in a } }
        return found[key]
    }

    /// The documents of `tree` whose chain's current block lets this identity read (a key sealed to it, or
    /// public), with the label each block carries.
    public func readableChains(tree: SigningPublicKey) throws(StoreError) -> [(document: DocumentID, label: String?)] {
        try catalog.read { db in
            try Row.fetchAll(
                db, sql: "SELECT document, MAX(epoch) FROM blocks WHERE tree = ? GROUP BY document ORDER BY document",
                arguments: [Data(tree.bytes)]
            ).compactMap { row -> (DocumentID, String?)? in
                guard let document = try? DocumentID(bytes: Array(row[0] as Data)) else { return nil }
                let epoch = UInt32(row[1] as Int64)
                guard let key = try epochKey(db, tree: tree, rights: document, epoch: epoch),
                    let record = try Data.fetchOne(
                        db, sql: "SELECT record FROM blocks WHERE tree = ? AND document = ? AND epoch = ?",
                        arguments: [Data(tree.bytes), Data(document.bytes), Int64(epoch)]),
                    let block = try? SignedPermissionBlock(record: Array(record))
                else { return nil }
                return (document, block.label(epochKey: key))
            }
        }
    }

    /// The chain the heads of `document` were written under (nil: the owner's key, or no revision here).
    public func governingChain(of document: DocumentID) throws(StoreError) -> DocumentID? {
        try catalog.read { db in
            try Data.fetchOne(
                db,
                sql:
                    "SELECT r.rights FROM heads h JOIN revisions r ON r.id = h.revision WHERE h.document = ? ORDER BY r.time DESC LIMIT 1",
                arguments: [Data(document.bytes)]
            ).flatMap { try? DocumentID(bytes: Array($0)) }
        }
    }

    /// Signs and stores the next block of `document`'s chain in `tree` (default: this identity's): `members`
    /// with their roles, a fresh epoch key sealed to every reader. The first block makes the document govern
    /// itself; the caller moves what it wants under the new chain (`setRights`). Only the tree's owner starts
    /// a chain; an admin of the current block signs the next.
    public func changeRights(
        of document: DocumentID, tree: SigningPublicKey? = nil, members: [PermissionBlock.Member], isPublic: Bool,
        label: String? = nil
    ) throws(StoreError) -> SignedPermissionBlock {
        let tree = tree ?? keyring.identity.publicKey
        guard members.contains(where: { $0.roles.contains(.admin) }) else { throw .rights(.noAdmin) }
        // A public epoch's key is known to all, so there a member needs no read of its own.
        guard isPublic || members.allSatisfy({ $0.roles.contains(.read) }) else { throw .rights(.unreadable) }
        let owner = members.first { $0.identity.signing == tree }
        guard owner?.roles.isSuperset(of: [.read, .write, .delete]) == true else { throw .rights(.ownerKeeps) }
        return try transaction { tx in
            var chain = try Self.chain(tx.db, document: document, tree: tree)
            // Passed on so that members added now read what was written before (docs/security.md, "Rights").
            let previousKey = try chain.current.flatMap { current in
                try epochKey(tx.db, tree: tree, rights: document, epoch: current.block.epoch)
            }
            let block = SignedPermissionBlock.make(
                document: document, after: chain.current, members: members, isPublic: isPublic, label: label,
                signer: keyring.identity, previousKey: previousKey, time: nextTime())
            // The rule every receiver applies: an admin of the current block signs the next (the owner the first).
            do { try chain.append(block) } catch { throw StoreError.rights(.notAdmin) }
            if Failpoint.hit("rights.change") { throw StoreError.io(path: home.catalogPath, errno: EIO) }
            try tx.insert(block, tree: tree)
            return block
        }
    }
}

extension StoreTransaction {
    /// Stores a block checked as the next link of its chain and gives it the next log sequence number.
    func insert(_ block: SignedPermissionBlock, tree: SigningPublicKey) throws {
        try db.cachedStatement(
            sql: "INSERT INTO blocks (id, tree, document, epoch, record, seq) VALUES (?, ?, ?, ?, ?, ?)"
        )
        .execute(arguments: [
            Data(block.id.bytes), Data(tree.bytes), Data(block.block.document.bytes), Int64(block.block.epoch),
            Data(block.record), try nextSeq(),
        ])
        added.list.append(
            AddedRevision(id: block.id, document: block.block.document, tree: tree, isLocal: false, isBlock: true))
    }

    /// The next number of the log, which revisions, blocks and release statements share; past every seq sent before
    /// the store was opened (`Store.openLog`), even one a power loss took.
    func nextSeq() throws -> Int64 {
        let revisions = try Int64.fetchOne(db.cachedStatement(sql: "SELECT MAX(seq) FROM revisions")) ?? 0
        let blocks = try Int64.fetchOne(db.cachedStatement(sql: "SELECT MAX(seq) FROM blocks")) ?? 0
        let statements = try Int64.fetchOne(db.cachedStatement(sql: "SELECT MAX(seq) FROM statements")) ?? 0
        let floor =
            try Int64.fetchOne(
                db.cachedStatement(sql: "SELECT CAST(value AS INTEGER) FROM settings WHERE key = 'seq-floor'")) ?? 0
        return max(revisions, blocks, statements, floor) + 1
    }

    /// The chain new revisions of `document` are written under from now on (nil: the owner's key).
    public func setRights(of document: DocumentID, to rights: DocumentID?) throws {
        try db.cachedStatement(sql: "UPDATE documents SET rights = ? WHERE id = ?")
            .execute(arguments: [rights.map { Data($0.bytes) }, Data(document.bytes)])
    }

    /// The chain a new document in directory `parent` is written under.
    public func rightsForChildren(of parent: DocumentID) throws -> DocumentID? {
        try Store.rightsForChildren(db, of: parent, tree: store.keyring.identity.publicKey)
    }

    /// Checks a received block as the next link of its chain in `tree`; nil if it is stored, else why not.
    func receive(_ block: SignedPermissionBlock, tree: SigningPublicKey) throws -> Rejection? {
        var chain = try Store.chain(db, document: block.block.document, tree: tree)
        if chain.blocks.contains(where: { $0.id == block.id }) { return nil }
        do { try chain.append(block) } catch {
            // A gap (a later epoch than the next) may close when the blocks between arrive.
            if case .notNext(let expected, let got) = error, got > expected {
                return .missingBlock(block.block.document, expected)
            }
            return .badBlock(error)
        }
        if Failpoint.hit("rights.receive") { throw StoreError.io(path: store.home.catalogPath, errno: EIO) }
        try insert(block, tree: tree)
        try refuseInvalidated(by: block.block, tree: tree)
        return nil
    }

    /// Refuses the stored revisions of `block`'s chain that it makes invalid (`PermissionBlock.refuses`): they
    /// leave the heads, so the view, and what this node serves, and stay stored for `log` to show
    /// (docs/security.md, "Rights").
    func refuseInvalidated(by block: PermissionBlock, tree: SigningPublicKey) throws {
        guard block.time.rawValue != 0 else { return }
        let rows = try Row.fetchAll(
            db.cachedStatement(
                sql: """
                    SELECT record FROM revisions WHERE tree = ? AND rights = ? AND time > ?
                    AND id NOT IN (SELECT revision FROM refused)
                    """),
            arguments: [Data(tree.bytes), Data(block.document.bytes), Int64(bitPattern: block.time.rawValue)])
        var documents = Set<DocumentID>()
        for row in rows {
            guard let signed = try? SignedRevision(record: Array(row[0] as Data)), block.refuses(signed.revision) else {
                continue
            }
            try db.cachedStatement(sql: "INSERT INTO refused (revision, epoch) VALUES (?, ?)")
                .execute(arguments: [Data(signed.id.bytes), Int64(block.epoch)])
            documents.insert(signed.revision.document)
        }
        for document in documents { try recomputeHeads(of: document) }
    }

    /// The heads of `document` among its revisions not refused: those no other one names as a parent.
    private func recomputeHeads(of document: DocumentID) throws {
        let doc = Data(document.bytes)
        let records = try Data.fetchAll(
            db.cachedStatement(
                sql: "SELECT record FROM revisions WHERE document = ? AND id NOT IN (SELECT revision FROM refused)"),
            arguments: [doc])
        let revisions = records.compactMap { try? SignedRevision(record: Array($0)) }
        let parents = Set(revisions.flatMap(\.revision.parents))
        try db.cachedStatement(sql: "DELETE FROM heads WHERE document = ?").execute(arguments: [doc])
        for r in revisions where !parents.contains(r.id) {
            try db.cachedStatement(sql: "INSERT INTO heads (document, revision) VALUES (?, ?)")
                .execute(arguments: [doc, Data(r.id.bytes)])
        }
    }

    /// Whether `revision` of `tree` may be stored under the rights it names: its author holds `write`
    /// (`delete` for a tombstone) in that epoch and, when the epoch is no longer current, in the current one
    /// too (so a member removed since cannot back-date into the epoch it was a member of); a revision that
    /// moves a document to another chain needs an admin of the chain it leaves. Nil when allowed.
    func checkRights(_ revision: Revision, tree: SigningPublicKey) throws -> Rejection? {
        var leaving: Set<DocumentID?> = []
        for p in revision.parents {
            // A parent not stored (yet) is judged when it is: the caller checks for missing parents.
            guard
                let row = try Row.fetchOne(
                    db.cachedStatement(sql: "SELECT rights FROM revisions WHERE id = ?"), arguments: [Data(p.bytes)])
            else { continue }
            let rights = (row[0] as Data?).flatMap { try? DocumentID(bytes: Array($0)) }
            if rights != revision.rights { leaving.insert(rights) }
        }
        for old in leaving {
            guard let old else {
                guard revision.author == tree else { return .notAuthorized }
                continue
            }
            let chain = try Store.chain(db, document: old, tree: tree)
            guard revision.author == tree || chain.current?.block.roles(of: revision.author).contains(.admin) == true
            else {
                return .notAuthorized
            }
        }
        guard let rights = revision.rights else { return revision.author == tree ? nil : .notAuthorized }
        let chain = try Store.chain(db, document: rights, tree: tree)
        guard Int(revision.epoch) < chain.blocks.count, let current = chain.current else {
            return .missingBlock(rights, revision.epoch)
        }
        guard chain.blocks[Int(revision.epoch)].block.allows(revision.author, revision.kind),
            current.block.allows(revision.author, revision.kind)
        else { return .notAuthorized }
        return nil
    }
}

extension Store {
    /// The revisions of `batch` whose authors lack the right for them by what is stored now: not worth
    /// fetching the chunks of. (One that names an epoch not stored yet, maybe arriving in the same batch, is
    /// not among them; `storeRemote` judges every revision again in order.)
    public func unauthorized(_ batch: [RemoteRevision]) throws(StoreError) -> Set<RevisionID> {
        guard !batch.isEmpty else { return [] }
        return try catalog.read { db in
            let tx = StoreTransaction(db: db, store: self, added: AddedRevisions())
            return Set(
                try batch.filter { try tx.checkRights($0.signed.revision, tree: $0.tree) == .notAuthorized }.map(
                    \.signed.id))
        }
    }
}

/// Epoch keys opened from blocks (a sealed-box open each), kept for the life of the store.
final class EpochKeyCache: Sendable {
    struct Key: Hashable {
        var tree: SigningPublicKey
        var document: DocumentID
        var epoch: UInt32
    }

    private let keys = Mutex<[Key: SecureBytes]>([:])

    func get(_ key: Key) -> SecureBytes? { keys.withLock { $0[key] } }
    func put(_ key: Key, _ value: SecureBytes) { keys.withLock { $0[key] = value } }
}
