import Foundation
import HypernetCrypto
@_spi(Testing) import HypernetSync
import Testing

@Suite struct NoiseTests {
    /// Replays the published Noise_XX_25519_ChaChaPoly_BLAKE2b vectors (see Fixtures/README.md): every
    /// handshake and transport message must match byte for byte, and so must the handshake hash.
    @Test func publishedVectors() throws {
        let vectors = try Self.loadVectors()
        #expect(vectors.count == 2)
        for vector in vectors {
            #expect(vector.protocolName == NoiseHandshake.protocolName)
            var parties = [
                NoiseHandshake(
                    role: .initiator, prologue: Self.hex(vector.initPrologue),
                    staticKey: try Self.keyPair(vector.initStatic), ephemeralKey: try Self.keyPair(vector.initEphemeral)
                ),
                NoiseHandshake(
                    role: .responder, prologue: Self.hex(vector.respPrologue),
                    staticKey: try Self.keyPair(vector.respStatic), ephemeralKey: try Self.keyPair(vector.respEphemeral)
                ),
            ]
            var send: [NoiseCipherState] = []
            var receive: [NoiseCipherState] = []
            for (index, message) in vector.messages.enumerated() {
                let (sender, receiver) = index % 2 == 0 ? (0, 1) : (1, 0)
                let payload = Self.hex(message.payload)
                let ciphertext: [UInt8]
                let received: [UInt8]
                if index < 3 {
                    ciphertext = try parties[sender].writeMessage(payload: payload)
                    received = try parties[receiver].readMessage(ciphertext)
                } else {
                    if send.isEmpty {
                        #expect(parties[0].isComplete && parties[1].isComplete)
                        #expect(parties[0].handshakeHash == parties[1].handshakeHash)
                        if let expected = vector.handshakeHash {
                            #expect(parties[0].handshakeHash == Self.hex(expected))
                        }
                        #expect(parties[0].remoteStaticKey == (try Self.keyPair(vector.respStatic)).publicKey)
                        #expect(parties[1].remoteStaticKey == (try Self.keyPair(vector.initStatic)).publicKey)
                        for i in parties.indices {
                            let (s, r) = parties[i].split()
                            send.append(s)
                            receive.append(r)
                        }
                    }
                    ciphertext = try payload.withUnsafeBytes { try send[sender].encrypt($0) }
                    received = try ciphertext.withUnsafeBytes { try receive[receiver].decrypt($0) }
                }
                #expect(ciphertext == Self.hex(message.ciphertext), "\(vector.source) message \(index)")
                #expect(received == payload, "\(vector.source) message \(index)")
            }
            #expect(send.count == 2, "the vector has transport messages")
        }
    }

    @Test func handshakeWithFreshKeysCarriesPayloadsAndFullSizeRecords() throws {
        let initiatorKey = BoxKeyPair.generate()
        let responderKey = BoxKeyPair.generate()
        let result = try Self.handshake(initiatorKey, responderKey)
        #expect(result.initiator.remoteStaticKey == responderKey.publicKey)
        #expect(result.responder.remoteStaticKey == initiatorKey.publicKey)
        #expect(result.initiator.handshakeHash == result.responder.handshakeHash)
        #expect(result.initiator.handshakeHash.count == 64)
        var (send, receive) = (result.send, result.receive)

        // A record of the largest size Noise allows, both ways; associated data must match.
        let record = (0..<NoiseCipherState.maxPlaintextLength).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let sealed = try record.withUnsafeBytes { try send.initiator.encrypt($0, associatedData: [1, 2]) }
        #expect(sealed.count == NoiseCipherState.maxMessageLength)
        #expect(try sealed.withUnsafeBytes { try receive.responder.decrypt($0, associatedData: [1, 2]) } == record)
        let reply = try [UInt8]().withUnsafeBytes { try send.responder.encrypt($0) }
        #expect(reply.count == 16)
        #expect(try reply.withUnsafeBytes { try receive.initiator.decrypt($0) } == [])
    }

