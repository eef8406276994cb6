import Dispatch
import FoundationEssentials
import Glibc
import HypernetCrypto
import HypernetFailpoint
import HypernetIndex
import HypernetModel
import HypernetStore
import HypernetVFS
import Logging
import Synchronization

/// Keeps the search index (docs/search.md) in step with what the mount shows, on a queue of its own: never on a
/// FUSE request or a replication thread. It follows the store's log from its cursor; each revision it can open
/// re-indexes its document as the mount shows it now (path, visible head), or removes it when the mount no longer
/// shows it (deleted, or no longer readable). A revision it cannot open, or a permission block, re-checks the
/// documents of its tree, so a revoke removes them.
public final class SearchIndexer: Sendable {
    static let pageSize = 512
    /// A page's texts held at once: past this, those indexed so far commit (without the cursor) before the rest is
    /// read, so a page of large files does not hold them all (512 of 8 MiB).
    static let pageTextLimit = 16 << 20
    /// An index whose unreachable text rows outnumber the live documents by this much is rebuilt.
    static let orphanSlack: Int64 = 10_000
    /// The most entries a query folder shows.
    static let viewLimit = 1000
    /// How much of a result's text is read for its snippet.
    static let snippetLimit = 1 << 20
    /// A grown file whose old last chunks differ from the new ones over more than this is indexed whole.
    static let appendTailLimit: UInt64 = 1 << 20

    let index: SearchIndex
    let store: Store
    let fileSystem: VirtualFileSystem
    let home: Home
    /// Canonical; results are absolute paths below it.
    let mountpoint: String
    let logger: Logger
    /// `HYPERNET_SEARCH_INDEX=off`: nothing is indexed (the index stays as it was), for measuring what indexing
    /// costs the writes beside it (bench/search.py).
    let off = getenv("HYPERNET_SEARCH_INDEX").map { String(cString: $0) == "off" } ?? false
    private let queue = DispatchQueue(label: "hypernet.index", qos: .utility)
    /// How long a wake waits before indexing: a burst of revisions (`tar x`, a build) is then indexed in a few pages,
    /// each one index transaction, instead of a page and a transaction for nearly every revision.
    static let batchDelay = DispatchTimeInterval.milliseconds(50)

    private struct State {
        var scheduled = false
        var stopped = false
        /// Trees (hex) whose documents are checked again on the next run.
        var recheck: Set<String> = []
        /// `hypernet search --watch`: each reader's query.
        var subscriptions: [ObjectIdentifier: (query: String, reader: EventReader)] = [:]
    }
    private let state = Mutex(State())
    /// Bytes of content read to index text, and appends indexed by their new part alone (`hypernet index --json`).
    private let textBytesRead = Atomic<Int64>(0)
    private let appendsIndexed = Atomic<Int64>(0)

    private enum Entry {
        case remove
        case index(IndexedDocument, text: String?)
        /// The text grew by an append: index `text`, its new lines, alone.
        case append(IndexedDocument, text: String)
    }

    /// The changes to a set of documents, for one `SearchIndex.apply`.
    private struct Changes {
        var updates: [(document: IndexedDocument, text: String?)] = []
        var appended: [(document: IndexedDocument, text: String)] = []
        var removed: [String] = []
        var moves: [(String, String)] = []

        var documents: [String] { updates.map(\.document.document) + appended.map(\.document.document) }
        var textBytes: Int {
            updates.reduce(0) { $0 + ($1.text?.utf8.count ?? 0) } + appended.reduce(0) { $0 + $1.text.utf8.count }
        }
    }

    /// Opens the index in `home` (a damaged one is replaced by an empty one, which then fills from the log).
    init(home: Home, mountpoint: String, store: Store, fileSystem: VirtualFileSystem, logger: Logger) throws {
        let (index, reason) = try SearchIndex.openOrRecreate(path: home.searchIndexPath)
        if let reason { logger.warning("search index rebuilt", metadata: ["reason": "\(reason)"]) }
        self.index = index
        self.store = store
        self.fileSystem = fileSystem
        self.home = home
        self.mountpoint = mountpoint
        self.logger = logger
    }

