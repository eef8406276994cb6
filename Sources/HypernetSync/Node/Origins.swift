import HypernetModel

/// Where this node got each received revision first, for the relay policy (docs/protocol.md, "Relaying" and
/// "Fan-out"): its chunks are never pushed back to that node, and a relay of it that brings nothing new proves a
/// second path, so that relay is pruned. A revision whose records came first from a peer that counts this node among
/// its lazy subscribers (records, no chunks pushed ahead) came with no content yet: until a peer pushes its chunks
/// (that peer is then its path) no relay of it is pruned, since any of them may be the eager link that brings the
/// content next time. Pure: no clock, no I/O.
struct Origins<Node: Hashable> {
    /// The node each revision's records came from first.
    private var first: [RevisionID: Node] = [:]
    /// Revisions whose records came first without their chunks, and of which no peer pushed the chunks yet.
    private var lazilyGot: Set<RevisionID> = []
    /// For revisions that came lazily first: the first node that pushed their chunks.
    private var pushedBy: [RevisionID: Node] = [:]
    /// Bounded: past this many revisions, all are forgotten at once (a forgotten one only costs a prune or a push).
    static var maximumRemembered: Int { 100_000 }

    /// The node `id` came from first; nil for a revision made here (or forgotten).
    subscript(id: RevisionID) -> Node? { first[id] }

    /// Records `ids`, new here, came from `node`.
    mutating func received(_ ids: some Sequence<RevisionID>, from node: Node) {
        if first.count >= Self.maximumRemembered {
            first.removeAll()
            lazilyGot.removeAll()
            pushedBy.removeAll()
        }
        for id in ids where first[id] == nil { first[id] = node }
    }

    /// A run of `node` listing `ids` came with chunks pushed ahead of it: it is the path of those that came lazily.
    mutating func pushed(_ ids: some Sequence<RevisionID>, by node: Node) {
        for id in ids where lazilyGot.remove(id) != nil { pushedBy[id] = node }
    }

    /// Revisions `ids` came first from `node` without their chunks (this node is its lazy subscriber).
    mutating func cameLazily(_ ids: some Sequence<RevisionID>, from node: Node) {
        for id in ids where first[id] == node && pushedBy[id] == nil { lazilyGot.insert(id) }
    }

    /// Whether a relay by `node` of `ids` that brings nothing new proves another path for them: one of them came
    /// (with its content) first from a third node, and none came with no content yet or with `node`'s push first (a
    /// run is a prefix of the sender's log: it may list records sent before, along with the one it pushed).
    func provesOtherPath(_ ids: some Sequence<RevisionID>, relayedBy node: Node) -> Bool {
        var other = false
        for id in ids {
            if lazilyGot.contains(id) || pushedBy[id] == node { return false }
            if let source = pushedBy[id] ?? first[id], source != node { other = true }
        }
        return other
    }
}
