import FoundationEssentials
import HypernetScan
import HypernetStore
import HypernetSync
import HypernetVFS

// The control socket speaks JSON lines: one request object per line, one response line per request:
//   {"command":"log","path":"/root/Hypernet/a.txt"}
//   {"ok":true,"result":[…]}    or    {"ok":false,"error":"not a Hypernet path: /tmp/x","code":4}
// `code` is the exit status the CLI exits with (docs/cli.md). Content bytes travel as base64.

public struct ControlRequest: Codable, Sendable, Equatable {
    public enum Command: String, Codable, Sendable {
        case status, log, cat, restore, fsck, stop, unmount
        case peerAdd = "peer-add"
        case peerRemove = "peer-remove"
        case peers, pin, unpin, pins
        case watch
        case conflicts, resolve
        case search, index
        case gc, du
        case grep, count
        case keep, unkeep
    }

    public var command: Command
    /// Absolute path for log/cat/restore; the mountpoint for unmount.
    public var path: String?
    /// A revision id or unique prefix for cat/restore; cat without one reads the current revision.
    public var revision: String?
    /// The address for peer-add and peer-remove; the identity token or `*` for pin/unpin.
    public var argument: String?
    /// Absolute paths to watch (watch: every path below them).
    public var paths: [String]?
    /// watch: first replay the stored revisions after this log position.
    public var since: Int64?
    /// search: the query (docs/search.md), how many results, after how many, in which order (`SearchSort`); cat: the
    /// byte to start at (`offset`).
    public var query: String?
    public var limit: Int?
    public var offset: Int?
    public var sort: String?
    /// search: stream the results of revisions indexed from now on (`--watch`) instead of answering once.
    public var follow: Bool?
    /// gc: measure only.
    public var dryRun: Bool?
    /// pin: how much of the tree to keep, `all` (the default) or `on-demand`.
    public var content: String?
    /// grep and count (over `paths`): the pattern and how to match it.
    public var scan: ScanQuery?

    public init(
        command: Command, path: String? = nil, revision: String? = nil, argument: String? = nil, paths: [String]? = nil,
        since: Int64? = nil, query: String? = nil, limit: Int? = nil, offset: Int? = nil, sort: String? = nil,
        follow: Bool? = nil, dryRun: Bool? = nil, content: String? = nil, scan: ScanQuery? = nil
    ) {
        self.command = command
        self.path = path
        self.revision = revision
        self.argument = argument
        self.paths = paths
        self.since = since
        self.query = query
        self.limit = limit
        self.offset = offset
        self.sort = sort
        self.follow = follow
        self.dryRun = dryRun
        self.content = content
        self.scan = scan
    }
}

/// What `hypernet grep` and `hypernet count` ask (docs/grep.md).
public struct ScanQuery: Codable, Sendable, Equatable {
    public enum Output: String, Codable, Sendable {
        /// Every selected line (grep); `-c`: a count per document; `-l`: the documents with a selected line;
        /// `groups`: count --by's table (the pattern is its REGEX); `tail`: `tail -f`'s complete lines of one
        /// revision (`revision`) after a byte (`offset`) of a file whose content a peer holds (docs/grep.md).
        case lines, counts, files, groups, tail
    }

    public var pattern: String
    public var syntax: LinePattern.Syntax
    public var ignoreCase: Bool
    public var wholeWord: Bool
    public var invert: Bool
    public var output: Output

    public init(
        pattern: String, syntax: LinePattern.Syntax = .basic, ignoreCase: Bool = false, wholeWord: Bool = false,
        invert: Bool = false, output: Output = .lines
    ) {
        self.pattern = pattern
        self.syntax = syntax
        self.ignoreCase = ignoreCase
        self.wholeWord = wholeWord
        self.invert = invert
        self.output = output
    }

    /// The compiled pattern; a bad one fails as grep's usage errors do (exit 2).
    public func compiled() throws(Failure) -> LinePattern {
        // Peers refuse a longer one (documents not held here are scanned where they are).
        guard pattern.utf8.count <= Query.maximumPattern else {
            throw Failure(.usage, "the pattern is longer than \(Query.maximumPattern) bytes")
        }
        do {
            return try LinePattern(
                pattern: pattern, syntax: syntax, ignoreCase: ignoreCase, wholeWord: wholeWord, invert: invert)
        } catch {
            throw Failure(.usage, error.message)
        }
    }
}

/// One line of the stream that answers grep and count: exactly one field is set (docs/grep.md, "The control
/// protocol").
public struct ScanLine: Codable, Sendable {
    public struct Match: Codable, Sendable {
        /// Absolute, where the mount shows the document.
        public var path: String
        public var line: Int
        public var offset: Int
        /// The line as UTF-8, or, when it is not, its bytes in `base64`.
        public var text: String?
        public var base64: String?

