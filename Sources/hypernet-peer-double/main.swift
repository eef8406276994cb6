// hypernet-peer-double: a hostile peer for tests (tests/integration/test_hostile_peers.py).
//
// Connects to a node over TCP (loopback only: anything else is refused), runs the initiator side of the
// Noise XX handshake with the public Noise API and a NodeAuth payload, then misbehaves as `--mode` says,
// and checks that the node closes the connection. Prints one line per run and exits
//   0  the node closed every connection as expected within --timeout
//   1  it did not (kept a connection open, or accepted what it must refuse)
//   2  usage error
//   3  the node could not be reached, or refused an honest handshake
//
// Modes:
//   garbage       random bytes instead of a handshake
//   wrong-key     NodeAuth claims one Ed25519 key but is signed by another
//   oversized     after the handshake, a frame header with length 0xFFFFFFFF
//   bad-version   after the handshake, a frame of version 9
//   truncated     after the handshake, half a record, then our end closes (FIN)
//   replay        after the handshake, an encrypted record sent twice
//   flood-chunks  after the handshake, chunk frames nobody asked for (4 KiB of random bytes each)
//   flood-empty-chunks  the same with empty chunks (0 bytes each: no byte budget is ever used up)
//   honest-hello  a valid hello, then silence: the node must drop us after its silence limit (30 s)
//   partial-frame after the handshake, a frame header declaring the largest frame (17 MiB), --frame-bytes of
//                 it (default 4 MiB), then silence: dropped over the node's frame budget, or when silent 30 s
//   hold          connect and send nothing: dropped over the node's connection caps at once, or when its
//                 handshake limit (10 s) passes
//   wrong-chunk   relays genuine revisions, claims every chunk of each `interest` (a full `have`), and
//                 answers the node's `want` with chunks (held = 1) whose bytes
//                 do not hash to their ids (a marker, FORGED_MARKER, repeated): the node must close. The
//                 revisions come from --source HOST:PORT, an honest node holding them (we subscribe to every
//                 tree in its hello); the node under attack should hold those trees and lack their chunks.
//
// Wire format (docs/protocol.md, Sources/HypernetSync/Transport): records `u16 LE length | Noise message`,
// frames `u32 LE length | u8 version | u8 type | payload` inside the decrypted stream; NodeAuth is
// `u8 1 | node Ed25519 key (32) | Ed25519 signature over "hypernet noise static key v1\n" || X25519 static key`.

import Glibc
import HypernetCrypto
import HypernetModel
import HypernetStore
import HypernetSync
import Synchronization

enum Mode: String, CaseIterable {
    case garbage
    case wrongKey = "wrong-key"
    case oversized
    case badVersion = "bad-version"
    case truncated, replay
    case floodChunks = "flood-chunks"
    case floodEmptyChunks = "flood-empty-chunks"
    case honestHello = "honest-hello"
    case partialFrame = "partial-frame"
    case hold
    case wrongChunk = "wrong-chunk"
}

struct Options {
    var host = ""
    var port: UInt16 = 0
    var mode = Mode.garbage
    var timeout: Double?
    var connections = 1
    var parallel = 1
    var frames: Int?
    var frameBytes = 4 << 20
    /// Connections leave from this many loopback addresses, 127.254.0.1 and up, in turn (0: the system's choice).
    var sources = 0
    /// wrong-chunk: the honest node whose log we relay.
    var source: (host: String, port: UInt16)?

    /// How long the node has to close one connection.
    var closeTimeout: Double {
        timeout ?? ([.honestHello, .partialFrame].contains(mode) ? 45 : mode == .hold ? 20 : 10)
    }
}

let usage = """
    usage: hypernet-peer-double --connect 127.0.0.X:PORT --mode MODE [--timeout SECONDS] [--connections N] [--parallel P] [--frames N]
    modes: \(Mode.allCases.map(\.rawValue).joined(separator: " "))
    --timeout: how long the node has to close each connection (default 10 s; honest-hello 45 s)
    --connections N: N connections, --parallel P of them at a time (default 1 and 1)
    --frames N: flood modes, chunk frames to send at most (default 16384 for flood-chunks, 100000 empty ones)
    --frame-bytes N: partial-frame, bytes of the frame to send (default 4 MiB)
    --sources K: connect from K loopback addresses, 127.254.0.1 to 127.254.0.K, in turn (default: one, the system's)
    --source HOST:PORT: wrong-chunk, the honest node whose revisions we relay (required there)
    """

