/// Linux names (and symlink targets) are bytes; Hypernet keeps them as Strings, stored as UTF-8. A byte
/// that is not part of valid UTF-8 becomes one code point U+10FF00 + byte (the end of plane 16, private
/// use); a name that itself contains a code point of that range has that code point's bytes escaped the
/// same way. So every byte string has exactly one String, and `encode(decode(b)) == b` for every `b`:
/// names round-trip byte-exactly while valid UTF-8 names are stored unchanged.
public enum FileName {
    static let escapeBase: UInt32 = 0x10FF00

    public static func decode(_ bytes: some Collection<UInt8>) -> String {
        let bytes = Array(bytes)
        var scalars = String.UnicodeScalarView()
        var i = 0
        while i < bytes.count {
            let lead = bytes[i]
            let length =
                lead < 0x80 ? 1 : lead >> 5 == 0b110 ? 2 : lead >> 4 == 0b1110 ? 3 : lead >> 3 == 0b11110 ? 4 : 0
            if length > 0, i + length <= bytes.count,
                let piece = String(validating: bytes[i..<i + length], as: UTF8.self),
                let scalar = piece.unicodeScalars.first, piece.unicodeScalars.count == 1,
                !isEscape(scalar)
            {
                scalars.append(scalar)
                i += length
            } else {
                scalars.append(Unicode.Scalar(escapeBase + UInt32(lead))!)
                i += 1
            }
        }
        return String(scalars)
    }

    public static func encode(_ name: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(name.utf8.count)
        for scalar in name.unicodeScalars {
            if isEscape(scalar) {
                out.append(UInt8(scalar.value - escapeBase))
            } else {
                out.append(contentsOf: String(scalar).utf8)
            }
        }
        return out
    }

    /// The name's length in bytes as the kernel counts it (NAME_MAX applies to this).
    public static func byteCount(_ name: String) -> Int {
        name.unicodeScalars.reduce(0) { $0 + (isEscape($1) ? 1 : String($1).utf8.count) }
    }

    static func isEscape(_ scalar: Unicode.Scalar) -> Bool { scalar.value >= escapeBase }

    /// Whether a file may have this name: 1...255 bytes, not "." or "..", no "/" or NUL. The VFS makes no other,
    /// but a peer's listing can name anything, and the kernel must never be handed such a name.
    static func isValid(_ name: String) -> Bool {
        (1...VirtualFileSystem.nameMax).contains(byteCount(name)) && name != "." && name != ".."
            && !name.utf8.contains(where: { $0 == UInt8(ascii: "/") || $0 == 0 })
    }
}
