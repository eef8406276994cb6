/// The causal DAG of one document's revisions, enough to compute heads and the visible winner.
public struct RevisionGraph: Sendable {
    public struct Node: Sendable {
        public var id: RevisionID
        public var parents: [RevisionID]
        public var time: HLCTime
        /// A delete: loses to any concurrent head that is not (delete-vs-modify keeps the document).
        public var isTombstone: Bool
        public init(id: RevisionID, parents: [RevisionID], time: HLCTime, isTombstone: Bool = false) {
            self.id = id
            self.parents = parents
            self.time = time
            self.isTombstone = isTombstone
        }
    }

    public private(set) var nodes: [RevisionID: Node] = [:]
    private var children: [RevisionID: Set<RevisionID>] = [:]

    public init(_ nodes: some Sequence<Node> = []) {
        for n in nodes { insert(n) }
    }

    public mutating func insert(_ node: Node) {
        guard nodes[node.id] == nil else { return }
        nodes[node.id] = node
        for p in node.parents { children[p, default: []].insert(node.id) }
    }

    /// Revisions without children. More than one is a conflict; all are kept.
    public var heads: [RevisionID] {
        nodes.keys.filter { children[$0]?.isEmpty ?? true }.sorted()
    }

    /// The head every node shows: the greatest by `winsOver` — the same on every node.
    public var winner: RevisionID? {
        heads.max { Self.winsOver(nodes[$1]!, nodes[$0]!) }
    }

    /// The winner rule (docs/design.md, "Conflicts"): a head that is not a tombstone beats one that is, then
    /// the greater (HLC time, id). A delete therefore never hides a concurrent edit, and a skewed clock can
    /// only decide among heads of the same kind.
    public static func winsOver(_ a: Node, _ b: Node) -> Bool {
        (a.isTombstone ? 0 : 1, a.time, a.id) > (b.isTombstone ? 0 : 1, b.time, b.id)
    }

    static func order(_ a: Node, _ b: Node) -> Bool {
        (a.time, a.id) < (b.time, b.id)
    }
}

extension RevisionGraph {
    /// Every revision reachable from `id` through parents, `id` included.
    public func ancestors(of id: RevisionID) -> Set<RevisionID> {
        var seen: Set<RevisionID> = []
        var stack = [id]
        while let next = stack.popLast() {
            guard seen.insert(next).inserted, let node = nodes[next] else { continue }
            stack += node.parents
        }
        return seen
    }

    /// The latest (by HLC time, id) revision that is an ancestor of every one of `heads`: the base a
    /// three-way merge compares them against. nil when they share no history.
    public func mergeBase(of heads: [RevisionID]) -> RevisionID? {
        guard var common = heads.first.map({ ancestors(of: $0) }) else { return nil }
        for h in heads.dropFirst() { common.formIntersection(ancestors(of: h)) }
        return common.compactMap { nodes[$0] }.max { Self.order($0, $1) }?.id
    }

    /// `heads` ordered by (HLC time, id), oldest first: the order in which a merge lets later writers win.
    public func ordered(_ heads: [RevisionID]) -> [RevisionID] {
        heads.compactMap { nodes[$0] }.sorted { Self.order($0, $1) }.map(\.id)
    }
}
