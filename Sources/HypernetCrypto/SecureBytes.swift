import CSodium

/// Secret bytes in `sodium_malloc` memory (guard pages, canary, mlock where allowed), wiped and
/// released by `sodium_free` in deinit.
///
/// `@unchecked Sendable` is safe because the bytes are written only while the instance is being built
/// (`init` and the module-internal `initialize`, both before the value is shared) and are read-only
/// afterwards; `count` and the pointer are immutable.
public final class SecureBytes: @unchecked Sendable {
    public let count: Int
    private let pointer: UnsafeMutableRawPointer

    /// Zero-filled.
    public init(count: Int) {
        precondition(count >= 0)
        Sodium.ready()
        // At least one byte, so that every instance owns a real allocation to free.
        guard let memory = sodium_malloc(max(count, 1)) else { fatalError("sodium_malloc(\(count)) failed") }
        sodium_memzero(memory, max(count, 1))
        self.count = count
        self.pointer = memory
    }

    public convenience init(_ bytes: some Collection<UInt8>) {
        self.init(count: bytes.count)
        initialize { buffer in _ = buffer.initialize(from: bytes) }
    }

    public static func random(count: Int) -> SecureBytes {
        let secret = SecureBytes(count: count)
        secret.initialize { buffer in randombytes_buf(buffer.baseAddress!, buffer.count) }
        return secret
    }

    deinit { sodium_free(pointer) }

    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(start: pointer, count: count))
    }

    /// A copy, for persisting to a 0600 file. The caller owns the copy's lifetime.
    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// Writes the bytes; only for instances that have not been shared yet (see the Sendable note).
    func initialize(_ body: (UnsafeMutableBufferPointer<UInt8>) -> Void) {
        guard count > 0 else { return }
        body(UnsafeMutableBufferPointer(start: pointer.assumingMemoryBound(to: UInt8.self), count: count))
    }

    /// Constant-time equality (sodium_memcmp).
    public func isEqual(to other: SecureBytes) -> Bool {
        guard count == other.count else { return false }
        return count == 0 || sodium_memcmp(pointer, other.pointer, count) == 0
    }
}

/// Wiping of ordinary buffers that briefly held secrets (e.g. a key file read into an array).
public enum SecureMemory {
    /// Zeroes `buffer` in a way the optimizer cannot drop (sodium_memzero).
    public static func zero(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        sodium_memzero(base, buffer.count)
    }

    public static func zero(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { zero($0) }
    }
}

/// Cryptographically secure random bytes (randombytes_buf: getrandom(2) on Linux).
public enum SecureRandom {
    public static func bytes(count: Int) -> [UInt8] {
        Sodium.ready()
        return makeBytes(count: count) { randombytes_buf($0, count) }
    }

    public static func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        Sodium.ready()
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        randombytes_buf(base, buffer.count)
    }
}