        public init(path: String, line: Int, offset: Int, text: String?, base64: String?) {
            self.path = path
            self.line = line
            self.offset = offset
            self.text = text
            self.base64 = base64
        }
    }

    public struct FileCount: Codable, Sendable {
        public var path: String
        /// `-c`: the document's selected lines; nil for `-l`.
        public var count: Int?

        public init(path: String, count: Int? = nil) {
            self.path = path
            self.count = count
        }
    }

    public struct Group: Codable, Sendable {
        /// The captured value as UTF-8, or its bytes in `base64`.
        public var value: String?
        public var base64: String?
        public var count: Int

        public init(value: String?, base64: String?, count: Int) {
            self.value = value
            self.base64 = base64
            self.count = count
        }
    }

    public struct Progress: Codable, Sendable {
        /// Content bytes scanned and documents finished so far.
        public var bytes: Int
        public var documents: Int
        /// Lines (or documents, values) selected; in `done` only.
        public var selected: Int?
        /// `tail`, in `done`: the end of the revision's last complete line, where the next scan starts; nil when
        /// the content is held here (the client reads it itself).
        public var cursor: Int?

        public init(bytes: Int, documents: Int, selected: Int? = nil, cursor: Int? = nil) {
            self.bytes = bytes
            self.documents = documents
            self.selected = selected
            self.cursor = cursor
        }
    }

    public var match: Match?
    public var file: FileCount?
    public var group: Group?
    public var progress: Progress?
    /// A document that could not be read (the others are still scanned).
    public var error: String?
    /// The last line: the scan is complete.
    public var done: Progress?

    public init(
        match: Match? = nil, file: FileCount? = nil, group: Group? = nil, progress: Progress? = nil,
        error: String? = nil, done: Progress? = nil
    ) {
        self.match = match
        self.file = file
        self.group = group
        self.progress = progress
        self.error = error
        self.done = done
    }

    /// Bytes as JSON can carry them: the text when they are UTF-8, else base64.
    public static func text(_ bytes: [UInt8]) -> (text: String?, base64: String?) {
        if let text = String(validating: bytes, as: UTF8.self) { return (text, nil) }
        return (nil, Data(bytes).base64EncodedString())
    }

    /// The bytes `text` stands for.
    public static func bytes(text: String?, base64: String?) -> [UInt8] {
        if let text { return Array(text.utf8) }
        return base64.flatMap { Data(base64Encoded: $0) }.map(Array.init) ?? []
    }
}

/// What a request handler answers; the server encodes it as one response line. A stream (watch) answers
/// `{"ok":true,"result":{}}` and then the reader's lines until the client hangs up; so do `lines`, whose producer
/// writes them itself, on the connection's thread, as fast as the client reads them.
public enum ControlReply: Sendable {
    case success(any Encodable & Sendable)
    case failure(Failure)
    case stream(EventReader)
    case lines(@Sendable (ControlStream) -> Void)
}

public struct StatusReport: Codable, Sendable {
    public var node: String
    public var identity: String
    public var name: String?
    public var home: String
    /// nil when the node serves without a mount.
    public var mountpoint: String?
    public var pid: Int32
    public var statistics: StoreStatistics
    /// Lines the filesystem contributes (open and dirty files).
    public var filesystem: [String]
    public var listen: String?
    public var quorum: Int
    public var pins: [String]
    /// Known peers, connected or not.
    public var peers: [PeerStatus]
    /// The peers kept connected now, and at most (`--max-peers`).
    public var connections: Int
    public var maxPeers: Int
    /// This identity's revisions not yet held by `quorum` nodes, and the bytes they list.
    public var backlogRevisions: Int
    public var backlogBytes: Int64
    /// The cache of content fetched on demand (`--cache-size`) and what was kept (`hypernet keep`).
    public var cache: CacheStatus
    /// The newest revision's position in this node's log: `watch --since` it gives only what comes next.
    public var logPosition: Int64?
}

/// One line of the stream that answers `cat`: the revision first, then the content in order, a piece per line, then
/// `end` (or `error`, with the exit status): a stream cut before `end` lost the daemon.
public struct ContentLine: Codable, Sendable {
    /// The full id of the revision whose content this is.
    public var revision: String?
    /// Base64 of the next bytes of the content.
    public var content: String?
    public var end: Bool?
    public var error: String?
    public var code: Int32?

    public init(
        revision: String? = nil, content: String? = nil, end: Bool? = nil, error: String? = nil, code: Int32? = nil
    ) {
        self.revision = revision
        self.content = content
        self.end = end
        self.error = error
        self.code = code
    }
}

public struct RestoreReply: Codable, Sendable {
    /// The id of the new revision made from the restored content.
    public var revision: String
}

/// One line of the stream that answers a long command (gc, keep): progress lines, then the report or the error.
public struct ProgressLine<Progress: Codable & Sendable, Report: Codable & Sendable>: Codable, Sendable {
    public var progress: Progress?
    public var report: Report?
    public var error: String?

