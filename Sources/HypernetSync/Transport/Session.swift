import Dispatch
import HypernetCrypto
import HypernetModel
import NIOCore
import Synchronization

/// What a session tells its owner. Called on the session's event loop: return quickly.
protocol SessionDelegate: AnyObject, Sendable {
    /// The TCP connection is up (the handshake starts next); nil admits it, else the reason it is closed at once.
    /// A connect that fails never gets here, nor to `sessionEnded`.
    func sessionOpened(_ session: Session) -> String?
    func sessionAuthenticated(_ session: Session)
    func session(_ session: Session, received message: Message)
    /// Once per session, after it is closed; `reason` nil for an orderly close.
    func sessionEnded(_ session: Session, reason: String?)
}

/// One authenticated connection to a peer node. Thread-safe: `send` may be called from any thread.
final class Session: Sendable, CustomStringConvertible {
    static let silenceLimit: Int64 = 30
    static let keepAliveInterval: Int64 = 10
    /// Unsent bytes above which `sendWhenWritable` waits (NIO's high water mark).
    static let writeHighWater = 4 << 20

    let channel: Channel
    let isInitiator: Bool
    /// The address dialed, for an outgoing session.
    let dialedAddress: String?
    /// The peer's IP address, for an accepted connection (known when it is made; nil for an outgoing one).
    let remoteIP: String?
    private let delegate: any SessionDelegate
    private let handler: NIOLoopBoundBox<SecureChannelHandler?>
    private struct State {
        var node: SigningPublicKey?
        var ended = false
        var failure: String?
        var writableWaiters: [DispatchSemaphore] = []
    }
    private let state = Mutex(State())
    /// Work for this peer that writes (serving logs and chunks) runs here, off the event loop.
    let serveQueue: DispatchQueue
    /// Work on what the peer sent (storing revisions and the chunks pushed ahead of them) runs here, in
    /// arrival order.
    let receiveQueue: DispatchQueue
    /// Chunks the peer sends in answer to `want` are stored here: the receive queue may be waiting for them.
    let chunkQueue: DispatchQueue

    init(channel: Channel, isInitiator: Bool, dialedAddress: String?, delegate: any SessionDelegate) {
        self.channel = channel
        self.isInitiator = isInitiator
        self.dialedAddress = dialedAddress
        remoteIP = isInitiator ? nil : channel.remoteAddress?.ipAddress
        self.delegate = delegate
        handler = NIOLoopBoundBox(nil, eventLoop: channel.eventLoop)
        serveQueue = DispatchQueue(label: "hypernet.sync.serve")
        receiveQueue = DispatchQueue(label: "hypernet.sync.receive")
        chunkQueue = DispatchQueue(label: "hypernet.sync.chunks")
    }

    /// Installs the handlers; call on the channel's event loop before it becomes active.
    func install(nodeKey: SigningKeyPair, budget: FrameBudget) throws {
        let h = SecureChannelHandler(session: self, nodeKey: nodeKey, budget: budget)
        handler.value = h
        try channel.pipeline.syncOperations.addHandlers([
            IdleStateHandler(readTimeout: .seconds(Self.silenceLimit), writeTimeout: .seconds(Self.keepAliveInterval)),
            h,
            WritabilityHandler(session: self),
        ])
    }

    var node: SigningPublicKey? { state.withLock { $0.node } }

    var isEnded: Bool { state.withLock { $0.ended } }

    var description: String {
        let who = node.map { "node " + String(Hex.encode($0.bytes).prefix(16)) } ?? "unauthenticated peer"
        return "\(who) (\(dialedAddress ?? channel.remoteAddress?.description ?? "?"))"
    }

    // MARK: Sending

    func send(_ message: Message) {
        let handler = self.handler
        channel.eventLoop.execute { handler.value?.send(message) }
    }

    /// Sends once the connection's unsent bytes are below the high water mark: a slow peer slows the
    /// sender instead of making it buffer without bound. Returns false if the session ended.
    @discardableResult
    func sendWhenWritable(_ message: Message) -> Bool {
        while !channel.isWritable {
            let semaphore = DispatchSemaphore(value: 0)
            let ended = state.withLock { s in
                if !s.ended { s.writableWaiters.append(semaphore) }
                return s.ended
            }
            if ended { return false }
            // The writability change may have happened before we registered: re-check after a short wait.
            _ = semaphore.wait(timeout: .now() + .milliseconds(200))
        }
        if isEnded { return false }
        send(message)
        return true
    }

    func writabilityChanged() {
        let waiters = state.withLock { s in
            defer { s.writableWaiters.removeAll() }
            return s.writableWaiters
        }
        for w in waiters { w.signal() }
    }

    // MARK: Flow control

    /// Stops (or resumes) reading from the socket: the peer's sends then block in its kernel buffers.
    func setReading(_ on: Bool) {
        channel.setOption(ChannelOptions.autoRead, value: on).whenComplete { _ in }
        if on { channel.read() }
    }

    func close(_ reason: String) {
        let handler = self.handler
        channel.eventLoop.execute { handler.value?.fail(reason) }
    }

    // MARK: From the handler

    /// nil: go on with the handshake; else why the connection is refused.
    func opened() -> String? {
        delegate.sessionOpened(self)
    }

    func authenticated(_ node: SigningPublicKey) {
        state.withLock { $0.node = node }
        delegate.sessionAuthenticated(self)
    }

    func received(_ message: Message) {
        delegate.session(self, received: message)
    }

    func failed(_ reason: String) {
        state.withLock { if $0.failure == nil { $0.failure = reason } }
    }

    func closed() {
        let (already, reason) = state.withLock { s in
            defer { s.ended = true }
            return (s.ended, s.failure)
        }
        guard !already else { return }
        writabilityChanged()
        handler.value = nil
        delegate.sessionEnded(self, reason: reason)
    }
}

/// Forwards NIO's writability changes to the session's blocked senders.
private final class WritabilityHandler: ChannelInboundHandler {
    typealias InboundIn = Never
    let session: Session
    init(session: Session) { self.session = session }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        session.writabilityChanged()
        context.fireChannelWritabilityChanged()
    }
}