    /// New revisions are stored and shown: index them. `rightsChanged`: trees that received permission blocks.
    func wake(rightsChanged trees: [SigningPublicKey] = []) {
        let start = state.withLock { s in
            s.recheck.formUnion(trees.map { Hex.encode($0.bytes) })
            defer { s.scheduled = true }
            return !s.scheduled && !s.stopped && !off
        }
        if start { queue.asyncAfter(deadline: .now() + Self.batchDelay) { [self] in run() } }
    }

    /// Indexes nothing more; returns once the page being indexed is committed (before the store closes).
    func stop() {
        state.withLock { $0.stopped = true }
        queue.sync {}
        do { try index.close() } catch { logger.warning("search index: cannot close \(index.path): \(error)") }
    }

    /// Empties the index and indexes everything again, in the background.
    func rebuild() throws(Failure) {
        do { try queue.sync { try index.reset() } } catch {
            throw Failure(.store, "cannot reset the search index \(index.path): \(error)")
        }
        logger.info("search index: rebuilding")
        wake()
    }

    /// How far the index is: the log position it reached and the log's last, documents and unreachable text rows.
    func status() throws(Failure) -> IndexStatus {
        do {
            let (documents, orphans) = try index.statistics()
            return IndexStatus(
                path: index.path, documents: documents, orphans: orphans, indexed: try index.cursor(),
                logged: try store.lastRevisionSeq(), textBytesRead: textBytesRead.load(ordering: .relaxed),
                appendsIndexed: appendsIndexed.load(ordering: .relaxed))
        } catch {
            throw Failure(.store, "search index \(index.path): \(error)")
        }
    }

    private func run() {
        let recheck: Set<String>? = state.withLock { s in
            // Cleared before reading the log: a wake from now on runs again.
            s.scheduled = false
            // Woken just before `stop`, which does not wait for the delay: the index is closed.
            if s.stopped { return nil }
            defer { s.recheck = [] }
            return s.recheck
        }
        guard let recheck else { return }
        do {
            let started = DispatchTime.now()
            for tree in recheck { try check(index.documents(tree: tree)) }
            let rechecked = DispatchTime.now()
            var cursor = try index.cursor()
            let first = cursor
            while true {
                let entries = try store.storedRevisions(after: cursor, limit: Self.pageSize)
                guard let last = entries.last?.seq, !state.withLock({ $0.stopped }) else { break }
                try indexPage(entries, cursor: last)
                cursor = last
                if entries.count < Self.pageSize { break }
            }
            logger.debug(
                "search index: ran",
                metadata: [
                    "recheck": "\(recheck.count) trees in \(Self.milliseconds(started, rechecked)) ms",
                    "log": "\(first)...\(cursor) in \(Self.milliseconds(rechecked, .now())) ms",
                ])
            let (documents, orphans) = try index.statistics()
            if orphans > Int64(documents) + Self.orphanSlack {
                logger.info("search index: rebuilding to drop \(orphans) unreachable text rows")
                try index.reset()
                wake()
            }
        } catch {
            logger.error("search index: \(error)")
        }
    }

    private static func milliseconds(_ from: DispatchTime, _ to: DispatchTime) -> UInt64 {
        (to.uptimeNanoseconds - from.uptimeNanoseconds) / 1_000_000
    }

    /// One page of the log: this identity's own revisions first, so that its edits show within the second even
    /// when the page also holds another identity's arrivals (each of which may walk that identity's shared tree);
    /// the rest then commits with the new cursor (a crash between the two indexes the own ones again, the same).
    private func indexPage(_ entries: [StoredRevision], cursor: Int64) throws {
        let own = store.keyring.identity.publicKey
        let others = entries.filter { $0.tree != own }
        guard !others.isEmpty else { return try indexEntries(entries, cursor: cursor) }
        if others.count < entries.count { try indexEntries(entries.filter { $0.tree == own }, cursor: nil) }
        _ = Failpoint.hit("index.foreign")
        try indexEntries(others, cursor: cursor)
    }

