import HypernetCrypto

/// Errors decoding untrusted bytes. Every decoder in this module throws these, never traps.
public enum DecodingError: Error, Sendable, Equatable, CustomStringConvertible {
    case truncated(String)
    case invalid(String)
    case unsupportedVersion(Int)

    public var description: String {
        switch self {
        case .truncated(let what): return "truncated \(what)"
        case .invalid(let what): return "invalid \(what)"
        case .unsupportedVersion(let v): return "unsupported format version \(v)"
        }
    }
}

/// Little-endian writer for the canonical encodings in docs/store-format.md.
public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 64) { bytes.reserveCapacity(capacity) }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u16(_ v: UInt16) { append(littleEndian: v) }
    public mutating func u32(_ v: UInt32) { append(littleEndian: v) }
    public mutating func u64(_ v: UInt64) { append(littleEndian: v) }
    public mutating func i64(_ v: Int64) { append(littleEndian: UInt64(bitPattern: v)) }
    public mutating func raw(_ v: some Sequence<UInt8>) { bytes.append(contentsOf: v) }
    public mutating func digest(_ d: Digest) { d.withUnsafeBytes { bytes.append(contentsOf: $0) } }
    /// u32 length, then the bytes.
    public mutating func blob(_ v: [UInt8]) {
        u32(UInt32(v.count))
        bytes.append(contentsOf: v)
    }
    public mutating func string(_ s: String) { blob(Array(s.utf8)) }

    private mutating func append<T: FixedWidthInteger>(littleEndian v: T) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }
}

/// Bounds-checked little-endian reader over untrusted bytes.
public struct ByteReader: Sendable {
    private let bytes: [UInt8]
    public private(set) var offset: Int
    private let context: String

    public init(_ bytes: [UInt8], context: String) {
        self.bytes = bytes
        self.offset = 0
        self.context = context
    }

    public var isAtEnd: Bool { offset == bytes.count }
    public var remaining: Int { bytes.count - offset }

    public mutating func u8() throws(DecodingError) -> UInt8 { try take(1).first! }
    public mutating func u16() throws(DecodingError) -> UInt16 { try integer() }
    public mutating func u32() throws(DecodingError) -> UInt32 { try integer() }
    public mutating func u64() throws(DecodingError) -> UInt64 { try integer() }
    public mutating func i64() throws(DecodingError) -> Int64 { Int64(bitPattern: try integer()) }
    public mutating func raw(_ count: Int) throws(DecodingError) -> [UInt8] { Array(try take(count)) }
    public mutating func digest() throws(DecodingError) -> Digest {
        let slice = try take(Digest.byteCount)
        do { return try Digest(bytes: slice) } catch { throw .invalid("digest in \(context)") }
    }
    /// A u32-length-prefixed blob of at most `limit` bytes.
    public mutating func blob(limit: Int) throws(DecodingError) -> [UInt8] {
        let count = Int(try u32())
        guard count <= limit else { throw .invalid("length \(count) over limit \(limit) in \(context)") }
        return try raw(count)
    }
    public mutating func string(limit: Int) throws(DecodingError) -> String {
        let b = try blob(limit: limit)
        guard let s = String(validating: b, as: UTF8.self) else { throw .invalid("UTF-8 in \(context)") }
        return s
    }
    public func expectEnd() throws(DecodingError) {
        guard isAtEnd else { throw .invalid("\(remaining) trailing bytes in \(context)") }
    }

    private mutating func integer<T: FixedWidthInteger>() throws(DecodingError) -> T {
        let slice = try take(MemoryLayout<T>.size)
        var v: T = 0
        for (i, b) in slice.enumerated() { v |= T(b) << (8 * i) }
        return v
    }

    private mutating func take(_ count: Int) throws(DecodingError) -> ArraySlice<UInt8> {
        guard count >= 0, count <= remaining else { throw .truncated(context) }
        defer { offset += count }
        return bytes[offset..<offset + count]
    }
}

extension Array where Element == UInt8 {
    /// `withUnsafeBytes` that keeps the closure's typed error (the standard one is `rethrows`, untyped).
    public func withBytes<T, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> T) throws(E) -> T {
        try withUnsafeBytes { b in Result { () throws(E) in try body(b) } }.get()
    }

    /// `withUnsafeMutableBytes` that keeps the closure's typed error.
    public mutating func withMutableBytes<T, E: Error>(_ body: (UnsafeMutableRawBufferPointer) throws(E) -> T) throws(E)
        -> T
    {
        try withUnsafeMutableBytes { b in Result { () throws(E) in try body(b) } }.get()
    }
}
