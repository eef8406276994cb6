import Foundation
import GRDB
import HypernetModel

/// What `hypernet du` counts (docs/cli.md, du): the stored objects revisions need, and their bytes in the packs.
extension Store {
    /// The stored objects `metadata` names: its content's and xattr list's chunks and manifest nodes (holes are
    /// stored nowhere; the delta bases of a chunk count with the revisions that listed them).
    public func objects(of metadata: RevisionMetadata) throws(StoreError) -> Set<ChunkID> {
        var ids = Set<ChunkID>()
        for root in [metadata.content, metadata.xattrList].compactMap({ $0 }) {
            let tree = try loadManifest(root)
            for c in tree.chunks where !c.isHole { ids.insert(c.id) }
            for level in tree.levels { for node in level { ids.insert(node.id) } }
        }
        return ids
    }

    /// The metadata of every readable revision of `document` whose content is here (those whose key this node lacks
    /// and those whose content was released are left out).
    public func revisionMetadata(of document: DocumentID) throws(StoreError) -> [RevisionMetadata] {
        var found: [RevisionMetadata] = []
        for summary in try revisions(of: document) where !summary.isReleased {
            do { found.append(try revision(summary.id, readingXattrs: false).metadata) } catch {
                if case .rights = error { continue }
                throw error
            }
        }
        return found
    }

    /// The bytes each of `ids` takes in the packs (its record: header and ciphertext); absent when not stored.
    public func storedBytes(_ ids: Set<ChunkID>) throws(StoreError) -> [ChunkID: Int64] {
        try catalog.read { db in
            let statement = try db.cachedStatement(sql: "SELECT length FROM chunks WHERE id = ?")
            var found: [ChunkID: Int64] = [:]
            for id in ids {
                if let length = try Int64.fetchOne(statement, arguments: [Data(id.bytes)]) {
                    found[id] = length + Int64(PackStore.recordHeaderSize)
                }
            }
            return found
        }
    }
}