    /// The documents of `entries`, each once, in one transaction with the new cursor.
    private func indexEntries(_ entries: [StoredRevision], cursor: Int64?) throws {
        var seen = Set<DocumentID>()
        var documents: [(DocumentID, SigningPublicKey)] = []
        var trees = Set<SigningPublicKey>()
        var unopened: [DocumentID: SigningPublicKey] = [:]
        for e in entries {
            guard let (r, _) = try? store.revision(e.id, readingXattrs: false) else {
                unopened[e.document] = e.tree
                continue
            }
            if seen.insert(r.document).inserted { documents.append((r.document, e.tree)) }
        }
        // A revision not for this identity's keys: its read right on that document, if indexed, may have ended.
        // Only a directory's can end it for what lies below: then its whole tree is checked again.
        var unreadable: [IndexedDocument] = []
        for (document, tree) in unopened where !seen.contains(document) {
            guard let known = try index.indexed(document.description) else { continue }
            if known.kind == "directory" { trees.insert(tree) } else { unreadable.append(known) }
        }
        var changes = Changes()
        var directories: [String] = []
        let paths = shownPaths(documents)
        for (document, tree) in documents {
            if changes.textBytes > Self.pageTextLimit {
                try apply(changes)
                changes = Changes()
            }
            if document == DocumentID.root(of: tree) {
                // A listing of the tree's top: own, re-check what it held; another's, the whole tree.
                if tree == store.keyring.identity.publicKey { directories.append("/") } else { trees.insert(tree) }
                continue
            }
            let known = try index.indexed(document.description)
            switch entry(document, tree, known: known, path: paths[document]) {
            case .remove:
                if known != nil { changes.removed.append(document.description) }
            case .append(let d, let text): changes.appended.append((d, text))
            case .index(let d, let text):
                changes.updates.append((d, text))
                guard d.kind == "directory" else { continue }
                directories.append(d.path)
                if let old = known?.path, old != d.path {
                    changes.moves.append((old, d.path))
                    directories.append(old)
                }
            }
        }
        try apply(changes, cursor: cursor)
        // A changed listing may have renamed, moved out or deleted what it held: only what no longer shows at its
        // indexed path is looked at again (every entry costs eight catalog reads: a burst of creates in one
        // directory would cost a pass over it at each of its once-a-second revisions). What this page indexed is as
        // the mount shows it now. One check for all: another identity's tree is walked once.
        var skip = Set(documents.map { $0.0.description })
        let rows = try Set(directories).flatMap { try index.documents(in: $0) }
        let shown = shownPaths(rows.compactMap { Self.ids($0) })
        let listed = rows.filter { row in Self.ids(row).map { shown[$0.0] != row.path } ?? true }
        try check((unreadable + listed).filter { skip.insert($0.document).inserted })
        // Another identity's documents can arrive before the listing that shows them: a listing's revision
        // indexes those it shows that the index lacks.
        var unlisted: [(DocumentID, SigningPublicKey)] = []
        for (document, tree) in documents where tree != store.keyring.identity.publicKey {
            guard let path = paths[document], try index.indexed(document.description)?.kind == "directory" else {
                continue
            }
            for child in fileSystem.shownDocuments(in: path, tree: tree)
            where try index.indexed(child.description) == nil {
                unlisted.append((child, tree))
            }
        }
        try add(unlisted)
        for tree in trees { try check(index.documents(tree: Hex.encode(tree.bytes))) }
    }

    /// Indexed documents whose state may have changed without a revision of their own (a rename or move, a
    /// rights change): indexed again where it differs.
    private func check(_ rows: [IndexedDocument]) throws {
        var changes = Changes()
        let ids = rows.compactMap { row in Self.ids(row).map { (row, $0.0, $0.1) } }
        let paths = shownPaths(ids.map { ($0.1, $0.2) })
        for (row, document, tree) in ids {
            switch entry(document, tree, known: row, path: paths[document]) {
            case .remove: changes.removed.append(row.document)
            case .append(let d, let text): changes.appended.append((d, text))
            case .index(let d, let text):
                guard d != row || text != nil else { continue }
                changes.updates.append((d, text))
                if d.kind == "directory", d.path != row.path { changes.moves.append((row.path, d.path)) }
            }
        }
        guard !changes.documents.isEmpty || !changes.removed.isEmpty else { return }
        try apply(changes)
    }

