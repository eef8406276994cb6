import HypernetCrypto
import HypernetModel
import NIOCore

/// One TCP connection's protocol stack on its event loop: Noise XX handshake, then encrypted records
/// carrying frames (docs/protocol.md). Records are `u16 length | Noise message` (at most 65535 bytes, as
/// Noise requires); frames may span records. Any violation closes the connection with one reason.
final class SecureChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let prologue = Array("hypernet/1".utf8)
    static let maximumRecord = 65535
    static let maximumPlaintext = maximumRecord - 16
    static let handshakeTimeout: TimeAmount = .seconds(10)

    private enum Phase {
        case handshake(NoiseHandshake)
        case transport(send: NoiseCipherState, receive: NoiseCipherState)
        case closed
    }

    private let session: Session
    private let nodeKey: SigningKeyPair
    private let budget: FrameBudget
    /// What this connection holds of `budget`.
    private var charged = 0
    private let staticKey: BoxKeyPair
    private var phase: Phase
    private var received = ByteBuffer()
    private var plaintext: [UInt8] = []
    private var context: ChannelHandlerContext?

    init(session: Session, nodeKey: SigningKeyPair, budget: FrameBudget) {
        self.session = session
        self.nodeKey = nodeKey
        self.budget = budget
        staticKey = BoxKeyPair.generate()
        phase = .handshake(
            NoiseHandshake(
                role: session.isInitiator ? .initiator : .responder, prologue: Self.prologue, staticKey: staticKey))
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        if let refused = session.opened() { return fail(refused) }
        let loopSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: Self.handshakeTimeout) {
            if case .handshake = loopSelf.value.phase { loopSelf.value.fail("handshake not finished in 10 s") }
        }
        if session.isInitiator { handshakeWrite(payload: []) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        phase = .closed
        releaseBuffers()
        session.closed()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        releaseBuffers()
    }

    /// Frees what the connection buffered and returns its charge (a connect that failed is removed, never inactive).
    private func releaseBuffers() {
        plaintext = []
        received = ByteBuffer()
        budget.release(charged)
        charged = 0
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail("\(error)")
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let idle = event as? IdleStateHandler.IdleStateEvent else {
            return context.fireUserInboundEventTriggered(event)
        }
        switch idle {
        case .read: fail("peer silent for \(Session.silenceLimit) s")
        case .write: send(.ping)
        default: break
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        received.writeBuffer(&bytes)
        while case .some(let length) = received.getInteger(
            at: received.readerIndex, endianness: .little, as: UInt16.self),
            received.readableBytes >= 2 + Int(length)
        {
            received.moveReaderIndex(forwardBy: 2)
            let record = received.readBytes(length: Int(length))!
            do { try process(record) } catch {
                fail(error)
                return
            }
            if case .closed = phase { return }
        }
        received.discardReadBytes()
        if !chargeHeld() {
            fail("peers' unfinished frames would exceed the \(budget.limit >> 20) MiB budget")
        }
    }

    /// Charges the budget for what this connection holds now: the bytes of an unfinished record, and its unfinished
    /// frame at its declared length (whose room is reserved at once, so a large frame grows without copies). False
    /// if that does not fit.
    private func chargeHeld() -> Bool {
        var frame = plaintext.count
        if frame >= 4 {
            frame = 4 + (Int(plaintext[0]) | Int(plaintext[1]) << 8 | Int(plaintext[2]) << 16 | Int(plaintext[3]) << 24)
        } else if plaintext.isEmpty, plaintext.capacity > Self.maximumRecord {
            plaintext = []  // a large frame's room, once it has been decoded
        }
        let held = received.readableBytes + frame
        guard budget.recharge(from: charged, to: held) else { return false }
        charged = held
        if plaintext.capacity < frame { plaintext.reserveCapacity(frame) }
        return true
    }

    private func process(_ record: [UInt8]) throws {
        switch phase {
        case .handshake(var handshake):
            let payload = try handshake.readMessage(record)
            if handshake.isComplete {
                // Responder, message 3: the initiator's proof.
                try finish(&handshake, remote: NodeAuth.verify(payload, staticKey: handshake.remoteStaticKey!))
            } else if session.isInitiator {
                // Message 2 carries the responder's proof; message 3 carries ours and completes.
                let node = try NodeAuth.verify(payload, staticKey: handshake.remoteStaticKey!)
                try write(&handshake, payload: NodeAuth.payload(node: nodeKey, staticKey: staticKey.publicKey))
                try finish(&handshake, remote: node)
            } else {
                try write(&handshake, payload: NodeAuth.payload(node: nodeKey, staticKey: staticKey.publicKey))
                phase = .handshake(handshake)
            }
        case .transport(let send, var receive):
            plaintext += try record.withUnsafeBytes { (b) throws(NoiseError) in try receive.decrypt(b) }
            phase = .transport(send: send, receive: receive)
            for message in try Frame.decode(&plaintext) {
                session.received(message)
            }
        case .closed:
            break
        }
    }

    private func finish(_ handshake: inout NoiseHandshake, remote node: SigningPublicKey) throws {
        guard handshake.isComplete else { throw SessionError.protocolViolation("handshake incomplete") }
        let (send, receive) = handshake.split()
        phase = .transport(send: send, receive: receive)
        session.authenticated(node)
    }

    private func write(_ handshake: inout NoiseHandshake, payload: [UInt8]) throws {
        guard let context else { return }
        writeRecord(try handshake.writeMessage(payload: payload), context: context)
        context.flush()
    }

    private func handshakeWrite(payload: [UInt8]) {
        guard case .handshake(var handshake) = phase else { return }
        do {
            try write(&handshake, payload: payload)
            phase = .handshake(handshake)
        } catch {
            fail(error)
        }
    }

    private func writeRecord(_ record: [UInt8], context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: 2 + record.count)
        buffer.writeInteger(UInt16(record.count), endianness: .little)
        buffer.writeBytes(record)
        context.write(wrapOutboundOut(buffer), promise: nil)
    }

    /// Encrypts and writes one message (on the event loop); dropped if the connection is not up.
    func send(_ message: Message) {
        guard case .transport(var sender, let receiver) = phase, let context else { return }
        let frame = Frame.encode(message)
        do {
            var start = 0
            while start < frame.count {
                let end = min(start + Self.maximumPlaintext, frame.count)
                let record = try frame.withUnsafeBytes { (b) throws(NoiseError) in
                    try sender.encrypt(UnsafeRawBufferPointer(rebasing: b[start..<end]))
                }
                writeRecord(record, context: context)
                start = end
            }
            phase = .transport(send: sender, receive: receiver)
            context.flush()
        } catch {
            fail(error)
        }
    }

    func fail(_ error: any Error) {
        fail(String(describing: error))
    }

    func fail(_ reason: String) {
        if case .closed = phase { return }
        phase = .closed
        session.failed(reason)
        context?.close(promise: nil)
    }
}

enum SessionError: Error, CustomStringConvertible {
    case protocolViolation(String)
    var description: String {
        switch self {
        case .protocolViolation(let why): return why
        }
    }
}
