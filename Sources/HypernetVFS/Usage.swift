import Glibc
import HypernetModel
import HypernetStore

/// Space used by a directory's documents (`hypernet du`, docs/cli.md): bytes in the packs, each stored object
/// counted once however many revisions or documents use it.
public struct SpaceUsage: Codable, Sendable, Equatable {
    /// Relative to the mount root ("" is the root); the controller makes it absolute.
    public var path: String
    /// What the current content and xattrs of the documents at or below `path` take.
    public var current: Int64
    /// What their other retained revisions, and those of documents deleted from below `path`, take besides.
    public var history: Int64
    /// The part of `current` + `history` that more than one document uses (copies, identical files).
    public var shared: Int64
}

extension VirtualFileSystem {
    /// Who uses a stored object, as far as a directory's subtree is concerned.
    private struct Use {
        var document: DocumentID
        var byMany = false
        var isCurrent: Bool

        mutating func merge(_ other: Use) {
            byMany = byMany || other.byMany || other.document != document
            isCurrent = isCurrent || other.isCurrent
        }
    }

    /// The space of `path` (in this identity's tree) and of each directory below it, deepest first, `path` last.
    public func usage(path: String) throws(VFSError) -> [SpaceUsage] {
        let top = try resolve(path: path)
        let (nodes, currentDocuments) = state.withLock { s in
            (s.nodes, Set(s.nodes.values.filter(\.linked).map(\.record.id)))
        }
        var sizes: [ChunkID: Int64] = [:]
        var result: [SpaceUsage] = []
        do {
            func uses(of document: DocumentID, current: RevisionMetadata?) throws(StoreError) -> [ChunkID: Use] {
                let now = try current.map { (m) throws(StoreError) in try store.objects(of: m) } ?? []
                var found: [ChunkID: Use] = [:]
                for id in now { found[id] = Use(document: document, isCurrent: true) }
                for metadata in try store.revisionMetadata(of: document) {
                    for id in try store.objects(of: metadata) where found[id] == nil {
                        found[id] = Use(document: document, isCurrent: false)
                    }
                }
                return found
            }
            func merge(_ part: [ChunkID: Use], into total: inout [ChunkID: Use]) {
                for (id, use) in part {
                    if total[id] == nil { total[id] = use } else { total[id]!.merge(use) }
                }
            }
            // Documents a directory listed once and no directory lists now: deleted, their history kept.
            func formerChildren(of directory: DocumentID, seen: inout Set<DocumentID>) throws(StoreError)
                -> [ChunkID: Use]
            {
                var total: [ChunkID: Use] = [:]
                for metadata in try store.revisionMetadata(of: directory) {
                    let listing: DirectoryListing
                    do { listing = try DirectoryListing(decoding: store.readContent(metadata.content)) } catch {
                        throw .corrupt(object: "a listing of directory \(directory)", reason: "\(error)")
                    }
                    for entry in listing.entries
                    where !currentDocuments.contains(entry.document) && seen.insert(entry.document).inserted {
                        merge(try uses(of: entry.document, current: nil), into: &total)
                        if entry.kind == .directory {
                            merge(try formerChildren(of: entry.document, seen: &seen), into: &total)
                        }
                    }
                }
                return total
            }
            func report(_ total: [ChunkID: Use], path: String) throws(StoreError) {
                sizes.merge(try store.storedBytes(Set(total.keys.filter { sizes[$0] == nil }))) { a, _ in a }
                var usage = SpaceUsage(path: path, current: 0, history: 0, shared: 0)
                for (id, use) in total {
                    let bytes = sizes[id] ?? 0
                    if use.isCurrent { usage.current += bytes } else { usage.history += bytes }
                    if use.byMany { usage.shared += bytes }
                }
                result.append(usage)
            }
            func walk(_ node: Node, path: String, seen: inout Set<DocumentID>) throws(StoreError) -> [ChunkID: Use] {
                var total = try uses(of: node.record.id, current: node.record.metadata)
                guard node.isDirectory else { return total }
                for (name, inode) in node.children.sorted {
                    guard let child = nodes[inode] else { continue }
                    merge(try walk(child, path: path.isEmpty ? name : path + "/" + name, seen: &seen), into: &total)
                }
                merge(try formerChildren(of: node.record.id, seen: &seen), into: &total)
                try report(total, path: path)
                return total
            }
            var seen = Set<DocumentID>()
            let total = try walk(top, path: path, seen: &seen)
            if !top.isDirectory { try report(total, path: path) }
        } catch {
            throw fail(error, "du", inode: top.inode)
        }
        return result
    }
}
