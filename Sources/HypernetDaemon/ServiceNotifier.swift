import Glibc
import Synchronization

/// Tells systemd how the daemon's start and stop go (sd_notify(3), without libsystemd). Under a `Type=notify`
/// unit, `$NOTIFY_SOCKET` names a datagram socket: a path, or an abstract name written with a leading `@`.
/// Each state is one datagram; a failed send changes nothing (the service manager then times out).
final class ServiceNotifier: Sendable {
    /// The socket's `sun_path` bytes (an abstract name starts with NUL), or nil outside a notify unit.
    private let address: [UInt8]?
    private let stopSent = Atomic<Bool>(false)

    /// The socket named in the environment. Removes the variable, so nothing this process starts
    /// (`fusermount3`) could speak for the service.
    static func fromEnvironment() -> ServiceNotifier {
        defer { unsetenv("NOTIFY_SOCKET") }
        guard let raw = getenv("NOTIFY_SOCKET") else { return ServiceNotifier(address: nil) }
        var bytes = Array(String(cString: raw).utf8)
        guard bytes.first == UInt8(ascii: "/") || bytes.first == UInt8(ascii: "@"),
            bytes.count < MemoryLayout.size(ofValue: sockaddr_un().sun_path)
        else { return ServiceNotifier(address: nil) }
        if bytes[0] == UInt8(ascii: "@") { bytes[0] = 0 }
        return ServiceNotifier(address: bytes)
    }

    private init(address: [UInt8]?) { self.address = address }

    /// The service is up: with a mount, once the mount answers.
    func ready() { send("READY=1") }

    /// Flushing and unmounting has begun; sent once.
    func stopping() {
        if !stopSent.exchange(true, ordering: .relaxed) { send("STOPPING=1") }
    }

    private func send(_ state: String) {
        guard let address else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var socketAddress = sockaddr_un()
        socketAddress.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &socketAddress.sun_path) { $0.copyBytes(from: address) }
        // An abstract name is exactly its bytes; a path ends at its NUL (sockaddr_un is zeroed).
        let length = MemoryLayout<sa_family_t>.size + address.count + (address[0] == 0 ? 0 : 1)
        let message = Array(state.utf8)
        _ = withUnsafePointer(to: &socketAddress) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { target in
                message.withUnsafeBytes {
                    sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), target, socklen_t(length))
                }
            }
        }
    }
}
