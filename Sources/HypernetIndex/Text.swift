/// What of a file's bytes is text to index, and the snippet a result shows (docs/search.md, "Text").
public enum TextExtractor {
    /// The text of `bytes` (a file's first `SearchIndex.textLimit` bytes; `truncated` if there were more), or nil
    /// for binary content: UTF-16 with a byte-order mark; UTF-8 (a sequence cut by the limit is dropped); else
    /// ISO-8859-1 when no byte is a C0 control other than tab, newlines, form feed and escape. A NUL byte
    /// anywhere in the first 8 KiB means binary.
    public static func text(_ bytes: [UInt8], truncated: Bool = false) -> String? {
        if hasByteOrderMark(bytes) {
            let little = bytes[0] == 0xFF
            var units: [UInt16] = []
            units.reserveCapacity(bytes.count / 2)
            var i = 2
            while i + 1 < bytes.count {
                let (a, b) = (UInt16(bytes[i]), UInt16(bytes[i + 1]))
                units.append(little ? a | b << 8 : a << 8 | b)
                i += 2
            }
            return String(decoding: units, as: UTF16.self)
        }
        if isBinary(bytes) { return nil }
        var end = bytes.count
        if truncated {
            // Back off a multibyte sequence the limit cut: at most 3 continuation bytes and their lead.
            var back = 0
            while back < 4, end - back > 0, bytes[end - back - 1] & 0xC0 == 0x80 { back += 1 }
            if end - back > 0, bytes[end - back - 1] >= 0xC0 { end -= back + 1 }
        }
        let slice = bytes[..<end]
        if let utf8 = String(validating: slice, as: UTF8.self) { return utf8 }
        let allowed: Set<UInt8> = [9, 10, 11, 12, 13, 27]
        if slice.contains(where: { ($0 < 32 && !allowed.contains($0)) || $0 == 127 }) { return nil }
        return String(slice.map { Character(Unicode.Scalar($0)) })
    }

    /// Where indexing an append to `bytes` (a file's whole text) may resume: after its last line feed, when they
    /// are UTF-8 without a byte-order mark and without NUL (only then does a later part decode alone, from a line
    /// start). nil otherwise: the file is indexed whole again when it grows.
    public static func lineEnd(_ bytes: ArraySlice<UInt8>) -> Int? {
        guard !hasByteOrderMark(Array(bytes.prefix(2))), !bytes.contains(0),
            String(validating: bytes, as: UTF8.self) != nil
        else { return nil }
        return (bytes.lastIndex(of: 10).map { $0 + 1 } ?? bytes.startIndex) - bytes.startIndex
    }

    /// How many first bytes decide that a file is binary.
    public static let sniffLength = 8192

    /// Whether a file starting with `head` is binary whatever follows: a NUL in its first `sniffLength` bytes and
    /// no UTF-16 byte-order mark (so a reader can stop at its first chunk).
    public static func isBinary(_ head: [UInt8]) -> Bool {
        !hasByteOrderMark(head) && head.prefix(sniffLength).contains(0)
    }

    private static func hasByteOrderMark(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 2 && ((bytes[0] == 0xFF && bytes[1] == 0xFE) || (bytes[0] == 0xFE && bytes[1] == 0xFF))
    }
}

public enum Snippet {
    /// About `width` characters of `text` around the first place one of `terms` (words and phrases, `prefix`:
    /// any word starting so) occurs, case-insensitively, with `…` where it was cut; nil if none occurs.
    public static func make(_ text: String, terms: [(text: String, prefix: Bool)], width: Int = 120) -> String? {
        let characters = Array(text)
        let lowered = characters.map { $0.lowercased().first ?? $0 }
        var best: Int?
        for term in terms {
            let needle = Array(term.text.lowercased())
            guard !needle.isEmpty, needle.count <= lowered.count else { continue }
            var i = 0
            while i + needle.count <= lowered.count {
                if lowered[i] == needle[0], Array(lowered[i..<i + needle.count]) == needle,
                    i == 0 || !lowered[i - 1].isLetter && !lowered[i - 1].isNumber,
                    term.prefix || i + needle.count == lowered.count
                        || !lowered[i + needle.count].isLetter && !lowered[i + needle.count].isNumber
                {
                    best = min(best ?? i, i)
                    break
                }
                i += 1
            }
        }
        guard let at = best else { return nil }
        let start = max(0, at - width / 3)
        let end = min(characters.count, start + width)
        let body = String(characters[start..<end]).split(whereSeparator: \.isNewline).joined(separator: " ")
        return (start > 0 ? "…" : "") + body + (end < characters.count ? "…" : "")
    }
}
