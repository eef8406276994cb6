import CSodium

/// Key derivation from a passphrase: Argon2id v1.3 (libsodium `crypto_pwhash` with
/// `crypto_pwhash_ALG_ARGON2ID13`). Deliberately slow and memory-hard, so that each guess of an
/// offline attacker costs `opsLimit` passes over `memLimit` bytes.
///
/// The parameters and the salt are not secret; whoever stores a derived key's ciphertext stores them
/// next to it, so that the cost can be raised later without breaking old files.
public enum PasswordHash {
    /// libsodium's `crypto_pwhash_ALG_ARGON2ID13`; the number is part of stored formats.
    public static let argon2id13: UInt8 = 2
    public static let saltByteCount = 16
    /// Bounds libsodium accepts for Argon2id (a parameter outside them is rejected, never clamped).
    public static let minimumOpsLimit: UInt64 = 1
    public static let minimumMemLimit: UInt64 = 8192

    /// The cost of one derivation.
    public struct Parameters: Hashable, Sendable, CustomStringConvertible {
        /// Passes over memory (crypto_pwhash `opslimit`).
        public var opsLimit: UInt64
        /// Bytes of memory (crypto_pwhash `memlimit`).
        public var memLimit: UInt64

        public init(opsLimit: UInt64, memLimit: UInt64) {
            self.opsLimit = opsLimit
            self.memLimit = memLimit
        }

        /// `crypto_pwhash_OPSLIMIT_INTERACTIVE` / `MEMLIMIT_INTERACTIVE` (2 passes, 64 MiB).
        public static var interactive: Parameters {
            Parameters(
                opsLimit: UInt64(crypto_pwhash_opslimit_interactive()),
                memLimit: UInt64(crypto_pwhash_memlimit_interactive()))
        }

        /// `crypto_pwhash_OPSLIMIT_MODERATE` / `MEMLIMIT_MODERATE` (3 passes, 256 MiB).
        public static var moderate: Parameters {
            Parameters(
                opsLimit: UInt64(crypto_pwhash_opslimit_moderate()),
                memLimit: UInt64(crypto_pwhash_memlimit_moderate()))
        }

        /// `crypto_pwhash_OPSLIMIT_SENSITIVE` / `MEMLIMIT_SENSITIVE` (4 passes, 1 GiB).
        public static var sensitive: Parameters {
            Parameters(
                opsLimit: UInt64(crypto_pwhash_opslimit_sensitive()),
                memLimit: UInt64(crypto_pwhash_memlimit_sensitive()))
        }

        public var description: String { "opslimit \(opsLimit), memlimit \(memLimit) bytes" }
    }

    /// Derives `outputByteCount` bytes from `passphrase` and `salt` (crypto_pwhash, Argon2id13).
    ///
    /// Throws `invalidLength` for a salt that is not `saltByteCount` bytes, `failure` for parameters
    /// or a passphrase libsodium does not accept, or when the memory cannot be allocated.
    public static func deriveKey(
        passphrase: SecureBytes, salt: [UInt8], parameters: Parameters, outputByteCount: Int = 32
    ) throws(CryptoError) -> SecureBytes {
        Sodium.ready()
        precondition(crypto_pwhash_saltbytes() == saltByteCount, "crypto_pwhash_SALTBYTES changed")
        guard salt.count == saltByteCount else { throw .invalidLength(expected: saltByteCount, actual: salt.count) }
        guard outputByteCount >= crypto_pwhash_bytes_min(), UInt64(outputByteCount) <= UInt64(UInt32.max) else {
            throw .failure("pwhash output of \(outputByteCount) bytes is out of range")
        }
        try check(parameters)
        guard UInt64(passphrase.count) <= UInt64(crypto_pwhash_passwd_max()) else {
            throw .failure("passphrase too long for crypto_pwhash")
        }
        let key = SecureBytes(count: outputByteCount)
        var rc: Int32 = 0
        passphrase.withUnsafeBytes { password in
            // crypto_pwhash reads the password as `const char *`; an empty one needs a valid pointer.
            let empty: CChar = 0
            withUnsafePointer(to: empty) { emptyPointer in
                let passwordPointer =
                    password.baseAddress?.assumingMemoryBound(to: CChar.self) ?? emptyPointer
                key.initialize { out in
                    rc = crypto_pwhash(
                        out.baseAddress!, UInt64(outputByteCount), passwordPointer, UInt64(password.count),
                        salt, parameters.opsLimit, Int(parameters.memLimit), Int32(argon2id13))
                }
            }
        }
        // libsodium fails only on bad arguments (checked above) or when it cannot allocate memLimit bytes.
        guard rc == 0 else { throw .failure("crypto_pwhash failed (\(parameters)); out of memory?") }
        return key
    }

    /// Throws `failure` unless libsodium's Argon2id accepts `parameters` on this platform.
    public static func check(_ parameters: Parameters) throws(CryptoError) {
        Sodium.ready()
        guard parameters.opsLimit >= UInt64(crypto_pwhash_opslimit_min()),
            parameters.opsLimit <= UInt64(crypto_pwhash_opslimit_max())
        else { throw .failure("pwhash opslimit \(parameters.opsLimit) is out of range") }
        guard parameters.memLimit >= UInt64(crypto_pwhash_memlimit_min()),
            parameters.memLimit <= UInt64(crypto_pwhash_memlimit_max())
        else { throw .failure("pwhash memlimit \(parameters.memLimit) is out of range") }
    }
}