    /// Documents not indexed yet, as the mount shows them now.
    private func add(_ documents: [(DocumentID, SigningPublicKey)]) throws {
        let paths = shownPaths(documents)
        var changes = Changes()
        for (document, tree) in documents {
            if case .index(let d, let text) = entry(document, tree, known: nil, path: paths[document]) {
                changes.updates.append((d, text))
            }
        }
        guard !changes.updates.isEmpty else { return }
        try apply(changes)
    }

    private func apply(_ changes: Changes, cursor: Int64? = nil) throws {
        try index.apply(changes.updates, appending: changes.appended, removing: changes.removed, cursor: cursor)
        for (old, new) in changes.moves { try index.move(old, to: new) }
        notify(changes.documents)
    }

    /// Where the mount shows each of `documents` now (absent: nowhere); another identity's tree is walked once.
    private func shownPaths(_ documents: [(DocumentID, SigningPublicKey)]) -> [DocumentID: String] {
        Dictionary(grouping: documents) { $0.1 }.reduce(into: [:]) { paths, group in
            paths.merge(fileSystem.shownPaths(of: group.value.map(\.0), tree: group.key)) { a, _ in a }
        }
    }

    /// The document as the mount shows it now (at `path`, nil: not shown); `text` only when its name or content
    /// changed since `known`.
    private func entry(_ document: DocumentID, _ tree: SigningPublicKey, known: IndexedDocument?, path: String?)
        -> Entry
    {
        guard document != DocumentID.root(of: tree), let path,
            let shown = fileSystem.shownRevision(of: document), shown.revision.kind != .tombstone
        else { return .remove }
        let r = shown.revision
        let m = shown.metadata
        let created =
            known?.created
            ?? ((try? store.revisions(of: document))?.map { Int64($0.time.milliseconds) }.min()
                ?? Int64(r.time.milliseconds))
        var tags: [String: String] = [:]
        for x in m.xattrs where x.name.hasPrefix("user.") && !x.name.hasPrefix("user.hypernet.") {
            tags[String(x.name.dropFirst(5))] = String(decoding: x.value, as: UTF8.self)
        }
        let name = path == "/" ? "/" : String(path[path.index(after: path.lastIndex(of: "/")!)...])
        let source = "\(r.kind) \(m.content.map { $0.node.id.hex } ?? "-") \(name)"
        let d = IndexedDocument(
            document: document.description, tree: Hex.encode(tree.bytes), revision: shown.id.hex, path: path,
            kind: "\(r.kind)", owner: store.authorName(tree), author: store.authorName(r.author),
            size: r.kind == .symlink ? UInt64(m.symlinkTarget.count) : m.size,
            mtime: m.mtimeSeconds * 1000 + Int64(m.mtimeNanoseconds / 1_000_000), created: created,
            conflict: r.kind != .directory && shown.headCount > 1, shared: fileSystem.isShared(document, tree: tree),
            tags: tags, source: source, textEnd: known?.textEnd ?? -1, segments: known?.segments ?? 0)
        guard known?.source != source, r.kind == .file else { return .index(d, text: nil) }
        var indexed = d
        if let known, keepsText(of: known, content: m.content, name: name) {
            // The text indexed is the same: its rows stay (they are of the source indexed).
            indexed.source = known.source
            return .index(indexed, text: nil)
        }
        if let known, let (text, end) = appended(to: known, content: m.content, name: name) {
            indexed.textEnd = end
            appendsIndexed.add(1, ordering: .relaxed)
            return .append(indexed, text: text)
        }
        guard let (bytes, truncated) = bytes(of: m.content, limit: SearchIndex.textLimit) else {
            indexed.textEnd = -1
            return .index(indexed, text: nil)
        }
        textBytesRead.add(Int64(bytes.count), ordering: .relaxed)
        indexed.textEnd = truncated ? -1 : TextExtractor.lineEnd(bytes[...]).map(Int64.init) ?? -1
        return .index(indexed, text: TextExtractor.text(bytes, truncated: truncated))
    }