func fail(_ message: String, code: Int32) -> Never {
    print("hypernet-peer-double: \(message)")
    exit(code)
}

func parseOptions() -> Options {
    var o = Options()
    var args = CommandLine.arguments.dropFirst()
    var connect: String?
    func value(_ name: String) -> String {
        guard let v = args.popFirst() else { fail("\(name) needs a value\n\(usage)", code: 2) }
        return v
    }
    var source: String?
    while let a = args.popFirst() {
        switch a {
        case "--connect": connect = value(a)
        case "--source": source = value(a)
        case "--mode":
            let m = value(a)
            guard let mode = Mode(rawValue: m) else { fail("unknown mode \(m)\n\(usage)", code: 2) }
            o.mode = mode
        case "--timeout":
            guard let t = Double(value(a)), t > 0 else { fail("--timeout must be a positive number", code: 2) }
            o.timeout = t
        case "--connections":
            guard let n = Int(value(a)), n > 0 else { fail("--connections must be positive", code: 2) }
            o.connections = n
        case "--frames":
            guard let n = Int(value(a)), n > 0 else { fail("--frames must be positive", code: 2) }
            o.frames = n
        case "--frame-bytes":
            guard let n = Int(value(a)), n >= 0, n <= Message.Limits.maximumFrame else {
                fail("--frame-bytes must be 0 to \(Message.Limits.maximumFrame)", code: 2)
            }
            o.frameBytes = n
        case "--sources":
            guard let n = Int(value(a)), (1...250).contains(n) else { fail("--sources must be 1 to 250", code: 2) }
            o.sources = n
        case "--parallel":
            guard let n = Int(value(a)), n > 0, n <= 512 else { fail("--parallel must be 1 to 512", code: 2) }
            o.parallel = n
        case "-h", "--help":
            print(usage)
            exit(0)
        default: fail("unknown argument \(a)\n\(usage)", code: 2)
        }
    }
    guard let connect, let target = loopback(connect) else {
        fail("--connect HOST:PORT is required\n\(usage)", code: 2)
    }
    (o.host, o.port) = target
    if o.mode == .wrongChunk {
        guard let source, let honest = loopback(source) else {
            fail("--mode wrong-chunk needs --source HOST:PORT\n\(usage)", code: 2)
        }
        o.source = honest
    }
    return o
}

/// `HOST:PORT` split, or nil if malformed. Loopback only: this tool sends hostile traffic and must never reach
/// another machine.
func loopback(_ text: String) -> (host: String, port: UInt16)? {
    guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else {
        return nil
    }
    let host = String(text[..<colon])
    var address = in_addr()
    guard inet_pton(AF_INET, host, &address) == 1, UInt32(bigEndian: address.s_addr) >> 24 == 127 else {
        fail("refusing \(host): only 127.0.0.0/8 addresses are allowed", code: 2)
    }
    return (host, port)
}

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// `1.23` (no Foundation here).
func seconds(_ t: Double) -> String {
    let centis = Int((t * 100).rounded())
    let frac = centis % 100
    return "\(centis / 100).\(frac < 10 ? "0" : "")\(frac)"
}

// MARK: Socket

enum Outcome: Error {
    /// The node closed the connection (EOF or reset): what every mode expects, sooner or later.
    case closedByNode
    case timedOut
    case failed(String)
}

final class Connection {
    let fd: Int32

