import Glibc
import HypernetCrypto
import HypernetModel
import HypernetStore
import Logging
import Testing

/// Delta chunks (docs/store-format.md, "Delta chunk"). Frames are opened here from the spec alone (AEAD with
/// the reference's key), as a second implementation would, to check codecs, depths and keys.
@Suite struct DeltaTests {
    final class Fixture {
        let home: Home
        let store: Store
        init(keyring: Keyring? = nil) throws {
            var template = Array("/tmp/hypernet-delta-XXXXXX".utf8CString)
            let path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
            home = Home(path: path)
            let keyring = try keyring ?? Keyring.loadOrCreate(directory: home.keysDirectory, name: nil).keyring
            store = try Store(home: home, keyring: keyring, logger: Logger(label: "test"))
        }
        deinit { _ = system("rm -rf '\(home.path)'") }

        /// Stores `pieces` (each against its base, if any) and records them; returns the references.
        func write(_ pieces: [[UInt8]], bases: [[ChunkReference]] = []) throws -> [ChunkReference] {
            let joined = pieces.flatMap { $0 }
            var ranges: [Range<Int>] = []
            for p in pieces { ranges.append((ranges.last?.upperBound ?? 0)..<(ranges.last?.upperBound ?? 0) + p.count) }
            let written = try joined.withUnsafeBytes {
                try store.writeChunks($0, ranges: ranges, bases: bases, key: store.keyring.treeKey)
            }
            try store.transaction { tx in try tx.recordChunks(written.locations) }
            return written.references
        }

        func write(_ piece: [UInt8], base: ChunkReference?) throws -> ChunkReference {
            try write([piece], bases: [base.map { [$0] } ?? []])[0]
        }

        /// The decrypted frame of a stored chunk: codec byte first.
        func frame(_ reference: ChunkReference) throws -> [UInt8] {
            let sealed = try #require(try store.sealedChunk(reference.id))
            return try reference.key.withUnsafeBytes { k in
                try sealed.withUnsafeBytes { c in
                    try [UInt8](repeating: 0, count: 24).withUnsafeBytes { n in try AEAD.open(c, key: k, nonce: n) }
                }
            }
        }

        func packBytes() -> Int { Int(store.statistics().packBytes) }

        /// Stores `frame` sealed under `key` (default: any valid key, the frame's hash) as a writer would, unchecked.
        func seal(_ frame: [UInt8], length: UInt64, key: Digest? = nil) throws -> ChunkReference {
            let key = key ?? BLAKE2b.hash(frame)
            let sealed = key.withUnsafeBytes { k in
                frame.withUnsafeBytes { fr in
                    [UInt8](repeating: 0, count: 24).withUnsafeBytes { n in AEAD.seal(fr, key: k, nonce: n) }
                }
            }
            let id = BLAKE2b.hash(sealed)
            let location = try store.receiveChunk(id: id, sealed: sealed)
            try store.transaction { tx in try tx.recordChunks([location]) }
            return ChunkReference(id: id, key: key, length: length)
        }

        /// The same store opened anew: nothing cached.
        func reopened() throws -> Store { try Store(home: home, keyring: store.keyring, logger: Logger(label: "test")) }
    }

