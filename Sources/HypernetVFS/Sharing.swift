import Glibc
import HypernetCrypto
import HypernetModel
import HypernetStore

/// Who may do what with a document, and changing it: `user.hypernet.rights`, `.grant`, `.revoke` and the
/// `hypernet grant/revoke/rights` commands (docs/xattrs.md, docs/security.md "Rights").
public struct Membership: Sendable, Equatable {
    public var members: [PermissionBlock.Member]
    public var isPublic: Bool

    /// `user.hypernet.rights`: `TOKEN ROLE,ROLE…` per member, and `* read` for a public document.
    public var text: String {
        members.map { "\($0.identity) \($0.roles)\n" }.joined() + (isPublic ? "* read\n" : "")
    }

    /// Adds `roles` to `who` (nil: everyone, `*`, for whom only `read` means anything).
    mutating func grant(_ roles: Roles, to who: IdentityToken?) throws(VFSError) {
        guard let who else {
            guard roles == .read else { throw VFSError(EINVAL) }
            isPublic = true
            return
        }
        if let i = members.firstIndex(where: { $0.identity.signing == who.signing }) {
            members[i].roles.formUnion(roles)
        } else {
            members.append(.init(identity: who, roles: roles))
        }
    }

    /// Removes `roles` (nil: every role, the member itself) from `who` (nil: `*`).
    mutating func revoke(_ roles: Roles?, from who: IdentityToken?) {
        guard let who else {
            if roles?.contains(.read) ?? true { isPublic = false }
            return
        }
        guard let i = members.firstIndex(where: { $0.identity.signing == who.signing }) else { return }
        members[i].roles.subtract(roles ?? .all)
        if members[i].roles.isEmpty { members.remove(at: i) }
    }
}

extension VirtualFileSystem {
    /// The members of the chain `node` is governed by: its own, the one it inherits, or (no chain) the
    /// tree's owner alone with every role.
    func membership(of node: Node) throws(VFSError) -> Membership {
        let rights: DocumentID?
        do {
            rights =
                try store.chain(of: node.record.id, tree: store.keyring.identity.publicKey).current != nil
                ? node.record.id : store.sealing(for: node.record.id).rights
        } catch {
            throw fail(error, "rights", inode: node.inode)
        }
        guard let rights else {
            return Membership(members: [.init(identity: store.keyring.identityToken, roles: .all)], isPublic: false)
        }
        let block: PermissionBlock?
        do { block = try store.chain(of: rights, tree: store.keyring.identity.publicKey).current?.block } catch {
            throw fail(error, "rights", inode: node.inode)
        }
        guard let block else { throw VFSError(EIO) }
        return Membership(members: block.members, isPublic: block.isPublic)
    }

    /// `user.hypernet.grant` (`WHO ROLE[,ROLE…]`) and `user.hypernet.revoke` (`WHO[ ROLE,…]`): a new block in
    /// the document's own chain. The first one makes the document govern itself and the documents below it
    /// that shared its chain: each gets a revision whose metadata is sealed under the new epoch's key.
    func changeRights(inode: UInt64, value: String, grant: Bool) throws(VFSError) {
        let words = value.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard let whoText = words.first, words.count <= 2 else { throw VFSError(EINVAL) }
        let who = try identity(whoText)
        let roles = words.count == 2 ? Roles(parsing: words[1]) : nil
        guard roles != nil || (!grant && words.count == 1) else { throw VFSError(EINVAL) }
        func changed(_ membership: Membership) throws(VFSError) -> Membership? {
            var m = membership
            if grant { try m.grant(roles!, to: who) } else { m.revoke(roles, from: who) }
            return m == membership ? nil : m
        }
        if ForeignTree.contains(inode) { return try changeForeignRights(inode, changed) }
        let node = try state.withLock { (s) throws(VFSError) in try Self.node(inode, in: s) }
        // Its chain is its directory's until it has a name (`Unnamed.swift`): `link` checks the name against that.
        guard !node.unnamed else { throw VFSError(EINVAL) }
        guard let membership = try changed(membership(of: node)) else { return }
        let own = store.keyring.identity.publicKey
        let hadChain: Bool
        do {
            hadChain = try store.chain(of: node.record.id, tree: own).current != nil
            _ = try store.changeRights(
                of: node.record.id, members: membership.members, isPublic: membership.isPublic, label: node.name)
        } catch {
            throw fail(error, "change rights", inode: inode)
        }
        if !hadChain { try govern(inode, by: node.record.id) }
    }

    /// A grant or revoke by an admin of a chain in another identity's tree: the next block of that chain. Only
    /// on the chain's own document: a new chain in a tree is its owner's to start.
    private func changeForeignRights(_ inode: UInt64, _ changed: (Membership) throws(VFSError) -> Membership?)
        throws(VFSError)
    {
        guard let target = foreign.target(of: inode)?.target, let document = target.document else {
            throw VFSError(EACCES)
        }
        let chain: PermissionChain
        do { chain = try store.chain(of: document, tree: target.tree) } catch { throw fail(error, "rights") }
        guard let current = chain.current?.block, current.roles(of: store.keyring.identity.publicKey).contains(.admin)
        else {
            throw VFSError(EACCES)
        }
        guard let membership = try changed(Membership(members: current.members, isPublic: current.isPublic)) else {
            return
        }
        // The admin keeps the label the chain has (the owner named the shared document).
        let label = store.epochKey(tree: target.tree, rights: document, epoch: current.epoch).flatMap {
            chain.current!.label(epochKey: $0)
        }
        do {
            _ = try store.changeRights(
                of: document, tree: target.tree, members: membership.members, isPublic: membership.isPublic,
                label: label)
        } catch {
            throw fail(error, "change rights")
        }
    }

    /// Moves `inode` and what below it was written under the same chain to `rights`, with a revision each.
    private func govern(_ inode: UInt64, by rights: DocumentID) throws(VFSError) {
        let inodes = try state.withLock { (s) throws(VFSError) -> [UInt64] in
            let old = try? store.sealing(for: try Self.node(inode, in: s).record.id).rights
            var found: [UInt64] = []
            var pending = [inode]
            while let next = pending.popLast() {
                guard var node = s.nodes[next], node.linked else { continue }
                let current = try? store.sealing(for: node.record.id).rights
                guard next == inode || current == old else { continue }
                let id = node.record.id
                try persist("rights") { tx in try tx.setRights(of: id, to: rights) }
                node.metadataChanged = true
                s.nodes[next] = node
                found.append(next)
                pending += node.children.sorted.map(\.inode)
            }
            return found
        }
        for i in inodes { try commit(i) }
    }

    /// A contact name, an identity token, or `*` (nil: everyone).
    private func identity(_ text: String) throws(VFSError) -> IdentityToken? {
        if text == "*" { return nil }
        if let token = IdentityToken(text) { return token }
        let contacts: Contacts
        do { contacts = try Contacts.load(store.home) } catch { throw fail(error, "contacts") }
        guard let token = contacts.identity(named: text) else { throw VFSError(EINVAL) }
        return token
    }
}