    /// `source`: the loopback address to connect from (nil: the system's choice).
    init(host: String, port: UInt16, source: String? = nil) throws(Outcome) {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw .failed("socket: \(String(cString: strerror(errno)))") }
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            inet_pton(AF_INET, source, &local.sin_addr)
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard bound == 0 else {
                let why = String(cString: strerror(errno))
                close(fd)
                throw .failed("bind to \(source): \(why)")
            }
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        inet_pton(AF_INET, host, &address.sin_addr)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else {
            let why = String(cString: strerror(errno))
            close(fd)
            throw .failed("connect to \(host):\(port): \(why)")
        }
    }

    deinit { close(fd) }

    /// Sends everything, or throws `closedByNode` if the node has closed (EPIPE, ECONNRESET).
    func send(_ bytes: [UInt8]) throws(Outcome) {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL))
            }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EPIPE || errno == ECONNRESET { throw .closedByNode }
                throw .failed("send: \(String(cString: strerror(errno)))")
            }
            sent += n
        }
    }

    /// Up to `max` bytes once readable; throws `closedByNode` on EOF or reset, `timedOut` at `deadline`.
    func receive(max: Int, deadline: Double) throws(Outcome) -> [UInt8] {
        while true {
            let left = deadline - now()
            guard left > 0 else { throw .timedOut }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&p, 1, Int32(min(left * 1000, 1_000_000)) + 1)
            if ready < 0 {
                if errno == EINTR { continue }
                throw .failed("poll: \(String(cString: strerror(errno)))")
            }
            if ready == 0 { continue }
            var buffer = [UInt8](repeating: 0, count: max)
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, max, 0) }
            if n == 0 { throw .closedByNode }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                if errno == ECONNRESET { throw .closedByNode }
                throw .failed("recv: \(String(cString: strerror(errno)))")
            }
            return Array(buffer.prefix(n))
        }
    }

    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    /// Whether the node has closed: non-blocking peek.
    func nodeHasClosed() -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, 0) > 0 else { return false }
        if p.revents & Int16(POLLERR | POLLHUP) != 0 { return true }
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        return n == 0 || (n < 0 && errno == ECONNRESET)
    }
}

/// Records in and out: `u16 LE length | Noise message`.
final class RecordStream {
    let connection: Connection
    private var buffer: [UInt8] = []

    init(_ connection: Connection) { self.connection = connection }

    static func frame(_ message: [UInt8]) -> [UInt8] {
        [UInt8(message.count & 0xFF), UInt8(message.count >> 8)] + message
    }

    func send(_ message: [UInt8]) throws(Outcome) { try connection.send(Self.frame(message)) }

    func receive(deadline: Double) throws(Outcome) -> [UInt8] {
        while true {
            if buffer.count >= 2 {
                let length = Int(buffer[0]) | Int(buffer[1]) << 8
                if buffer.count >= 2 + length {
                    let record = Array(buffer[2..<2 + length])
                    buffer.removeFirst(2 + length)
                    return record
                }
            }
            buffer += try connection.receive(max: 65536, deadline: deadline)
        }
    }
}

// MARK: One hostile connection

struct Session {
    var records: RecordStream
    var send: NoiseCipherState
    var receive: NoiseCipherState
    var plaintext: [UInt8] = []
    /// What `authenticated` read: given out by the next `receiveMessages`.
    var early: [Message] = []

    mutating func encrypt(_ plain: [UInt8]) throws(Outcome) -> [UInt8] {
        do { return try plain.withBytes { (b) throws(NoiseError) in try send.encrypt(b) } } catch {
            throw .failed("encrypt: \(error)")
        }
    }

    mutating func sendFrame(_ frame: [UInt8]) throws(Outcome) { try records.send(encrypt(frame)) }

    /// The node's next messages (at least one record's worth).
    mutating func receiveMessages(deadline: Double) throws(Outcome) -> [Message] {
        if !early.isEmpty {
            defer { early = [] }
            return early
        }
        let record = try records.receive(deadline: deadline)
        do {
            plaintext += try record.withBytes { (b) throws(NoiseError) in try receive.decrypt(b) }
            return try Frame.decode(&plaintext)
        } catch {
            throw .failed("the node sent a record we cannot read: \(error)")
        }
    }
}

let context = Array("hypernet noise static key v1\n".utf8)

func nodeAuth(claiming node: SigningKeyPair, signedBy signer: SigningKeyPair, staticKey: BoxPublicKey) -> [UInt8] {
    [1] + node.publicKey.bytes + signer.signature(for: context + staticKey.bytes)
}

/// Runs the initiator's handshake; with `forgedAuth` the third message claims a key it does not hold.
func handshake(_ connection: Connection, forgedAuth: Bool, deadline: Double) throws(Outcome) -> Session {
    let records = RecordStream(connection)
    let nodeKey = SigningKeyPair.generate()
    let staticKey = BoxKeyPair.generate()
    var hs = NoiseHandshake(role: .initiator, prologue: Array("hypernet/1".utf8), staticKey: staticKey)
    do {
        try records.send(hs.writeMessage(payload: []))
        let payload = try hs.readMessage(records.receive(deadline: deadline))
        // The responder's proof: `1 | key | signature over context || its static key`.
        guard payload.count == 97, payload[0] == 1, let remote = hs.remoteStaticKey,
            let key = try? SigningPublicKey(bytes: payload[1..<33]),
            key.isValidSignature(Array(payload[33...]), for: context + remote.bytes)
        else { throw Outcome.failed("the node's NodeAuth does not verify") }
        let signer = forgedAuth ? SigningKeyPair.generate() : nodeKey
        try records.send(
            hs.writeMessage(payload: nodeAuth(claiming: nodeKey, signedBy: signer, staticKey: staticKey.publicKey)))
    } catch let e as Outcome {
        throw e
    } catch {
        throw .failed("handshake: \(error)")
    }
    let (send, receive) = hs.split()
    return Session(records: records, send: send, receive: receive)
}

