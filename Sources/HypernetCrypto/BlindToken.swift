/// Blind tokens (docs/security.md, "Search on ciphertext"): keyed hashes of whole words, so that a node without an
/// epoch key can tell which blocks of a file hold a word a reader names, without learning the word.
///
///     token key = BLAKE2b-256(key = epoch key, "hypernet blind token key v1")
///     token(w)  = first 4 bytes of BLAKE2b-512(key = token key, fold(w)), read little-endian
///
/// Words are maximal runs of ASCII letters, digits and `_` (grep -w's word characters in the C locale), ASCII upper
/// case folded to lower case, so one index answers `grep -w` with and without `-i`.
public struct BlindTokenKey: Sendable {
    public static let context = Array("hypernet blind token key v1".utf8)
    /// Bytes of a token: see docs/security.md for the false-positive rate this gives.
    public static let tokenByteCount = 4

    private let key: SecureBytes

    public init(epochKey: SecureBytes) {
        key = SecureBytes(BLAKE2b.hash(Self.context, key: epochKey).bytes)
    }

    /// The token of one word, already folded (`BlindWords`).
    public func token(_ word: UnsafeRawBufferPointer) -> UInt32 {
        key.withUnsafeBytes { key in
            withUnsafeTemporaryAllocation(byteCount: BLAKE2b512.byteCount, alignment: 8) { out in
                BLAKE2b512.hash(word, key: key, into: out.baseAddress!)
                let token = UInt32(littleEndian: out.loadUnaligned(as: UInt32.self))
                out.initializeMemory(as: UInt8.self, repeating: 0)
                return token
            }
        }
    }

    public func token(_ word: [UInt8]) -> UInt32 { word.withUnsafeBytes { token($0) } }

    /// The trapdoor of a `grep -w` pattern: the token of its one word, nil when the pattern is not a single word
    /// (anything but word characters, or empty) and so cannot be answered from tokens.
    public func trapdoor(pattern: [UInt8]) -> UInt32? {
        guard !pattern.isEmpty, pattern.allSatisfy(BlindWords.isWordByte) else { return nil }
        return token(pattern.map(BlindWords.fold))
    }
}

/// Splits text into the words blind tokens are made of; a word cut by the end of one piece continues in the next.
public struct BlindWords {
    private var word: [UInt8] = []
    /// The distinct folded words seen since the last `take`.
    public private(set) var words: Set<[UInt8]> = []

    public init() {}

    @inline(__always) public static func isWordByte(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b == 0x5f
    }

    @inline(__always) public static func fold(_ b: UInt8) -> UInt8 { b >= 0x41 && b <= 0x5a ? b | 0x20 : b }

    /// Adds the words of `bytes`; a word reaching its end stays open for the next piece.
    public mutating func add(_ bytes: UnsafeRawBufferPointer) {
        for b in bytes {
            if Self.isWordByte(b) {
                word.append(Self.fold(b))
            } else if !word.isEmpty {
                words.insert(word)
                word.removeAll(keepingCapacity: true)
            }
        }
    }

    public mutating func add(_ bytes: [UInt8]) { bytes.withUnsafeBytes { add($0) } }

    /// Ends the open word (the text ended, or a line did).
    public mutating func close() {
        guard !word.isEmpty else { return }
        words.insert(word)
        word.removeAll(keepingCapacity: true)
    }

    /// The tokens of the words seen so far (the open word included), sorted; forgets them.
    public mutating func take(_ key: BlindTokenKey) -> [UInt32] {
        close()
        let tokens = Set(words.map { key.token($0) }).sorted()
        words.removeAll(keepingCapacity: true)
        return tokens
    }
}
