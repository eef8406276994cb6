import HypernetCrypto
import HypernetModel

/// The handshake payload that binds a Noise static key to a node key (the libp2p-noise pattern):
/// `u8 version (1) | node Ed25519 key (32) | Ed25519 signature (64) over context || X25519 static key`.
/// The responder sends it in message 2, the initiator in message 3 (docs/protocol.md, "Handshake").
struct NodeAuth {
    static let version: UInt8 = 1
    static let context = Array("hypernet noise static key v1\n".utf8)
    static let byteCount = 1 + SigningPublicKey.byteCount + SigningKeyPair.signatureByteCount

    static func payload(node: SigningKeyPair, staticKey: BoxPublicKey) -> [UInt8] {
        [version] + node.publicKey.bytes + node.signature(for: context + staticKey.bytes)
    }

    /// The node key `payload` proves for `staticKey`; throws if it does not.
    static func verify(_ payload: [UInt8], staticKey: BoxPublicKey) throws(DecodingError) -> SigningPublicKey {
        guard payload.count == byteCount else { throw .invalid("handshake payload of \(payload.count) bytes") }
        guard payload[0] == version else { throw .unsupportedVersion(Int(payload[0])) }
        let node: SigningPublicKey
        do { node = try SigningPublicKey(bytes: payload[1..<33]) } catch { throw .invalid("node key") }
        let message = context + staticKey.bytes
        guard message.withUnsafeBytes({ node.isValidSignature(Array(payload[33...]), for: $0) }) else {
            throw .invalid("node signature over the handshake key")
        }
        return node
    }
}