/// Handshake, then the node's first message (decrypted and decoded): proof it accepted us.
func authenticated(_ connection: Connection, deadline: Double) throws(Outcome) -> Session {
    var session: Session
    do { session = try handshake(connection, forgedAuth: false, deadline: deadline) } catch .closedByNode {
        throw .failed("the node closed the connection during an honest handshake")
    }
    while session.early.isEmpty {
        do { session.early = try session.receiveMessages(deadline: deadline) } catch .closedByNode {
            throw .failed("the node closed the connection after an honest handshake")
        }
    }
    // Usually its hello; an ack it broadcasts may come first. Either proves it authenticated us.
    return session
}

/// Reads (and discards) until the node closes.
func awaitClose(_ connection: Connection, deadline: Double) throws(Outcome) {
    while true { _ = try connection.receive(max: 65536, deadline: deadline) }
}

let honestHello = Message.hello(
    Message.Hello(
        listen: "", software: "hypernet-peer-double", storeID: "peer-double", trees: [], pinsEverything: false))

/// One connection in `mode`; returns what happened (one phrase) if the node closed it as expected.
func run(_ o: Options, mode: Mode) throws(Outcome) -> String {
    if mode == .honestHello { return try runHonestHello(o) }
    if mode == .wrongChunk { return try runWrongChunk(o) }
    let start = now()
    let deadline = start + o.closeTimeout
    let connection = try Connection(host: o.host, port: o.port, source: Run.nextSource())
    var detail = ""
    do throws(Outcome) {
        switch mode {
        case .garbage:
            // Any message 1 of 32 bytes or more is a valid `e` (an X25519 key and a clear payload), so the
            // node answers it; the next record's AEAD cannot verify. Keep sending until the node gives up.
            var sent = 0
            while sent < 1 << 20, !connection.nodeHasClosed() {
                detail = "after \(sent) random bytes"
                try connection.send(SecureRandom.bytes(count: 4096))
                sent += 4096
            }
            detail = "after \(sent) random bytes"
        case .wrongKey:
            _ = try handshake(connection, forgedAuth: true, deadline: deadline)
            // Any record now would mean the node accepted a NodeAuth signed by another key.
            let record = try RecordStream(connection).receive(deadline: deadline)
            throw Outcome.failed("the node accepted a forged NodeAuth and sent a \(record.count)-byte record")
        case .oversized:
            var s = try authenticated(connection, deadline: deadline)
            try s.sendFrame([0xFF, 0xFF, 0xFF, 0xFF, Frame.version, 9])
            detail = "after a frame header of length 0xFFFFFFFF"
        case .badVersion:
            var s = try authenticated(connection, deadline: deadline)
            var frame = Frame.encode(.ping)
            frame[4] = 9
            try s.sendFrame(frame)
            detail = "after a frame of version 9"
        case .truncated:
            var s = try authenticated(connection, deadline: deadline)
            let record = RecordStream.frame(try s.encrypt(Frame.encode(honestHello)))
            try connection.send(Array(record.prefix(record.count / 2)))
            connection.shutdownWrite()
            detail = "after half a record (\(record.count / 2) of \(record.count) bytes) and our FIN"
        case .replay:
            var s = try authenticated(connection, deadline: deadline)
            let record = try s.encrypt(Frame.encode(honestHello))
            try s.records.send(record)
            try s.records.send(record)
            detail = "after a replayed record"
        case .floodChunks, .floodEmptyChunks:
            // Pushed chunks are accepted up to a byte budget (SyncNode.pushLimit x (window + 1), 20 MiB):
            // 64 MiB is well past it. Empty chunks spend no budget: 100,000 of them.
            let size = mode == .floodChunks ? 4096 : 0
            let limit = o.frames ?? (mode == .floodChunks ? 16_384 : 100_000)
            var s = try authenticated(connection, deadline: deadline)
            var sent = 0
            while sent < limit, !connection.nodeHasClosed() {
                detail = "after \(sent) unrequested chunk frames of \(size) bytes"
                let id = try! Digest(bytes: SecureRandom.bytes(count: 32))
                try s.sendFrame(Frame.encode(.chunk(id: id, sealed: SecureRandom.bytes(count: size))))
                sent += 1
            }
            detail = "after \(sent) unrequested chunk frames of \(size) bytes"
        case .partialFrame:
            var s = try authenticated(connection, deadline: deadline)
            let length = Message.Limits.maximumFrame
            // u32 LE length | version | type (hello), then random bytes: the node never gets to decode it.
            var frame = (0..<4).map { UInt8(length >> (8 * $0) & 0xFF) }
            frame += [Frame.version, 1] + SecureRandom.bytes(count: max(0, o.frameBytes - 6))
            var sent = 0
            while sent < frame.count, !connection.nodeHasClosed() {
                let end = min(sent + 65535 - 16, frame.count)
                try s.sendFrame(Array(frame[sent..<end]))
                sent = end
            }
            detail = "after \(sent) bytes of a frame declaring \(length)"
        case .hold:
            detail = "holding an idle connection"
        case .honestHello, .wrongChunk:
            preconditionFailure("handled above")
        }
        try awaitClose(connection, deadline: deadline)
    } catch .closedByNode {
        return "node closed the connection \(detail.isEmpty ? "" : detail + ", ")\(seconds(now() - start)) s in"
    }
    fatalError("unreachable: awaitClose returns only by throwing")
}

