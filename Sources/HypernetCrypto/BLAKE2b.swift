import CSodium

/// BLAKE2b with a 32-byte output (libsodium `crypto_generichash`). Keys, when given, are 16...64 bytes.
public enum BLAKE2b {
    public static func hash(_ data: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer? = nil) -> Digest {
        Sodium.ready()
        if let key { checkKey(key.count) }
        return Digest { out in
            let rc = crypto_generichash(
                out, Digest.byteCount, data.sodiumPointer, UInt64(data.count),
                key?.sodiumPointer, key?.count ?? 0)
            precondition(rc == 0, "crypto_generichash failed")
        }
    }

    public static func hash(_ data: [UInt8], key: [UInt8]? = nil) -> Digest {
        data.withUnsafeBytes { data in
            guard let key else { return hash(data) }
            return key.withUnsafeBytes { hash(data, key: $0) }
        }
    }

    public static func hash(_ data: [UInt8], key: SecureBytes) -> Digest {
        data.withUnsafeBytes { data in key.withUnsafeBytes { hash(data, key: $0) } }
    }

    /// A wrong key length is a programmer error: keys are fixed-size values chosen in code.
    fileprivate static func checkKey(_ count: Int) {
        precondition(
            (crypto_generichash_keybytes_min()...crypto_generichash_keybytes_max()).contains(count),
            "BLAKE2b key must be 16...64 bytes, got \(count)")
    }

    /// Incremental hashing (crypto_generichash_init/update/final). A value type: copying a hasher
    /// forks the state (copy on write).
    public struct Hasher: Sendable {
        private var state: State

        public init(key: [UInt8]? = nil) {
            guard let key else {
                self.init(rawKey: nil)
                return
            }
            self = key.withUnsafeBytes { Hasher(rawKey: $0) }
        }

        public init(key: UnsafeRawBufferPointer) { self.init(rawKey: key) }

        /// Keeps the key out of ordinary (unwiped) memory.
        public init(key: SecureBytes) {
            self = key.withUnsafeBytes { Hasher(rawKey: $0) }
        }

        private init(rawKey key: UnsafeRawBufferPointer?) {
            Sodium.ready()
            state = State()
            if let key { checkKey(key.count) }
            let rc = crypto_generichash_init(state.pointer, key?.sodiumPointer, key?.count ?? 0, Digest.byteCount)
            precondition(rc == 0, "crypto_generichash_init failed")
        }

        public mutating func update(_ data: UnsafeRawBufferPointer) {
            if !isKnownUniquelyReferenced(&state) { state = state.copy() }
            let rc = crypto_generichash_update(state.pointer, data.sodiumPointer, UInt64(data.count))
            precondition(rc == 0, "crypto_generichash_update failed")
        }

        public mutating func update(_ data: [UInt8]) {
            data.withUnsafeBytes { update($0) }
        }

        public consuming func finalize() -> Digest {
            // final mutates the state; a shared state must not be disturbed.
            if !isKnownUniquelyReferenced(&state) { state = state.copy() }
            let pointer = state.pointer
            return Digest { out in
                precondition(crypto_generichash_final(pointer, out, Digest.byteCount) == 0)
            }
        }

        /// Heap state with the 64-byte alignment libsodium declares for it (CRYPTO_ALIGN(64)); Swift does
        /// not import that over-aligned struct, so the C functions take it as an OpaquePointer.
        ///
        /// `@unchecked Sendable` is safe because `Hasher` mutates a `State` only when it holds the only
        /// reference (isKnownUniquelyReferenced above); shared instances are read-only.
        private final class State: @unchecked Sendable {
            static let size = crypto_generichash_statebytes()
            let pointer: OpaquePointer

            init() {
                pointer = OpaquePointer(UnsafeMutableRawPointer.allocate(byteCount: Self.size, alignment: 64))
            }

            func copy() -> State {
                let other = State()
                UnsafeMutableRawPointer(other.pointer).copyMemory(from: UnsafeRawPointer(pointer), byteCount: Self.size)
                return other
            }

            deinit {
                // A keyed state holds key material.
                sodium_memzero(UnsafeMutableRawPointer(pointer), Self.size)
                UnsafeMutableRawPointer(pointer).deallocate()
            }
        }
    }
}