    /// The text that an append added to `known` (as indexed) to make `content`, from where its indexed text ended,
    /// and where the text after it ends; nil unless `content` is the indexed one followed by more (then the file is
    /// indexed whole). Reads the chunks from the first that differs, not the whole file.
    private func appended(to known: IndexedDocument, content: ManifestReference?, name: String) -> (String, Int64)? {
        guard known.textEnd >= 0, known.segments < SearchIndex.segmentLimit,
            let (old, new) = chunks(of: known, content, name: name)
        else { return nil }
        let oldSize = old.reduce(0) { $0 + $1.length }
        let newSize = new.reduce(0) { $0 + $1.length }
        let textEnd = UInt64(known.textEnd)
        guard oldSize < newSize, newSize <= UInt64(SearchIndex.textLimit), textEnd <= oldSize else { return nil }
        // Content-defined chunks: an append leaves all but the old last chunk as they were.
        var common = 0
        var commonEnd: UInt64 = 0
        while common < old.count, common < new.count, old[common] == new[common] {
            commonEnd += old[common].length
            common += 1
        }
        var first = 0
        var base: UInt64 = 0
        while base + new[first].length <= min(textEnd, commonEnd) {
            base += new[first].length
            first += 1
        }
        guard oldSize - commonEnd <= Self.appendTailLimit, !old[common...].contains(where: \.isHole),
            !new[first...].contains(where: \.isHole)
        else { return nil }
        var oldTail: [UInt8] = []
        var bytes: [UInt8] = []
        do {
            for c in old[common...] { oldTail += try store.readChunk(c) }
            for c in new[first...] { bytes += try store.readChunk(c) }
        } catch {
            return nil
        }
        textBytesRead.add(Int64(oldTail.count + bytes.count), ordering: .relaxed)
        let from = Int(commonEnd - base)
        guard bytes[from..<from + oldTail.count].elementsEqual(oldTail) else { return nil }
        let text = bytes[Int(textEnd - base)...]
        guard let end = TextExtractor.lineEnd(text) else { return nil }
        return (String(decoding: text, as: UTF8.self), known.textEnd + Int64(end))
    }

    /// Whether `known`, a file larger than the text limit, keeps its first `textLimit` bytes in `content` (it grew
    /// or changed after them): told by the shared chunks, nothing read.
    private func keepsText(of known: IndexedDocument, content: ManifestReference?, name: String) -> Bool {
        guard known.size > UInt64(SearchIndex.textLimit), let (old, new) = chunks(of: known, content, name: name)
        else { return false }
        var shared: UInt64 = 0
        for (a, b) in zip(old, new) {
            guard a == b else { return false }
            shared += a.length
            if shared >= UInt64(SearchIndex.textLimit) { return true }
        }
        return false
    }

    /// The chunk lists of the revision `known` indexed and of `content`, if it is the same file, named the same.
    private func chunks(of known: IndexedDocument, _ content: ManifestReference?, name: String)
        -> (old: [ChunkReference], new: [ChunkReference])?
    {
        guard known.kind == "file", known.name == name,
            let id = Hex.decode(known.revision).flatMap({ try? Digest(bytes: $0) }),
            let (_, indexed) = try? store.revision(id, readingXattrs: false),
            let old = try? store.loadManifest(indexed.content).chunks, let new = try? store.loadManifest(content).chunks
        else { return nil }
        return (old, new)
    }

    /// The text of the first `limit` bytes of a content, or nil if it is binary or unreadable. Only what this node
    /// holds is read: content held on demand is not fetched for the index.
    private func text(of content: ManifestReference?, limit: Int) -> String? {
        bytes(of: content, limit: limit).flatMap { TextExtractor.text($0.bytes, truncated: $0.truncated) }
    }