    public init(progress: Progress? = nil, report: Report? = nil, error: String? = nil) {
        self.progress = progress
        self.report = report
        self.error = error
    }
}

public typealias GarbageLine = ProgressLine<GarbageProgress, GarbageReport>
public typealias KeepLine = ProgressLine<KeepProgress, KeepSummary>

public struct FsckReport: Codable, Sendable {
    /// Empty when the store is consistent.
    public var problems: [String]
    /// Damaged chunks the check found and a peer's copy repaired meanwhile (docs/store-format.md, "Repair").
    public var repaired: [String]?
}

/// One search result (docs/search.md, "Results").
public struct SearchResult: Codable, Sendable {
    /// Absolute, where the mount shows the document now.
    public var path: String
    public var name: String
    public var kind: String
    /// Contact names, `me` for this identity, else identity tokens.
    public var owner: String
    public var author: String
    public var size: UInt64
    /// ISO-8601 UTC: the POSIX mtime, and the document's first revision.
    public var modified: String
    public var created: String
    public var conflict: Bool
    public var shared: Bool
    public var revision: String
    public var document: String
    /// bm25: lower is better; 0 for a query without text terms.
    public var score: Double
    /// Text around the first match, for a query with text terms.
    public var snippet: String?
}

/// The search index's progress (`hypernet index`).
public struct IndexStatus: Codable, Sendable {
    public var path: String
    public var documents: Int
    /// Text rows left unreachable by changes (a contentless FTS table keeps them until a rebuild).
    public var orphans: Int64
    /// The log position indexed, and the log's last.
    public var indexed: Int64
    public var logged: Int64
    /// Since the daemon started: bytes of content read to index text, and appends indexed by their new part alone.
    public var textBytesRead: Int64
    public var appendsIndexed: Int64
}

public struct Acknowledgement: Codable, Sendable {
    public init() {}
}

// MARK: Envelopes

struct SuccessEnvelope<Result: Encodable>: Encodable {
    let ok = true
    let result: Result
}

struct FailureEnvelope: Codable {
    var ok = false
    var error: String
    var code: Int32
}

struct ResultEnvelope<Result: Decodable>: Decodable {
    var result: Result
}

struct ResponseHead: Decodable {
    var ok: Bool
    var error: String?
    var code: Int32?
}

/// `value` as one line of JSON, keys sorted, as the control socket writes it: what `--json` prints.
public func jsonLine(_ value: some Encodable) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    // The control replies are structs of strings, numbers and arrays: they always encode.
    return String(decoding: try! encoder.encode(value), as: UTF8.self)
}

enum ControlCodec {
    /// One response line, newline-terminated.
    static func encode(_ reply: ControlReply) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var data: Data
        switch reply {
        case .success(let result):
            do {
                data = try encodeSuccess(result, with: encoder)
            } catch {
                data = encodeFailure(Failure(.failure, "cannot encode the reply: \(error)"), with: encoder)
            }
        case .failure(let failure):
            data = encodeFailure(failure, with: encoder)
        case .stream, .lines:
            data = (try? encodeSuccess(Acknowledgement(), with: encoder)) ?? Data()
        }
        return Array(data) + [UInt8(ascii: "\n")]
    }

    private static func encodeSuccess<Result: Encodable>(_ result: Result, with encoder: JSONEncoder) throws -> Data {
        try encoder.encode(SuccessEnvelope(result: result))
    }

    private static func encodeFailure(_ failure: Failure, with encoder: JSONEncoder) -> Data {
        // A struct of a String and an Int always encodes.
        try! encoder.encode(FailureEnvelope(error: failure.message, code: failure.status.rawValue))
    }

    static func decodeRequest(_ line: [UInt8]) throws(Failure) -> ControlRequest {
        do {
            return try JSONDecoder().decode(ControlRequest.self, from: Data(line))
        } catch {
            throw Failure(.usage, "malformed control request: \(error)")
        }
    }

    static func encodeRequest(_ request: ControlRequest) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Strings and an enum always encode.
        return Array(try! encoder.encode(request)) + [UInt8(ascii: "\n")]
    }

    static func decodeResponse<Result: Decodable>(_ line: [UInt8], as type: Result.Type) throws(Failure) -> Result {
        let data = Data(line)
        let decoder = JSONDecoder()
        let head: ResponseHead
        do {
            head = try decoder.decode(ResponseHead.self, from: data)
        } catch {
            throw Failure(.failure, "malformed reply from the daemon: \(error)")
        }
        guard head.ok else {
            let status = head.code.flatMap(ExitStatus.init(rawValue:)) ?? .failure
            throw Failure(status, head.error ?? "the daemon reported an unspecified error")
        }
        do {
            return try decoder.decode(ResultEnvelope<Result>.self, from: data).result
        } catch {
            throw Failure(.failure, "malformed reply from the daemon: \(error)")
        }
    }
}
