import GRDB
import Glibc
import HypernetCrypto
import HypernetModel
import HypernetStore
import Logging
import Testing

@Suite struct StoreTests {
    func makeStore() throws -> (Store, Home) {
        var template = Array("/tmp/hypernet-store-XXXXXX".utf8CString)
        let path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        let home = Home(path: path)
        let keyring = try Keyring.loadOrCreate(directory: home.keysDirectory, name: nil).keyring
        return (try Store(home: home, keyring: keyring, logger: Logger(label: "test")), home)
    }

    @Test func contentRoundTripsAndDeduplicates() throws {
        let (store, home) = try makeStore()
        defer { _ = system("rm -rf '\(home.path)'") }
        let bytes = (0..<700_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        let first = try store.writeContent(bytes, key: store.keyring.treeKey)
        let second = try store.writeContent(bytes, key: store.keyring.treeKey)
        try store.transaction { tx in try tx.recordChunks(first.locations) }
        #expect(second.root == first.root)
        #expect(try store.readContent(first.root) == bytes)
        #expect(store.check().isEmpty)
    }

    @Test func aFlippedByteInAPackIsReportedNotReturned() throws {
        let (store, home) = try makeStore()
        defer { _ = system("rm -rf '\(home.path)'") }
        let bytes = [UInt8](repeating: 7, count: 10_000) + (0..<50_000).map { UInt8(truncatingIfNeeded: $0 * 7919) }
        let written = try store.writeContent(bytes, key: store.keyring.treeKey)
        try store.transaction { tx in try tx.recordChunks(written.locations) }
        let pack = home.packsDirectory + "/00000001.pack"
        let fd = open(pack, O_RDWR)
        var st = stat()
        fstat(fd, &st)
        var byte: UInt8 = 0
        pread(fd, &byte, 1, 100)
        byte ^= 0xff
        pwrite(fd, &byte, 1, 100)
        close(fd)
        let reopened = try Store(home: home, keyring: store.keyring, logger: Logger(label: "test"))
        #expect(throws: StoreError.self) { try reopened.readContent(written.root) }
        #expect(!reopened.check().isEmpty)
    }

    @Test func aPackWithADamagedHeaderCostsOnlyItsOwnChunks() throws {
        let (store, home) = try makeStore()
        defer { _ = system("rm -rf '\(home.path)'") }
        let old = try store.writeContent(Array(repeating: 1, count: 70_000), key: store.keyring.treeKey)
        try store.transaction { tx in try tx.recordChunks(old.locations) }
        let fd = open(home.packsDirectory + "/00000001.pack", O_RDWR)
        var byte: UInt8 = 0x58
        pwrite(fd, &byte, 1, 2)
        close(fd)
        let reopened = try Store(home: home, keyring: store.keyring, logger: Logger(label: "test"))
        #expect(throws: StoreError.self) { try reopened.readContent(old.root) }
        let bytes = (0..<90_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let new = try reopened.writeContent(bytes, key: store.keyring.treeKey)
        try reopened.transaction { tx in try tx.recordChunks(new.locations) }
        #expect(new.locations.allSatisfy { $0.pack == 2 })
        #expect(try reopened.readContent(new.root) == bytes)
        #expect(reopened.check().contains { $0.contains("bad header") })
    }

    @Test func recordsNoRowNamesAreGivenBack() throws {
        struct Refused: Error {}
        let (store, home) = try makeStore()
        defer { _ = system("rm -rf '\(home.path)'") }
        let pack = home.packsDirectory + "/00000001.pack"
        func size() -> Int64 {
            var st = stat()
            stat(pack, &st)
            return Int64(st.st_size)
        }
        let kept = try store.writeContent(Array(repeating: 2, count: 70_000), key: store.keyring.treeKey)
        try store.transaction { tx in try tx.recordChunks(kept.locations) }
        let end = size()
        // A transaction that fails gives back what was appended for it.
        let other = (0..<90_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let refused = try store.writeContent(other, key: store.keyring.treeKey)
        #expect(size() > end)
        #expect(throws: StoreError.self) {
            try store.transaction(appended: refused.locations) { _ -> Void in throw Refused() }
        }
        #expect(size() == end)
        // What a process left unrecorded is cut at the next start.
        _ = try store.writeContent((0..<90_000).map { UInt8(truncatingIfNeeded: $0 &* 11) }, key: store.keyring.treeKey)
        #expect(size() > end)
        let reopened = try Store(home: home, keyring: store.keyring, logger: Logger(label: "test"))
        reopened.reclaimSpace()
        #expect(size() == end)
        #expect(try reopened.readContent(kept.root) == Array(repeating: 2, count: 70_000))
        var reserve = stat()
        #expect(stat(home.reservePath, &reserve) == 0 && Int64(reserve.st_size) == Store.reserveBytes)
        #expect(reopened.releaseReserve())
        #expect(!reopened.releaseReserve())
    }

    @Test func checkpointEmptiesTheWALAfterSyncingPacks() throws {
        let (store, home) = try makeStore()
        defer { _ = system("rm -rf '\(home.path)'") }
        let written = try store.writeContent(
            (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 13) }, key: store.keyring.treeKey)
        try store.transaction { tx in try tx.recordChunks(written.locations) }
        var wal = stat()
        stat(home.catalogPath + "-wal", &wal)
        #expect(wal.st_size > 0)
        var before = stat()
        stat(home.catalogPath, &before)
        store.checkpointIfNeeded(walLimit: 0)
        // The rows moved from the WAL into the database file.
        var after = stat()
        stat(home.catalogPath, &after)
        #expect(after.st_size > before.st_size)
        #expect(try store.readContent(written.root).count == 300_000)
        #expect(store.check().isEmpty)
    }

    @Test func aCheckpointedWALIsCutBackSoThatTheNextCheckpointWaitsForTheLimit() throws {
        // A checkpoint restarts the WAL in place; it used to keep its size past the limit, so that the once-a-second
        // pass checkpointed every second (a catalog sync, and a WAL header sync in the next commit) for good.
        let (store, home) = try makeStore()
        defer { _ = system("rm -rf '\(home.path)'") }
        func walSize() -> Int64 {
            var wal = stat()
            stat(home.catalogPath + "-wal", &wal)
            return Int64(wal.st_size)
        }
        func commitOne(_ n: Int) throws {
            let written = try store.writeContent(Array("chunk \(n)".utf8), key: store.keyring.treeKey)
            try store.transaction { tx in try tx.recordChunks(written.locations) }
        }
        var n = 0
        while walSize() <= Store.walLimit {
            try commitOne(n)
            n += 1
        }
        store.checkpointIfNeeded()
        try commitOne(n)
        #expect(walSize() <= Store.walLimit)
        #expect(store.check().isEmpty)
    }

    @Test func aCorruptCatalogRowIsReportedAndTheRestLoads() throws {
        let (store, home) = try makeStore()
        defer { _ = system("rm -rf '\(home.path)'") }
        let metadata = RevisionMetadata(
            mode: 0o100644, uid: 0, gid: 0, mtimeSeconds: 0, mtimeNanoseconds: 0, ctimeSeconds: 0, ctimeNanoseconds: 0,
            size: 0, quorum: 0, xattrs: [], content: nil, symlinkTarget: [])
        let (good, bad) = try store.transaction { tx in
            (
                try tx.insertDocument(
                    id: DocumentID.random(), kind: .file, metadata: metadata, dirty: false, rights: nil),
                try tx.insertDocument(
                    id: DocumentID.random(), kind: .file, metadata: metadata, dirty: false, rights: nil)
            )
        }
        let db = try DatabaseQueue(path: home.catalogPath)
        try db.write {
            try $0.execute(sql: "UPDATE documents SET metadata = x'ff00' WHERE inode = ?", arguments: [Int64(bad)])
        }
        try db.close()
        #expect(try store.loadDocuments().map(\.inode) == [good])
        #expect(store.check().contains { $0.contains("inode \(bad)") })
    }

    @Test func newerCatalogFormatIsRefused() throws {
        let (store, home) = try makeStore()
        defer { _ = system("rm -rf '\(home.path)'") }
        let db = try DatabaseQueue(path: home.catalogPath)
        try db.write { try $0.execute(sql: "UPDATE settings SET value = '99' WHERE key = 'format'") }
        try db.close()
        #expect(throws: StoreError.self) {
            try Store(home: home, keyring: store.keyring, logger: Logger(label: "test"))
        }
    }
}

/// The worked example of docs/store-format.md: if these sizes change, the format changed.
@Suite struct StoreFormatExampleTests {
    @Test func helloCostsOneChunkRecordAndOneLeafRecord() throws {
        var template = Array("/tmp/hypernet-format-XXXXXX".utf8CString)
        let path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        let home = Home(path: path)
        defer { _ = system("rm -rf '\(home.path)'") }
        let keyring = try Keyring.loadOrCreate(directory: home.keysDirectory, name: nil).keyring
        let store = try Store(home: home, keyring: keyring, logger: Logger(label: "test"))
        let written = try store.writeContent(Array("hello".utf8), key: store.keyring.treeKey)
        #expect(written.locations.map(\.length) == [22, 95])
        var st = stat()
        stat(home.packsDirectory + "/00000001.pack", &st)
        #expect(st.st_size == 8 + (4 + 32 + 22) + (4 + 32 + 95))
        #expect(written.root?.level == 0)
        #expect(written.root?.node.length == 5)
    }
}