    /// The first `limit` bytes of a content (`truncated` if it has more), or nil if it is binary (known by its
    /// first chunk, the rest unread) or unreadable.
    private func bytes(of content: ManifestReference?, limit: Int) -> (bytes: [UInt8], truncated: Bool)? {
        var bytes: [UInt8] = []
        var truncated = false
        if let content, !store.holds(content.node.id) { return nil }
        do {
            for c in try store.loadManifest(content).chunks {
                if bytes.count >= limit || !(c.isHole || store.holds(c.id)) {
                    truncated = true
                    break
                }
                if c.isHole {
                    bytes += repeatElement(0, count: min(Int(c.length), limit))
                } else {
                    bytes += try store.readChunk(c)
                }
                // A binary file is known by its first chunk: the rest is not read.
                if bytes.count >= TextExtractor.sniffLength, TextExtractor.isBinary(bytes) { return nil }
            }
        } catch {
            logger.warning("search index: cannot read a content", metadata: ["error": "\(error)"])
            return nil
        }
        if bytes.count > limit {
            bytes.removeLast(bytes.count - limit)
            truncated = true
        }
        return (bytes, truncated)
    }

    /// Runs `text` as a query (docs/search.md): only documents the mount shows now are answered, at the path it
    /// shows them, so a result never names what this identity may no longer read.
    /// `documents`: only among these (hex ids).
    func search(_ text: String, sort: SearchSort, limit: Int, offset: Int, documents: [String]? = nil)
        throws(Failure) -> [SearchResult]
    {
        let query = try Self.parse(text)
        let names = Names(home: home, store: store)
        return try shown(query, sort: sort, limit: limit, offset: offset, documents: documents, names: names).map {
            result($0.hit, path: $0.path, names: names, query: query)
        }
    }

    /// `/.hypernet/search/QUERY/`: the first `viewLimit` matches by relevance; nil for a query that does not parse.
    func matches(_ text: String) -> [SearchMatch]? {
        guard let query = try? Self.parse(text),
            let found = try? shown(
                query, sort: .relevance, limit: Self.viewLimit, offset: 0, documents: nil,
                names: Names(home: home, store: store))
        else { return nil }
        return found.compactMap { hit, path in
            var shown = hit.document
            shown.path = path
            return Self.ids(shown).map { SearchMatch(name: shown.name, path: path, document: $0, tree: $1) }
        }
    }

    /// The hits the mount shows now, at the path it shows each: rights are checked again here, so a document this
    /// identity may no longer read is never answered, even before the indexer has removed it.
    private func shown(
        _ query: SearchQuery, sort: SearchSort, limit: Int, offset: Int, documents: [String]?, names: Names
    ) throws(Failure) -> [(hit: SearchHit, path: String)] {
        guard limit > 0 else { return [] }
        let page = max(limit, 64)
        var results: [(hit: SearchHit, path: String)] = []
        var skipped = 0
        do {
            try index.search(
                pages: { position in
                    SearchPlan(
                        query, sort: sort, limit: page, offset: position, documents: documents,
                        identity: names.token(for:))
                },
                while: { hits in
                    let ids = hits.compactMap { Self.ids($0.document) }
                    let paths = shownPaths(ids)
                    for hit in hits {
                        guard let (document, _) = Self.ids(hit.document), let path = paths[document] else {
                            continue
                        }
                        if skipped < offset {
                            skipped += 1
                            continue
                        }
                        results.append((hit, path))
                        if results.count == limit { return false }
                    }
                    return hits.count == page
                })
        } catch {
            throw Failure(.store, "search index \(index.path): \(error)")
        }
        return results
    }