/// honest-hello: a valid hello, then silence (no pings either). The node's keep-alive pings are counted;
/// an active node may send none, since any frame it sends (acks, ...) resets its write-idle timer.
func runHonestHello(_ o: Options) throws(Outcome) -> String {
    let start = now()
    let deadline = start + o.closeTimeout
    let connection = try Connection(host: o.host, port: o.port, source: Run.nextSource())
    var pings = 0
    do throws(Outcome) {
        var s = try authenticated(connection, deadline: deadline)
        try s.sendFrame(Frame.encode(honestHello))
        while true {
            for m in try s.receiveMessages(deadline: deadline) { if case .ping = m { pings += 1 } }
        }
    } catch .closedByNode {
        return "node closed the idle connection after \(seconds(now() - start)) s (it sent \(pings) keep-alive pings)"
    }
}

/// wrong-chunk's forged bytes: this marker, repeated (tests look for it in the node's files).
let forgedMarker = Array("hypernet-peer-double forged chunk\n".utf8)

/// wrong-chunk: the honest source's log of every tree it holds, relayed to the node under attack, whose `want`s
/// get chunks of forged bytes. Fails if the node closes before asking, or never asks.
func runWrongChunk(_ o: Options) throws(Outcome) -> String {
    let start = now()
    let deadline = start + o.closeTimeout
    let logs = try sourceLogs(o.source!, deadline: deadline)
    let connection = try Connection(host: o.host, port: o.port, source: Run.nextSource())
    var forged = 0
    do throws(Outcome) {
        var s = try authenticated(connection, deadline: deadline)
        let storeID = Hex.encode(SecureRandom.bytes(count: 16))
        try s.sendFrame(
            Frame.encode(
                .hello(
                    Message.Hello(
                        listen: "", software: "hypernet-peer-double", storeID: storeID,
                        trees: logs.map(\.tree), pinsEverything: false))))
        while true {
            for message in try s.receiveMessages(deadline: deadline) {
                switch message {
                case .subscribe(let tree, _, _):
                    let entries = logs.first { $0.tree == tree }?.entries ?? []
                    if !entries.isEmpty {
                        try s.sendFrame(
                            Frame.encode(.entries(tree: tree, storeID: storeID, entries: entries, caughtUp: false)))
                    }
                    try s.sendFrame(Frame.encode(.entries(tree: tree, storeID: storeID, entries: [], caughtUp: true)))
                case .interest(let swarm, let ids) where !ids.isEmpty:
                    // Claims to hold every chunk of the fetch, so that it is asked.
                    var bits = [UInt8](repeating: 0xff, count: (ids.count + 7) / 8)
                    if ids.count % 8 != 0 { bits[bits.count - 1] = UInt8(1 << (ids.count % 8)) - 1 }
                    try s.sendFrame(Frame.encode(.have(swarm: swarm, bits: bits)))
                case .want(let ids):
                    for id in ids {
                        let sealed = Array((0..<64).map { _ in forgedMarker }.joined())
                        try s.sendFrame(Frame.encode(.chunk(id: id, sealed: sealed)))
                        forged += 1
                    }
                default: break
                }
            }
        }
    } catch .closedByNode {
        guard forged > 0 else { throw .failed("the node closed the connection before asking for any chunk") }
        return "node closed the connection after \(forged) forged chunk(s), \(seconds(now() - start)) s in"
    }
}

