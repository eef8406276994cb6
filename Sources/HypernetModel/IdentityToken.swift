import HypernetCrypto

/// The printable form of an identity's two public keys: `hn1` + RFC 4648 base32 (lowercase, no padding) of
///
///     signing key (32) || box key (32) || checksum (4) = first 4 bytes of BLAKE2b-256(signing || box)
///
/// 68 bytes, so 109 base32 characters and 112 in all. The checksum catches typos and truncation; it is
/// not a security mechanism (the keys themselves are what peers verify).
public struct IdentityToken: Hashable, Sendable, CustomStringConvertible, LosslessStringConvertible {
    public static let prefix = "hn1"
    static let checksumByteCount = 4
    static let payloadByteCount = SigningPublicKey.byteCount + BoxPublicKey.byteCount
    static let encodedLength = prefix.utf8.count + Base32.encodedLength(byteCount: payloadByteCount + checksumByteCount)

    public let signing: SigningPublicKey
    public let box: BoxPublicKey

    public init(signing: SigningPublicKey, box: BoxPublicKey) {
        self.signing = signing
        self.box = box
    }

    public var description: String {
        let payload = signing.bytes + box.bytes
        return Self.prefix + Base32.encode(payload + Self.checksum(payload))
    }

    /// Rejects a wrong prefix, length, alphabet (uppercase included), non-zero padding bits or checksum.
    public init?(_ description: String) {
        let utf8 = Array(description.utf8)
        guard utf8.count == Self.encodedLength, utf8.starts(with: Self.prefix.utf8),
            let bytes = Base32.decode(utf8.dropFirst(Self.prefix.utf8.count))
        else { return nil }
        let payload = Array(bytes.prefix(Self.payloadByteCount))
        guard bytes.dropFirst(Self.payloadByteCount).elementsEqual(Self.checksum(payload)),
            let signing = try? SigningPublicKey(bytes: payload.prefix(SigningPublicKey.byteCount)),
            let box = try? BoxPublicKey(bytes: payload.dropFirst(SigningPublicKey.byteCount))
        else { return nil }
        self.init(signing: signing, box: box)
    }

    /// The first 12 characters after `hn1`, for logs.
    public var short: String { String(description.dropFirst(Self.prefix.count).prefix(12)) }

    private static func checksum(_ payload: [UInt8]) -> ArraySlice<UInt8> {
        BLAKE2b.hash(payload).bytes.prefix(checksumByteCount)
    }
}

/// RFC 4648 §6 base32 with the lowercase alphabet and no padding.
public enum Base32 {
    private static let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567".utf8)

    public static func encodedLength(byteCount: Int) -> Int { (byteCount * 8 + 4) / 5 }

    public static func encode(_ bytes: some Collection<UInt8>) -> String {
        var out = [UInt8]()
        out.reserveCapacity(encodedLength(byteCount: bytes.count))
        var buffer: UInt32 = 0
        var bits = 0
        for byte in bytes {
            buffer = buffer << 8 | UInt32(byte)
            bits += 8
            while bits >= 5 {
                bits -= 5
                out.append(alphabet[Int(buffer >> UInt32(bits) & 31)])
            }
        }
        if bits > 0 { out.append(alphabet[Int(buffer << UInt32(5 - bits) & 31)]) }
        return String(decoding: out, as: UTF8.self)
    }

    /// nil on a character outside the alphabet, an impossible length, or non-zero trailing bits
    /// (so every byte string has exactly one accepted text form).
    public static func decode(_ text: some Collection<UInt8>) -> [UInt8]? {
        guard ![1, 3, 6].contains(text.count % 8) else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(text.count * 5 / 8)
        var buffer: UInt32 = 0
        var bits = 0
        for c in text {
            let value: UInt8
            switch c {
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = c - UInt8(ascii: "a")
            case UInt8(ascii: "2")...UInt8(ascii: "7"): value = c - UInt8(ascii: "2") + 26
            default: return nil
            }
            buffer = buffer << 5 | UInt32(value)
            bits += 5
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits)))
            }
        }
        guard buffer & ((1 << UInt32(bits)) - 1) == 0 else { return nil }
        return out
    }
}