    private static func parse(_ text: String) throws(Failure) -> SearchQuery {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        do { return try SearchQuery(text, now: Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec / 1_000_000)) } catch {
            throw Failure(.badQuery, "bad query: \(error)")
        }
    }

    /// A stream of the results that revisions indexed from now on make match `text`, one JSON line each.
    func subscribe(_ text: String) throws(Failure) -> EventReader {
        _ = try Self.parse(text)
        let reader = EventReader { [weak self] reader in
            _ = self?.state.withLock { $0.subscriptions.removeValue(forKey: ObjectIdentifier(reader)) }
        }
        state.withLock { $0.subscriptions[ObjectIdentifier(reader)] = (text, reader) }
        return reader
    }

    /// Tells subscribers which of the documents just indexed match their queries (relative times read anew).
    private func notify(_ documents: [String]) {
        let subscriptions = state.withLock { Array($0.subscriptions.values) }
        guard !documents.isEmpty, !subscriptions.isEmpty else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        for (query, reader) in subscriptions {
            guard
                let results = try? search(
                    query, sort: .modified, limit: documents.count, offset: 0, documents: documents)
            else { continue }
            for result in results.reversed() {
                guard let line = try? encoder.encode(result) else { continue }
                reader.append(Array(line) + [UInt8(ascii: "\n")])
            }
        }
    }

    /// The document's id and its tree's key, from their hex.
    private static func ids(_ d: IndexedDocument) -> (DocumentID, SigningPublicKey)? {
        guard let document = Hex.decode(d.document).flatMap({ try? DocumentID(bytes: $0) }),
            let tree = Hex.decode(d.tree).flatMap({ try? SigningPublicKey(bytes: $0) })
        else { return nil }
        return (document, tree)
    }

    private func result(_ hit: SearchHit, path: String, names: Names, query: SearchQuery) -> SearchResult {
        let d = hit.document
        var snippet: String?
        if query.hasText, d.kind == "file", let bytes = Hex.decode(d.revision), let id = try? Digest(bytes: bytes),
            let (_, metadata) = try? store.revision(id, readingXattrs: false),
            let body = text(of: metadata.content, limit: Self.snippetLimit)
        {
            snippet = Snippet.make(body, terms: query.highlightTerms)
        }
        let root = mountpoint == "/" ? "" : mountpoint
        // Named as it shows now (the index may not have seen a rename yet).
        var shown = d
        shown.path = path
        return SearchResult(
            path: root + path, name: shown.name, kind: d.kind, owner: names.name(for: d.owner),
            author: names.name(for: d.author), size: d.size,
            modified: ISO8601.format(milliseconds: UInt64(clamping: d.mtime)),
            created: ISO8601.format(milliseconds: UInt64(clamping: d.created)), conflict: d.conflict,
            shared: d.shared, revision: d.revision, document: d.document, score: hit.score, snippet: snippet)
    }

    /// `fsck` without a daemon: problems of the index file, if there is one (the next start rebuilds it).
    public static func check(home: Home) -> [String] {
        guard access(home.searchIndexPath, F_OK) == 0 else { return [] }
        do {
            return try SearchIndex(path: home.searchIndexPath).check()
        } catch {
            return ["search index: \(error) (it is rebuilt when the node starts)"]
        }
    }

    /// Problems of the index file; a damaged index is rebuilt at once (it is derived state).
    func check() -> [String] {
        let problems = index.check()
        guard !problems.isEmpty else { return [] }
        let rebuilt = (try? rebuild()) != nil
        return problems.map { "search index: \($0)" + (rebuilt ? " (rebuilding it)" : "") }
    }
}

/// Identity tokens and the names a query or a result uses for them: contact names, and `me` for this identity.
struct Names {
    let own: String
    let byName: [String: String]
    let byToken: [String: String]

    init(home: Home, store: Store) {
        own = store.keyring.identityToken.description
        let contacts = (try? Contacts.load(home))?.list ?? []
        byName = Dictionary(contacts.map { ($0.name, $0.identity.description) }) { a, _ in a }
        byToken = Dictionary(contacts.map { ($0.identity.description, $0.name) }) { a, _ in a }
    }

    func token(for name: String) -> String? { name == "me" ? own : byName[name] }
    func name(for token: String) -> String { token == own ? "me" : byToken[token] ?? token }
}