    @Test func tamperedMessagesFailAuthenticationAndLeaveStateUsable() throws {
        var initiator = NoiseHandshake(role: .initiator, prologue: [], staticKey: .generate())
        var responder = NoiseHandshake(role: .responder, prologue: [], staticKey: .generate())
        _ = try responder.readMessage(try initiator.writeMessage(payload: []))
        let second = try responder.writeMessage(payload: Array("hello".utf8))
        for position in [40, second.count - 1] {  // inside the encrypted static key, inside the payload tag
            var tampered = second
            tampered[position] ^= 1
            #expect(throws: NoiseError.authenticationFailed) { try initiator.readMessage(tampered) }
        }
        #expect(try initiator.readMessage(second) == Array("hello".utf8))

        // A different prologue on one side breaks the first authenticated message.
        var other = NoiseHandshake(role: .initiator, prologue: [1], staticKey: .generate())
        var peer = NoiseHandshake(role: .responder, prologue: [2], staticKey: .generate())
        _ = try peer.readMessage(try other.writeMessage(payload: []))
        let reply = try peer.writeMessage(payload: [])
        #expect(throws: NoiseError.authenticationFailed) { try other.readMessage(reply) }

        // Transport: a failed decrypt consumes no nonce, so the genuine record still opens.
        var (_, _, send, receive) = try Self.handshake(.generate(), .generate())
        let record = try [UInt8](repeating: 9, count: 100).withUnsafeBytes { try send.initiator.encrypt($0) }
        var forged = record
        forged[0] ^= 0x80
        #expect(throws: NoiseError.authenticationFailed) {
            try forged.withUnsafeBytes { try receive.responder.decrypt($0) }
        }
        #expect(throws: NoiseError.authenticationFailed) {
            try record.withUnsafeBytes { try receive.responder.decrypt($0, associatedData: [0]) }
        }
        #expect(try record.withUnsafeBytes { try receive.responder.decrypt($0) } == [UInt8](repeating: 9, count: 100))
    }

    @Test func messagesOutOfTurnAreRefused() throws {
        var initiator = NoiseHandshake(role: .initiator, prologue: [], staticKey: .generate())
        var responder = NoiseHandshake(role: .responder, prologue: [], staticKey: .generate())
        #expect(throws: NoiseError.outOfOrder) { try responder.writeMessage(payload: []) }
        #expect(throws: NoiseError.outOfOrder) { try initiator.readMessage([UInt8](repeating: 0, count: 32)) }
        let first = try initiator.writeMessage(payload: [])
        #expect(throws: NoiseError.outOfOrder) { try initiator.writeMessage(payload: []) }
        _ = try responder.readMessage(first)
        _ = try initiator.readMessage(try responder.writeMessage(payload: []))
        _ = try responder.readMessage(try initiator.writeMessage(payload: []))
        #expect(initiator.isComplete && responder.isComplete)
        #expect(throws: NoiseError.outOfOrder) { try initiator.writeMessage(payload: []) }
        #expect(throws: NoiseError.outOfOrder) { try responder.readMessage(first) }
        #expect(NoiseError.outOfOrder.description.contains("turn"))
    }

    @Test func messageLengthsAreChecked() throws {
        var initiator = NoiseHandshake(role: .initiator, prologue: [], staticKey: .generate())
        var responder = NoiseHandshake(role: .responder, prologue: [], staticKey: .generate())
        // The first message is e (32 bytes) plus the plaintext payload.
        #expect(throws: NoiseError.messageTooLong(length: 65_536)) {
            try initiator.writeMessage(payload: [UInt8](repeating: 0, count: 65_504))
        }
        #expect(throws: NoiseError.messageTooLong(length: 65_536)) {
            try responder.readMessage([UInt8](repeating: 0, count: 65_536))
        }
        #expect(throws: NoiseError.messageTooShort(length: 31)) {
            try responder.readMessage([UInt8](repeating: 0, count: 31))
        }
        let first = try initiator.writeMessage(payload: [UInt8](repeating: 0, count: 65_503))
        #expect(first.count == 65_535)
        _ = try responder.readMessage(first)
        // The second needs e (32) + encrypted s (48) + a payload tag (16).
        let second = try responder.writeMessage(payload: [])
        #expect(second.count == 96)
        for length in [0, 31, 79, 95] {
            #expect(throws: NoiseError.messageTooShort(length: length)) {
                try initiator.readMessage(Array(second.prefix(length)))
            }
        }
        _ = try initiator.readMessage(second)

        var (_, _, send, receive) = try Self.handshake(.generate(), .generate())
        #expect(throws: NoiseError.messageTooLong(length: 65_536)) {
            try [UInt8](repeating: 0, count: 65_520).withUnsafeBytes { try send.initiator.encrypt($0) }
        }
        #expect(throws: NoiseError.messageTooShort(length: 15)) {
            try [UInt8](repeating: 0, count: 15).withUnsafeBytes { try receive.responder.decrypt($0) }
        }
        #expect(throws: NoiseError.messageTooLong(length: 65_536)) {
            try [UInt8](repeating: 0, count: 65_536).withUnsafeBytes { try receive.responder.decrypt($0) }
        }
    }

    /// 2^64 - 1 is reserved: the last usable nonce is 2^64 - 2.
    @Test func nonceExhaustion() throws {
        var (_, _, send, receive) = try Self.handshake(.generate(), .generate())
        send.initiator.setNonce(.max - 1)
        receive.responder.setNonce(.max - 1)
        let last = try [UInt8]([7]).withUnsafeBytes { try send.initiator.encrypt($0) }
        #expect(try last.withUnsafeBytes { try receive.responder.decrypt($0) } == [7])
        #expect(throws: NoiseError.nonceExhausted) {
            try [UInt8]([7]).withUnsafeBytes { try send.initiator.encrypt($0) }
        }
        #expect(throws: NoiseError.nonceExhausted) { try last.withUnsafeBytes { try receive.responder.decrypt($0) } }
    }

    /// A zero public key is a low-order point: the responder's ee DH must refuse it.
    @Test func lowOrderEphemeralIsRejected() throws {
        var responder = NoiseHandshake(role: .responder, prologue: [], staticKey: .generate())
        _ = try responder.readMessage([UInt8](repeating: 0, count: 32))
        #expect(throws: NoiseError.invalidDHResult) { try responder.writeMessage(payload: []) }
        let zero = try BoxPublicKey(bytes: [UInt8](repeating: 0, count: 32))
        #expect(throws: CryptoError.self) {
            try X25519.sharedSecret(secretKey: BoxKeyPair.generate().secretKey, publicKey: zero)
        }
    }

    /// RFC 7748 section 6.1.
    @Test func x25519RFC7748() throws {
        let alice = try Self.keyPair("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
        let bob = try Self.keyPair("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
        #expect(alice.publicKey.bytes == Self.hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"))
        #expect(bob.publicKey.bytes == Self.hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"))
        let shared = Self.hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
        #expect(try X25519.sharedSecret(secretKey: alice.secretKey, publicKey: bob.publicKey).bytes == shared)
        #expect(try X25519.sharedSecret(secretKey: bob.secretKey, publicKey: alice.publicKey).bytes == shared)
    }

    /// RFC 8439 section 2.8.2.
    @Test func chaChaPolyIETFRFC8439() throws {
        let plaintext = Array(
            "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it."
                .utf8)
        let key = SecureBytes(Self.hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"))
        let nonce = Self.hex("070000004041424344454647")
        let ad = Self.hex("50515253c0c1c2c3c4c5c6c7")
        let expected = Self.hex(
            """
            d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b
            1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc
            3ff4def08e4b7a9de576d26586cec64b6116
            1ae10b594f09e26a7e902ecbd0600691
            """)
        let sealed = plaintext.withUnsafeBytes { p in
            nonce.withUnsafeBytes { n in
                ad.withUnsafeBytes { ChaChaPolyIETF.seal(p, key: key, nonce: n, associatedData: $0) }
            }
        }
        #expect(sealed == expected)
        func open(_ ciphertext: [UInt8]) throws(CryptoError) -> [UInt8] {
            let result = ciphertext.withUnsafeBytes { c in
                nonce.withUnsafeBytes { n in
                    ad.withUnsafeBytes { a in
                        Result { () throws(CryptoError) in
                            try ChaChaPolyIETF.open(c, key: key, nonce: n, associatedData: a)
                        }
                    }
                }
            }
            return try result.get()
        }
        #expect(try open(sealed) == plaintext)
        var forged = sealed
        forged[forged.count - 1] ^= 1
        #expect(throws: CryptoError.authenticationFailed) { try open(forged) }
    }

    /// BLAKE2b-512 of "abc" is RFC 7693 Appendix A. No HMAC-BLAKE2b vectors are published; these come from
    /// CPython (`hmac.new(key, msg, hashlib.blake2b)`, i.e. RFC 2104 over the reference BLAKE2b with its
    /// 128-byte block), covering keys shorter than, equal to and longer than a block. The Noise vectors
    /// above exercise the same HMAC and HKDF through every MixKey and Split.
    @Test func blake2b512HMACAndHKDF() {
        #expect(
            BLAKE2b512.hash(Array("abc".utf8))
                == Self.hex(
                    """
                    ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1
                    7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923
                    """))
        #expect(BLAKE2b512.hash(Array("a".utf8), Array("bc".utf8)) == BLAKE2b512.hash(Array("abc".utf8)))

        let cases: [(key: [UInt8], message: String, mac: String)] = [
            (
                Array("Jefe".utf8), "what do ya want for nothing?",
                "6ff884f8ddc2a6586b3c98a4cd6ebdf14ec10204b6710073eb5865ade37a2643b8807c1335d107ecdb9ffeaeb6828c4625ba172c66379efcd222c2de11727ab4"
            ),
            (
                [UInt8](repeating: 0x0b, count: 128), "Hi There",
                "72de85b5dfc13a4a2e72ad43b491621cf6f5c43b532c49e140b2e9640d271e9fd199c7aed0f8e81341f12e870d0fe247de7ee1d21f12406098b2fe4ad4b8cdb9"
            ),
            (
                [UInt8](repeating: 0xaa, count: 131), "Test Using Larger Than Block-Size Key - Hash Key First",
                "a54b2943b2a20227d41ca46c0945af09bc1faefb2f49894c23aebc557fb79c4889dca74408dc865086667aedee4a3185c53a49c80b814c4c5813ea0c8b38a8f8"
            ),
        ]
        for c in cases {
            #expect(BLAKE2b512.hmac(key: SecureBytes(c.key), message: Array(c.message.utf8)).bytes == Self.hex(c.mac))
        }

        // HKDF(ck = 00..3f, ikm = 00..1f, 3) per the Noise spec, computed the same way with CPython.
        let outputs = [UInt8](0..<32).withUnsafeBytes {
            BLAKE2b512.hkdf(chainingKey: SecureBytes([UInt8](0..<64)), inputKeyMaterial: $0, outputCount: 3)
        }
        #expect(outputs.map(\.count) == [64, 64, 64])
        #expect(
            outputs.map(\.bytes)
                == [
                    "b257cf2863e7aa7f84d41d31e58df6dfb1e0a6cf3172192cc35eba2625a21975db4475b2ef89316383acac6b2ac7cf03f7583e0ff20a64fb208fa5b1199f835f",
                    "4f4d712feaff914e80db4d0d400a46056854134b5001018c4f1fe19bb477053c5a9b92f8c937b1328c0ae7e51895b8d68068bc84d59436cc3b75de5a2d6d0630",
                    "c3e03a921f0f492329fe003e995b982fdd8c0596cc3575e01c2f24234e05e4778d233726d60ffe48a7d9ef235a6ff5fac555bafcfdd1272c4763ded2e01c0c3f",
                ].map(Self.hex))
        let two = BLAKE2b512.hkdf(
            chainingKey: SecureBytes([UInt8](0..<64)), inputKeyMaterial: SecureBytes([UInt8](0..<32)), outputCount: 2)
        #expect(two.map(\.bytes) == outputs.prefix(2).map(\.bytes))
    }

    // MARK: - Helpers

    /// Runs a complete XX handshake with empty payloads and splits both sides.
    static func handshake(_ initiatorKey: BoxKeyPair, _ responderKey: BoxKeyPair) throws -> (
        initiator: NoiseHandshake, responder: NoiseHandshake,
        send: (initiator: NoiseCipherState, responder: NoiseCipherState),
        receive: (initiator: NoiseCipherState, responder: NoiseCipherState)
    ) {
        var initiator = NoiseHandshake(role: .initiator, prologue: Array("hypernet".utf8), staticKey: initiatorKey)
        var responder = NoiseHandshake(role: .responder, prologue: Array("hypernet".utf8), staticKey: responderKey)
        #expect(try responder.readMessage(try initiator.writeMessage(payload: [1])) == [1])
        #expect(try initiator.readMessage(try responder.writeMessage(payload: [2])) == [2])
        #expect(try responder.readMessage(try initiator.writeMessage(payload: [3])) == [3])
        let i = initiator.split()
        let r = responder.split()
        return (initiator, responder, (i.send, r.send), (i.receive, r.receive))
    }

    struct Vector: Decodable {
        struct Message: Decodable {
            let payload: String
            let ciphertext: String
        }
        let source: String
        let protocolName: String
        let initPrologue, initStatic, initEphemeral: String
        let respPrologue, respStatic, respEphemeral: String
        let handshakeHash: String?
        let messages: [Message]
    }

    /// Read next to this file, so the test runs the same in any package layout without declared resources.
    static func loadVectors() throws -> [Vector] {
        struct File: Decodable { let vectors: [Vector] }
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/noise-xx-25519-chachapoly-blake2b.json")
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(File.self, from: Data(contentsOf: url)).vectors
    }

    static func keyPair(_ secretKey: String) throws -> BoxKeyPair {
        try BoxKeyPair(secretKey: SecureBytes(hex(secretKey)))
    }

    /// Hex literal for test vectors; traps on a typo in the vector itself.
    static func hex(_ text: String) -> [UInt8] {
        guard let bytes = Hex.decode(text.filter { !$0.isWhitespace }) else { fatalError("bad hex in test vector") }
        return bytes
    }
}
