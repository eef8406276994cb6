import CPCRE2

/// A bad pattern, said as GNU grep says it (or as PCRE2 does, for what the translation cannot see).
public struct PatternError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}

/// A grep pattern compiled once (PCRE2 with its JIT) and matched against lines of bytes: GNU grep's meaning in the
/// C locale (docs/grep.md). Immutable, so one pattern serves any number of scans on any threads.
public final class LinePattern: @unchecked Sendable {
    public enum Syntax: String, Sendable, Codable, CaseIterable {
        /// `-F`: a literal string.
        case fixed
        /// `-E`: POSIX extended regular expressions with GNU's extensions.
        case extended
        /// The default: POSIX basic regular expressions with GNU's extensions.
        case basic
    }

    public let invert: Bool
    /// Matched line by line only (the pattern anchors at the line's start or end with `` \` `` or `\'`).
    let linewise: Bool
    let code: OpaquePointer
    /// The number of capturing groups.
    public let groups: Int

    /// Compiles `pattern`: each of its lines is one pattern, a line matching any of them matches (as grep).
    public init(
        pattern: [UInt8], syntax: Syntax = .basic, ignoreCase: Bool = false, wholeWord: Bool = false,
        invert: Bool = false
    ) throws(PatternError) {
        var translation = Translation(extended: syntax == .extended)
        for piece in pattern.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            if syntax == .fixed {
                translation.appendFixed(Array(piece))
            } else {
                try translation.append(Array(piece))
            }
        }
        var source = translation.output
        // grep -w: the match is neither preceded nor followed by a word character (PCRE2 backtracks into other
        // matches where the first one fails that, as GNU grep tries shorter and later ones).
        if wholeWord { source = Array("(?<!\\w)(?:".utf8) + source + Array(")(?!\\w)".utf8) }
        let context = pcre2_compile_context_create_8(nil)
        defer { pcre2_compile_context_free_8(context) }
        pcre2_set_newline_8(context, UInt32(PCRE2_NEWLINE_LF))
        // `^` and `$` at every line's start and end, an empty last line's (after the subject's last newline) too.
        var options = UInt32(PCRE2_MULTILINE | PCRE2_ALT_CIRCUMFLEX)
        if ignoreCase { options |= UInt32(PCRE2_CASELESS) }
        var errorCode: Int32 = 0
        var errorOffset = 0
        let compiled = source.withUnsafeBufferPointer { buffer in
            pcre2_compile_8(buffer.baseAddress, buffer.count, options, &errorCode, &errorOffset, context)
        }
        guard let compiled else { throw PatternError(Self.message(errorCode)) }
        // Without a JIT (a platform PCRE2 lacks it for) the interpreter matches the same, slower.
        _ = pcre2_jit_compile_8(compiled, UInt32(PCRE2_JIT_COMPLETE))
        var count: UInt32 = 0
        pcre2_pattern_info_8(compiled, UInt32(PCRE2_INFO_CAPTURECOUNT), &count)
        code = compiled
        groups = Int(count)
        linewise = translation.anchorsSubject
        self.invert = invert
    }

    public convenience init(
        pattern: String, syntax: Syntax = .basic, ignoreCase: Bool = false, wholeWord: Bool = false,
        invert: Bool = false
    ) throws(PatternError) {
        try self.init(
            pattern: Array(pattern.utf8), syntax: syntax, ignoreCase: ignoreCase, wholeWord: wholeWord, invert: invert)
    }

    deinit { pcre2_code_free_8(code) }

    /// Whether `line` (without its newline) matches, `invert` applied.
    public func matches(_ line: [UInt8]) throws(ScanError) -> Bool {
        let data = MatchData(self)
        return try line.scanning { (bytes) throws(ScanError) in try data.find(in: bytes, from: 0) != nil } != invert
    }

    static func message(_ code: Int32) -> String {
        var buffer = [UInt8](repeating: 0, count: 256)
        let length = pcre2_get_error_message_8(code, &buffer, buffer.count)
        return length > 0 ? String(decoding: buffer[..<Int(length)], as: UTF8.self) : "PCRE2 error \(code)"
    }
}

/// Matching failed for a reason other than no match (PCRE2's backtracking limits on a pathological pattern).
public struct ScanError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// PCRE2's per-match state: one per scan, never shared between threads.
final class MatchData {
    let pattern: LinePattern
    private let data: OpaquePointer

    init(_ pattern: LinePattern) {
        self.pattern = pattern
        // Allocation failure of a few hundred bytes: nothing sensible to do but stop.
        data = pcre2_match_data_create_from_pattern_8(pattern.code, nil)!
    }

    deinit { pcre2_match_data_free_8(data) }

    /// The first match in `subject` starting at or after `offset`: its start and end; nil if none.
    func find(in subject: UnsafeRawBufferPointer, from offset: Int) throws(ScanError) -> (Int, Int)? {
        let base = subject.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? UnsafePointer(bitPattern: 1)!
        let result = pcre2_match_8(pattern.code, base, subject.count, offset, 0, data, nil)
        if result == PCRE2_ERROR_NOMATCH { return nil }
        guard result > 0 else { throw ScanError(message: LinePattern.message(result)) }
        let vector = pcre2_get_ovector_pointer_8(data)!
        return (vector[0], vector[1])
    }

    /// After `find`: group `number`'s start and end, nil when it took no part in the match.
    func group(_ number: Int) -> (Int, Int)? {
        let vector = pcre2_get_ovector_pointer_8(data)!
        let start = vector[2 * number]
        // PCRE2_UNSET, ~(PCRE2_SIZE)0.
        return start == ~0 ? nil : (start, vector[2 * number + 1])
    }
}

extension Array where Element == UInt8 {
    /// `withUnsafeBytes` for a body that throws `ScanError` (the standard library's rethrows untyped).
    func scanning<Result>(_ body: (UnsafeRawBufferPointer) throws(ScanError) -> Result) throws(ScanError) -> Result {
        try withUnsafeBytes { buffer in Swift.Result { () throws(ScanError) in try body(buffer) } }.get()
    }
}
