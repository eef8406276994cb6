/// Errors of the crypto layer. Authentication failures are thrown, never returned as nil.
public enum CryptoError: Error, Equatable, Sendable {
    /// A MAC, signature-checked box or AEAD tag did not verify: the bytes are forged or corrupt.
    case authenticationFailed
    /// A key, seed or digest had the wrong size.
    case invalidLength(expected: Int, actual: Int)
    /// Malformed input that is not an authentication question (e.g. bad hex).
    case failure(String)
}
