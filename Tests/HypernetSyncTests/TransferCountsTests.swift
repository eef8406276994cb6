import HypernetCrypto
import Testing

@testable import HypernetSync

@Suite struct TransferCountsTests {
    @Test func countsPerNodeAndForgetsSomeoneOnlyPastTheLimit() {
        let counts = TransferCounts()
        let (a, b) = (SigningKeyPair.generate().publicKey, SigningKeyPair.generate().publicKey)
        counts.received(100, from: a)
        counts.received(50, from: a)
        counts.served(0, to: b)
        counts.served(7, to: a)
        #expect(counts.snapshot()[Hex.encode(a.bytes)].map { [$0.served, $0.received] } == [7, 150])
        #expect(counts.snapshot()[Hex.encode(b.bytes)] == nil, "nothing served: not counted")
        for _ in 0..<TransferCounts.limit { counts.received(1, from: SigningKeyPair.generate().publicKey) }
        #expect(counts.snapshot().count == TransferCounts.limit)
        for _ in 0..<3 { counts.served(2, to: SigningKeyPair.generate().publicKey) }
        #expect(counts.served == 13, "the total keeps what forgotten keys were served")
    }
}
