import Dispatch
import Glibc
import HypernetModel
import HypernetStore

/// Fetches the chunks a read needs that this node does not hold (a tree held on demand: docs/protocol.md,
/// "Content on demand"). It asks each connected peer in turn through the shared `ChunkFetcher`, so concurrent
/// reads of one chunk wait for one fetch and every copy is checked against its id as it arrives, and goes on
/// asking, as peers connect or fetch it themselves, until every chunk arrived or the fetch timeout passed.
final class DemandFetcher: Sendable {
    private let fetcher: ChunkFetcher
    private let timeout: DispatchTimeInterval
    /// The pause before asking the peers again when none had a chunk.
    static let retryPause: DispatchTimeInterval = .milliseconds(250)

    init(fetcher: ChunkFetcher, timeout: DispatchTimeInterval) {
        self.fetcher = fetcher
        self.timeout = timeout
    }

    /// The locations of those of `ids` that arrived from one of `links` (asked again at each round) before the
    /// timeout; the rest were not sent by any peer.
    func fetch(_ ids: [ChunkID], from links: () -> [any PeerLink]) -> [ChunkLocation] {
        let deadline = DispatchTime.now() + timeout
        var wanted = ids
        var found: [ChunkLocation] = []
        while true {
            for link in links() where !wanted.isEmpty && link.node != nil && !link.isEnded {
                guard DispatchTime.now() < deadline else { break }
                let arrived = fetcher.fetch(wanted, via: link, until: deadline)
                found += arrived.values
                wanted.removeAll { arrived[$0] != nil }
            }
            let now = DispatchTime.now()
            guard !wanted.isEmpty, now < deadline else { return found }
            let pause = min(now + Self.retryPause, deadline).uptimeNanoseconds - now.uptimeNanoseconds
            usleep(UInt32(pause / 1000))
        }
    }
}