    static func random(_ count: Int, seed: UInt64) -> [UInt8] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: state >> 33)
        }
    }

    @Test func deltaRoundTripsAndIsSmall() throws {
        let f = try Fixture()
        let old = Self.random(64 << 10, seed: 1)
        let base = try f.write(old, base: nil)
        var new = old
        new[30_000] ^= 0xff
        let before = f.packBytes()
        let delta = try f.write(new, base: base)
        #expect(f.packBytes() - before < 300)
        #expect(try f.frame(delta)[0] == 2)
        #expect(try f.frame(delta)[1] == 1)
        #expect(try f.store.readChunk(delta) == new)
        #expect(try f.reopened().readChunk(delta) == new)
        #expect(f.store.check().isEmpty)
    }

    @Test func theThreeEditKindsAddSmallObjects() throws {
        let f = try Fixture()
        let old = Self.random(100 << 10, seed: 2)
        let base = try f.write(old, base: nil)
        var inPlace = old
        inPlace[50_000] &+= 1
        let edits: [(String, [UInt8], Int)] = [
            ("1-byte in-place edit", inPlace, 300),
            ("100-byte append", old + Self.random(100, seed: 3), 400),
            ("1 KiB inserted at the start", Self.random(1024, seed: 4) + old, 1400),
        ]
        for (what, bytes, limit) in edits {
            let before = f.packBytes()
            let reference = try f.write(bytes, base: base)
            let added = f.packBytes() - before
            #expect(added < limit, "\(what): \(added) bytes")
            #expect(try f.reopened().readChunk(reference) == bytes, "\(what)")
        }
    }

    @Test func aChangedManifestLeafIsStoredAsADelta() throws {
        let f = try Fixture()
        let chunks = (0..<300).map { i in
            ChunkReference(
                id: BLAKE2b.hash(Self.random(8, seed: UInt64(i))), key: BLAKE2b.hash([UInt8(i & 0xff), 1]),
                length: 65536)
        }
        let first = try f.store.writeManifest(chunks: chunks, previous: .empty, key: f.store.keyring.treeKey)
        try f.store.transaction { tx in try tx.recordChunks(first.locations) }
        var changed = chunks
        changed[100].length += 1
        let second = try f.store.writeManifest(
            chunks: changed, previous: first.tree, unchangedPrefix: 100, key: f.store.keyring.treeKey)
        try f.store.transaction { tx in try tx.recordChunks(second.locations) }
        // A full leaf of 256 references is 18 KiB of random-looking bytes; its delta and the root's are small.
        #expect(second.locations.count == 2)
        #expect(second.locations.reduce(0) { $0 + $1.length } < 600)
        #expect(try f.reopened().loadManifest(second.tree.root).chunks == changed)
        #expect(try f.reopened().loadManifest(first.tree.root).chunks == chunks)
    }

    @Test func chainsStayWithinTheDepthBound() throws {
        let f = try Fixture()
        let start = Self.random(40 << 10, seed: 5)
        try Self.checkDepthBound(f, start: start, codec: 2, seed: 100) { bytes, previous in
            try f.write(bytes, base: previous)
        }
    }

    /// Appends 200 bytes at a time, each version a delta against the last (`write`): depths climb to the bound,
    /// then restart at half of it (a delta against the ancestor there, never a whole chunk), each step small;
    /// every version reads back after a reopen.
    static func checkDepthBound(
        _ f: Fixture, start: [UInt8], codec: UInt8, seed: UInt64,
        write: ([UInt8], ChunkReference) throws -> ChunkReference
    ) throws {
        var bytes = start
        var reference = try f.write(bytes, base: nil)
        var versions: [(ChunkReference, [UInt8])] = [(reference, bytes)]
        var depths: [Int] = []
        for i in 0..<40 {
            bytes += random(200, seed: seed + UInt64(i))
            let before = f.packBytes()
            reference = try write(bytes, reference)
            #expect(f.packBytes() - before < 4 << 10)
            let frame = try f.frame(reference)
            #expect(frame[0] == codec)
            depths.append(Int(frame[1]))
            versions.append((reference, bytes))
        }
        #expect(depths.max() == 32)
        #expect(Array(depths[30...34]) == [31, 32, 17, 18, 19])
        let fresh = try f.reopened()
        for (reference, bytes) in versions { #expect(try fresh.readChunk(reference) == bytes) }
    }

    @Test func deltaAndFullFramesOfOnePlaintextUseDifferentKeys() throws {
        let f = try Fixture()
        let old = Self.random(64 << 10, seed: 6)
        var new = old
        new[10] ^= 1
        let base = try f.write(old, base: nil)
        let delta = try f.write(new, base: base)
        let full = try f.write(new, base: nil)
        #expect(try f.frame(delta)[0] == 2)
        #expect(try f.frame(full)[0] == 0)
        #expect(delta.key != full.key)
        #expect(delta.id != full.id)
        #expect(try f.store.readChunk(delta) == f.store.readChunk(full))
        // The full key is the spec's: HMAC-SHA-256(key: epoch key, "hypernet chunk v2" || plaintext).
        #expect(Self.deltaKey(new, context: "hypernet chunk v2", epochKey: f.store.keyring.treeKey) == full.key)
        // The delta key is keyed over the whole frame, under its own context.
        #expect(
            Self.deltaKey(try f.frame(delta), context: "hypernet chunk delta v2", epochKey: f.store.keyring.treeKey)
                == delta.key)
    }

    @Test func anUnchangedPieceReusesItsBaseEvenWhenTheBaseIsADelta() throws {
        let f = try Fixture()
        let old = Self.random(64 << 10, seed: 7)
        var new = old
        new[0] ^= 1
        let delta = try f.write(old, base: f.write(new, base: nil))
        let before = f.packBytes()
        #expect(try f.write(old, base: delta) == delta)
        #expect(f.packBytes() == before)
    }

    @Test func onlyAPieceOfTheSameLengthAndBytesIsItsBase() throws {
        let f = try Fixture()
        let old = Self.random(64 << 10, seed: 31)
        let base = try f.write(old, base: nil)
        var lastFlipped = old
        lastFlipped[old.count - 1] ^= 1
        for piece in [old + [0], Array(old.dropLast()), lastFlipped] {
            let written = try f.write(piece, base: base)
            #expect(written != base)
            #expect(try f.reopened().readChunk(written) == piece)
        }
        #expect(try f.write(old, base: base) == base)
    }

    @Test func aMissingBaseIsAClearError() throws {
        let a = try Fixture()
        let old = Self.random(64 << 10, seed: 8)
        var new = old
        new[5] ^= 1
        let delta = try a.write(new, base: a.write(old, base: nil))
        let b = try Fixture(keyring: a.store.keyring)
        let location = try b.store.receiveChunk(id: delta.id, sealed: try #require(try a.store.sealedChunk(delta.id)))
        try b.store.transaction { tx in try tx.recordChunks([location]) }
        let error = try #require(throws: StoreError.self) { try b.store.readChunk(delta) }
        #expect("\(error)".contains("is not stored here"))
    }

    @Test func aCorruptDeltaIsAnErrorNotWrongBytes() throws {
        let f = try Fixture()
        let old = Self.random(64 << 10, seed: 9)
        var new = old
        new[7] ^= 1
        let delta = try f.write(new, base: f.write(old, base: nil))
        // The delta is the last record of the pack: flip its last byte (the AEAD tag).
        let pack = f.home.packsDirectory + "/00000001.pack"
        let fd = open(pack, O_RDWR)
        var st = stat()
        fstat(fd, &st)
        var byte: UInt8 = 0
        pread(fd, &byte, 1, st.st_size - 1)
        byte ^= 0x80
        pwrite(fd, &byte, 1, st.st_size - 1)
        close(fd)
        let error = try #require(throws: StoreError.self) { try f.reopened().readChunk(delta) }
        #expect("\(error)".contains(delta.id.hex))
    }

    /// Frames no honest writer makes, sealed with a valid key: refused with a reason, never a crash.
    @Test func hostileDeltaFramesAreRefused() throws {
        let f = try Fixture()
        let old = Self.random(32 << 10, seed: 10)
        let base = try f.write(old, base: nil)
        func deltaFrame(depth: UInt8, base: ChunkReference, target: [UInt8]) -> [UInt8] {
            var w = ByteWriter()
            w.u8(2)
            w.u8(depth)
            base.encode(into: &w)
            w.raw(
                target.withUnsafeBytes { t in
                    old.withUnsafeBytes { p in Zstd.compress(t, prefix: p, level: 3, capacity: 1 << 20)! }
                })
            return w.bytes
        }
        let good = Self.random(100, seed: 11) + old
        let cases: [(String, [UInt8], UInt64, String)] = [
            (
                "output over 4 MiB", deltaFrame(depth: 1, base: base, target: [UInt8](repeating: 0, count: 5 << 20)),
                5 << 20, "exceeds the limit"
            ),
            (
                "reference length differs", deltaFrame(depth: 1, base: base, target: good), UInt64(good.count + 1),
                "expected"
            ),
            ("depth 0", deltaFrame(depth: 0, base: base, target: good), UInt64(good.count), "depth"),
            ("depth over the bound", deltaFrame(depth: 33, base: base, target: good), UInt64(good.count), "depth"),
            (
                "base length wrong",
                deltaFrame(depth: 1, base: ChunkReference(id: base.id, key: base.key, length: 5), target: good),
                UInt64(good.count), "does not match"
            ),
            ("truncated header", [2, 1, 0, 0], 4, "delta frame"),
        ]
        for (what, frame, length, reason) in cases {
            let reference = try f.seal(frame, length: length)
            let error = try #require(throws: StoreError.self, "\(what)") { try f.reopened().readChunk(reference) }
            #expect("\(error)".contains(reason), "\(what): \(error)")
        }
        // The same construction with honest values reads: the cases above fail for the reason named.
        #expect(
            try f.reopened().readChunk(
                try f.seal(deltaFrame(depth: 1, base: base, target: good), length: UInt64(good.count))) == good)
    }

    // MARK: Several bases (codec 3)

    /// The delta key of a frame: BLAKE2b-256(key: epoch key, context || frame).
    /// A chunk key as the spec derives it: HMAC-SHA-256 under the epoch key of `context` || `data`.
    static func deltaKey(_ data: [UInt8], context: String, epochKey: SecureBytes) -> Digest {
        Array(context.utf8).withUnsafeBytes { c in data.withUnsafeBytes { d in HMACSHA256.mac(key: epochKey, [c, d]) } }
    }

    /// An edit that removes the cut point between two old chunks makes one new chunk of both: against both
    /// it costs about the edit, against the first alone its second half goes literally (here: whole).
    @Test func aChunkJoiningTwoOldChunksCostsAboutTheEdit() throws {
        let f = try Fixture()
        let a = Self.random(40 << 10, seed: 20)
        let b = Self.random(40 << 10, seed: 21)
        let old = try f.write([a, b])
        var joined = a + b
        joined.replaceSubrange(a.count - 16..<a.count + 16, with: Self.random(32, seed: 22))
        let before = f.packBytes()
        let delta = try f.write([joined], bases: [old])[0]
        #expect(f.packBytes() - before < 400, "\(f.packBytes() - before) bytes")
        #expect(try f.reopened().readChunk(delta) == joined)
        // The frame, as the spec lays it out.
        let frame = try f.frame(delta)
        var header = ByteWriter()
        header.u8(3)
        header.u8(1)
        header.u8(2)
        for base in old { base.encode(into: &header) }
        #expect(Array(frame.prefix(3 + 2 * 72)) == header.bytes)
        #expect(
            delta.key
                == Self.deltaKey(
                    frame, context: "hypernet chunk multi-base delta v2", epochKey: f.store.keyring.treeKey))
        #expect(f.store.check().isEmpty)

        let g = try Fixture(keyring: f.store.keyring)
        let firstOnly = try g.write([a, b])
        let gBefore = g.packBytes()
        _ = try g.write([joined], bases: [[firstOnly[0]]])
        #expect(g.packBytes() - gBefore > 40 << 10)
    }

    /// Depth is 1 + the deepest base's; one base still makes codec 2, byte for byte as format 3 did.
    @Test func depthFollowsTheDeepestBaseAndOneBaseKeepsCodecTwo() throws {
        let f = try Fixture()
        let a = Self.random(30 << 10, seed: 23)
        let b = Self.random(30 << 10, seed: 24)
        let first = try f.write(a, base: nil)
        var b2 = b
        b2[100] ^= 1
        let second = try f.write(b2, base: f.write(b, base: nil))
        let single = try f.frame(second)
        #expect(single[0] == 2 && single[1] == 1)
        #expect(
            second.key == Self.deltaKey(single, context: "hypernet chunk delta v2", epochKey: f.store.keyring.treeKey))
        var joined = a + b2
        joined[a.count] ^= 1
        let delta = try f.write([joined], bases: [[first, second]])[0]
        let frame = try f.frame(delta)
        #expect(Array(frame.prefix(3)) == [3, 2, 2])
        #expect(try f.reopened().readChunk(delta) == joined)
        // A piece equal to any of its bases is that base.
        #expect(try f.write([b2], bases: [[first, second]])[0] == second)
    }

    @Test func aMissingSecondBaseIsAClearError() throws {
        let a = try Fixture()
        let x = Self.random(40 << 10, seed: 25)
        let y = Self.random(40 << 10, seed: 26)
        let old = try a.write([x, y])
        var joined = x + y
        joined[x.count] ^= 1
        let delta = try a.write([joined], bases: [old])[0]
        let b = try Fixture(keyring: a.store.keyring)
        for id in [delta.id, old[0].id] {
            let location = try b.store.receiveChunk(id: id, sealed: try #require(try a.store.sealedChunk(id)))
            try b.store.transaction { tx in try tx.recordChunks([location]) }
        }
        let error = try #require(throws: StoreError.self) { try b.store.readChunk(delta) }
        #expect("\(error)".contains("its delta base \(old[1].id.hex) is not stored here"), "\(error)")
    }

    /// A chunk that grows by appends against two bases (an unchanged neighbour and its previous version)
    /// reaches the depth bound, then goes against the ancestor at half of it along its deepest bases.
    @Test func multiBaseChainsStayWithinTheDepthBound() throws {
        let f = try Fixture()
        let neighbour = Self.random(20 << 10, seed: 27)
        let fixed = try f.write(neighbour, base: nil)
        try Self.checkDepthBound(f, start: neighbour + Self.random(20 << 10, seed: 28), codec: 3, seed: 200) {
            bytes, previous in
            try f.write([bytes], bases: [[fixed, previous]])[0]
        }
    }

    /// Codec-3 frames no honest writer makes, sealed with a valid key: refused with a reason, never a crash.
    @Test func hostileMultiBaseFramesAreRefused() throws {
        let f = try Fixture()
        let a = Self.random(20 << 10, seed: 29)
        let b = Self.random(20 << 10, seed: 30)
        let old = try f.write([a, b])
        var b2 = b
        b2[0] ^= 1
        let deep = try f.write(b2, base: old[1])  // depth 1
        let good = a + Self.random(100, seed: 31) + b
        func frame(depth: UInt8 = 1, count: UInt8? = nil, bases: [ChunkReference], prefix: [UInt8]? = nil) -> [UInt8] {
            var w = ByteWriter()
            w.u8(3)
            w.u8(depth)
            w.u8(count ?? UInt8(bases.count))
            for base in bases { base.encode(into: &w) }
            let p = prefix ?? a + b
            w.raw(
                good.withUnsafeBytes { t in
                    p.withUnsafeBytes { Zstd.compress(t, prefix: $0, level: 3, capacity: 1 << 20)! }
                })
            return w.bytes
        }
        let length = UInt64(good.count)
        var longer = old[1]
        longer.length += 1
        let huge = ChunkReference(id: old[1].id, key: old[1].key, length: 3 << 20)
        let cases: [(String, [UInt8], UInt64, String)] = [
            ("count 0", frame(count: 0, bases: []), length, "base count 0"),
            ("count 1", frame(bases: [old[0]], prefix: a), length, "base count 1"),
            ("count 5", frame(bases: [old[0], old[1], old[0], old[1], old[0]]), length, "base count 5"),
            ("frame ends within the references", Array(frame(bases: old).prefix(3 + 72 + 40)), length, "delta frame"),
            ("second base length wrong", frame(bases: [old[0], longer]), length, "does not match"),
            ("bases over 4 MiB together", frame(bases: [huge, huge]), length, "over the limit"),
            (
                "depth not above a base's", frame(depth: 1, bases: [old[0], deep], prefix: a + b2), length,
                "does not match"
            ),
            ("reference length differs", frame(bases: old), length - 1, "expected"),
        ]
        for (what, bytes, length, reason) in cases {
            let reference = try f.seal(bytes, length: length)
            let error = try #require(throws: StoreError.self, "\(what)") { try f.reopened().readChunk(reference) }
            #expect("\(error)".contains(reason), "\(what): \(error)")
        }
        // The same constructions with honest values read: the cases above fail for the reason named.
        #expect(try f.reopened().readChunk(try f.seal(frame(bases: old), length: length)) == good)
        #expect(
            try f.reopened().readChunk(
                try f.seal(frame(depth: 2, bases: [old[0], deep], prefix: a + b2), length: length)) == good)
    }

    /// Full chunks (codecs 0 and 1) are those of store formats 1 and 2, built here from the spec, with the v1
    /// key (keyed BLAKE2b-256) these formats derived.
    @Test func formatOneObjectsStillRead() throws {
        let f = try Fixture()
        let text = Array(String(repeating: "format one, codec one. ", count: 500).utf8)
        let raw = Self.random(3000, seed: 12)
        let compressed = try #require(text.withUnsafeBytes { Zstd.compressIfSmaller($0) })
        for (plaintext, frame) in [(raw, [0] + raw), (text, [1] + compressed)] {
            var hasher = BLAKE2b.Hasher(key: f.store.keyring.treeKey)
            hasher.update(Array("hypernet chunk v1".utf8))
            plaintext.withUnsafeBytes { hasher.update($0) }
            let reference = try f.seal(frame, length: UInt64(plaintext.count), key: hasher.finalize())
            #expect(try f.store.readChunk(reference) == plaintext)
            // Written again it gets a v2 key, so a new chunk, which then deduplicates as any other.
            let rewritten = try f.write(plaintext, base: nil)
            let again = try f.write(plaintext, base: nil)
            #expect(rewritten != reference && again == rewritten)
            #expect(try f.store.readChunk(rewritten) == plaintext)
        }
    }
}
