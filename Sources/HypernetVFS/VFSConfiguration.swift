/// Per-mount settings from `hypernet mount`.
public struct VFSConfiguration: Sendable {
    /// Nodes that must hold a revision durably before fsync returns (contract: 1 with no peer).
    public var quorum: Int
    /// How long fsync waits for the quorum before EIO; nil waits forever (`--fsync-timeout 0`).
    public var fsyncTimeout: Duration?
    public init(quorum: Int = 1, fsyncTimeout: Duration? = .seconds(30)) {
        self.quorum = quorum
        self.fsyncTimeout = fsyncTimeout
    }
}
