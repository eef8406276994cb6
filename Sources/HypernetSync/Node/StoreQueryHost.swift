import HypernetCrypto
import HypernetModel
import HypernetStore

/// Runs a query's operator over the plaintext of one held file revision from `target.after` (the daemon's executor);
/// nil when it cannot read it.
public typealias QueryScanner = @Sendable (_ query: Query, _ target: Query.Target) -> (any QueryScan)?

/// The daemon's `QueryHost`: revisions and permission blocks from the store, scans from the executor. Without an
/// executor every target is `unavailable`.
struct StoreQueryHost: QueryHost {
    let store: Store
    let scanner: QueryScanner?

    func held(_ target: Query.Target) -> (revision: Revision, blocks: [PermissionBlock])? {
        guard let (revision, tree) = try? store.sealedRevision(target.revision), tree == target.tree,
            revision.document == target.document, revision.kind == .file
        else { return nil }
        guard let rights = revision.rights else { return (revision, []) }
        guard let chain = try? store.chain(of: rights, tree: tree) else { return nil }
        return (revision, chain.blocks.map(\.block).filter { $0.epoch >= revision.epoch })
    }

    func canOpen(_ revision: Revision, tree: SigningPublicKey) -> Bool {
        store.epochKey(tree: tree, rights: revision.rights, epoch: revision.epoch) != nil
    }

    func scan(_ query: Query, _ target: Query.Target) -> (any QueryScan)? { scanner?(query, target) }

    /// Only an index held here: a missing one would be fetched from peers, and the requester can ask them itself.
    func blindScan(_ revision: Revision, _ target: Query.Target, trapdoors: [UInt32]) -> (any QueryScan)? {
        guard let reference = revision.blindIndex, store.holds(reference.id),
            let index = try? BlindIndex(decoding: store.readChunk(reference))
        else { return nil }
        return BlindScan(index: index, trapdoors: trapdoors, after: Int(target.after))
    }
}
