/// A peer's measured service, from which its window of requests in flight (docs/protocol.md, "Multi-source fetch"):
/// about twice its throughput × its round trip (the shortest time one of its answers took), so that its link stays
/// busy while a slow peer holds few requests that a fast one would answer sooner. Pure: time passed in.
struct PeerMeter: Sendable {
    /// Chunks per second it answered while it had requests in flight (a moving average); nil before a sample.
    private(set) var rate: Double?
    /// The shortest time from a request to its answer.
    private(set) var roundTrip: Double?
    private var sampleStart: Double?
    private var sampleCount = 0
    static let windows = 2...64
    /// A sample of the rate covers at least this long: answers come in bursts (one wake-up reads several).
    static let sampleSpan = 0.05

    /// The window before anything was measured, then from the measures.
    func window(initial: Int) -> Int {
        guard let rate, let roundTrip else { return initial }
        let w = (2 * rate * roundTrip).rounded(.up)
        return w.isFinite ? min(max(Int(min(w, 1e6)), Self.windows.lowerBound), Self.windows.upperBound) : initial
    }

    /// A request sent at `sentAt` was answered with its chunk at `now`.
    mutating func answered(sentAt: Double, now: Double) {
        roundTrip = min(roundTrip ?? .infinity, max(now - sentAt, 0))
        let start = sampleStart ?? sentAt
        sampleStart = start
        sampleCount += 1
        guard now - start >= Self.sampleSpan else { return }
        let sample = Double(sampleCount) / (now - start)
        rate = rate.map { 0.7 * $0 + 0.3 * sample } ?? sample
        sampleStart = now
        sampleCount = 0
    }

    /// Nothing is in flight at the peer: time until its next request is not its service time.
    mutating func idle() {
        sampleStart = nil
        sampleCount = 0
    }
}