/// Every tree the honest node at `address` offers, with its whole log (subscribed from the beginning, read
/// until its `caught up` run).
func sourceLogs(_ address: (host: String, port: UInt16), deadline: Double) throws(Outcome)
    -> [(tree: SigningPublicKey, entries: [LogEntry])]
{
    let connection = try Connection(host: address.host, port: address.port)
    var s = try authenticated(connection, deadline: deadline)
    try s.sendFrame(Frame.encode(honestHello))
    var logs: [(tree: SigningPublicKey, entries: [LogEntry])] = []
    var pending: Set<SigningPublicKey>? = nil
    while pending?.isEmpty != true {
        for message in try s.receiveMessages(deadline: deadline) {
            switch message {
            case .hello(let hello) where pending == nil:
                pending = Set(hello.trees)
                logs = hello.trees.map { ($0, []) }
                for tree in hello.trees {
                    try s.sendFrame(Frame.encode(.subscribe(tree: tree, storeID: hello.storeID, after: 0)))
                }
            case .entries(let tree, _, let entries, let caughtUp, _):
                guard let i = logs.firstIndex(where: { $0.tree == tree }) else { break }
                logs[i].entries += entries
                if let last = entries.last { try s.sendFrame(Frame.encode(.progress(tree: tree, seq: last.seq))) }
                if caughtUp { pending?.remove(tree) }
            default: break
            }
        }
    }
    return logs
}

// MARK: Main

/// Shared by the connection threads (read-only options; results under a lock).
enum Run {
    static let options = parseOptions()
    static let results = Mutex(Results())
    static let connectionsMade = Atomic(0)

    static func nextSource() -> String? {
        guard options.sources > 0 else { return nil }
        return "127.254.0.\(connectionsMade.add(1, ordering: .relaxed).oldValue % options.sources + 1)"
    }
}

struct Results {
    var closed: [String] = []
    var problems: [(code: Int32, what: String)] = []
}

func runOne() {
    let options = Run.options
    do throws(Outcome) {
        let line = try run(options, mode: options.mode)
        Run.results.withLock { $0.closed.append(line) }
    } catch {
        let problem: (Int32, String) =
            switch error {
            case .timedOut: (1, "the node kept the connection open for \(options.closeTimeout) s")
            case .failed(let why): (why.hasPrefix("connect") || why.contains("honest handshake") ? 3 : 1, why)
            case .closedByNode: (1, "unexpected close")
            }
        Run.results.withLock { $0.problems.append(problem) }
    }
}

/// A thread running `runOne`. Outside top-level code, so that the closure is not main-actor isolated.
func startConnectionThread() -> pthread_t {
    var thread = pthread_t()
    let rc = pthread_create(
        &thread, nil,
        { _ in
            runOne()
            return nil
        }, nil)
    guard rc == 0 else { fail("pthread_create: \(rc)", code: 1) }
    return thread
}

signal(SIGPIPE, SIG_IGN)
let options = Run.options
// Connections run on plain threads, `parallel` at a time (each blocks in poll).
var remaining = options.connections
while remaining > 0 {
    let batch = min(remaining, options.parallel)
    remaining -= batch
    var threads: [pthread_t] = []
    for _ in 0..<batch { threads.append(startConnectionThread()) }
    for t in threads { pthread_join(t, nil) }
}

let final = Run.results.withLock { $0 }
let mode = options.mode.rawValue
if let worst = final.problems.max(by: { $0.code < $1.code }) {
    print("\(mode): FAILED \(final.problems.count) of \(options.connections) connections: \(worst.what)")
    exit(worst.code)
}
if options.connections == 1 {
    print("\(mode): \(final.closed[0])")
} else {
    print("\(mode): the node closed all \(options.connections) connections as expected (e.g. \(final.closed[0]))")
}
exit(0)
