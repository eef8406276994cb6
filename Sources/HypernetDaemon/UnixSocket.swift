import Glibc

/// Thin wrappers over the Unix-domain socket calls the control channel needs.
enum UnixSocket {
    /// Runs `body` with a `sockaddr_un` for `path`. `sun_path` holds 107 bytes; a longer path (deep
    /// temporary homes in tests) is reached through its directory's `/proc/self/fd/N` link instead.
    static func withAddress<T>(
        _ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T
    ) throws(Failure) -> T {
        var directoryFD: Int32 = -1
        defer { if directoryFD >= 0 { close(directoryFD) } }
        var target = path
        if path.utf8.count >= MemoryLayout.size(ofValue: sockaddr_un().sun_path) {
            let slash = path.utf8.lastIndex(of: UInt8(ascii: "/"))
            let directory = slash.map { String(path[..<$0]) } ?? "."
            let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
            directoryFD = open(directory.isEmpty ? "/" : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if directoryFD < 0 { throw Failure.system(directory) }
            target = "/proc/self/fd/\(directoryFD)/\(name)"
        }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(target.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw Failure(.failure, "socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                body($0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
    }

    /// A pipe with both ends close-on-exec (`pipe2` is a GNU extension Swift does not import).
    static func closeOnExecPipe() throws(Failure) -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        if pipe(&fds) != 0 { throw Failure.system("pipe") }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return (fds[0], fds[1])
    }

    /// Writes all of `bytes` to a socket (or, with `isSocket` false, a pipe or file); false if the
    /// peer went away. Sockets use MSG_NOSIGNAL so a vanished peer is an error, not SIGPIPE.
    static func writeAll(_ fd: Int32, _ bytes: [UInt8], isSocket: Bool = true) -> Bool {
        bytes.withUnsafeBytes { buffer in
            var done = 0
            while done < buffer.count {
                let remaining = buffer.count - done
                let n =
                    isSocket
                    ? send(fd, buffer.baseAddress! + done, remaining, Int32(MSG_NOSIGNAL))
                    : write(fd, buffer.baseAddress! + done, remaining)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return false }
                done += n
            }
            return true
        }
    }
}

/// Reads newline-terminated lines from a blocking descriptor.
struct LineReader {
    let fd: Int32
    let limit: Int
    private var buffer: [UInt8] = []
    private var start = 0

    init(fd: Int32, limit: Int) {
        self.fd = fd
        self.limit = limit
    }

    enum Outcome {
        case line([UInt8])
        case end
        case tooLong
        case failed(Int32)
    }

    /// The next line without its newline; `.end` at EOF (a final unterminated line is dropped).
    mutating func next() -> Outcome {
        while true {
            if let newline = buffer[start...].firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(buffer[start..<newline])
                start = newline + 1
                if start == buffer.count {
                    buffer.removeAll(keepingCapacity: true)
                    start = 0
                }
                return .line(line)
            }
            if buffer.count - start > limit { return .tooLong }
            if start > 0 {
                buffer.removeFirst(start)
                start = 0
            }
            var chunk = [UInt8](repeating: 0, count: 64 * 1024)
            let n = read(fd, &chunk, chunk.count)
            if n < 0 {
                if errno == EINTR { continue }
                return .failed(errno)
            }
            if n == 0 { return .end }
            buffer.append(contentsOf: chunk[0..<n])
        }
    }
}
