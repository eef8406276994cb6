import HypernetSync
import Testing

/// The budget all connections share for unfinished frames (docs/protocol.md, "Limits").
@Suite struct FrameBudgetTests {
    @Test func aChargeThatWouldPassTheLimitIsRefusedAndChangesNothing() {
        let budget = FrameBudget(limit: 100)
        #expect(budget.recharge(from: 0, to: 60))
        #expect(!budget.recharge(from: 0, to: 41), "60 + 41 > 100")
        #expect(budget.recharge(from: 0, to: 40), "the refused charge took nothing")
        #expect(!budget.recharge(from: 40, to: 41))
        #expect(budget.recharge(from: 60, to: 10), "a smaller charge always fits")
        #expect(budget.recharge(from: 40, to: 90))
    }

    @Test func releasedChargesAreAvailableAgain() {
        let budget = FrameBudget(limit: 100)
        #expect(budget.recharge(from: 0, to: 70))
        #expect(budget.recharge(from: 0, to: 30))
        budget.release(70)
        budget.release(30)
        #expect(budget.recharge(from: 0, to: 100))
    }
}
