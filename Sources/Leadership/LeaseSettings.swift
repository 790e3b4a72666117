import PeerCore

public struct LeaseSettings: Sendable, Hashable {
    /// How long a grant lasts on the voter's clock.
    public var duration: Duration
    public var renewInterval: Duration
    /// A campaign without a majority by then is abandoned (and retried after a random back-off).
    public var requestTimeout: Duration
    /// The largest clock rate difference assumed between two nodes (0.01 = 1 %).
    public var maxDrift: Double
    /// Taken off the leader's lease on top of the drift allowance.
    public var margin: Duration
    /// Candidates campaign one stagger apart, in name order.
    public var stagger: Duration

    public init(duration: Duration, renewInterval: Duration, requestTimeout: Duration, maxDrift: Double, margin: Duration, stagger: Duration) {
        self.duration = duration
        self.renewInterval = renewInterval
        self.requestTimeout = requestTimeout
        self.maxDrift = maxDrift
        self.margin = margin
        self.stagger = stagger
    }

    /// For peers in one region (round trips well under 100 ms): leader failover in about 2.5–3 s; a leader's
    /// lease has ≥ 1.8 s left after each renewal.
    public static let standard = LeaseSettings(
        duration: .milliseconds(2500), renewInterval: .milliseconds(400), requestTimeout: .seconds(1), maxDrift: 0.01,
        margin: .milliseconds(100), stagger: .milliseconds(150))

    /// For peers in different regions (round trips up to about a second): renewals that take 400 ms on the LAN
    /// timings fail for good above ~400 ms round trip; these leave room for 1.5 s. Failover in about 10–12 s.
    public static let wan = LeaseSettings(
        duration: .seconds(10), renewInterval: .seconds(2), requestTimeout: .seconds(3), maxDrift: 0.01, margin: .milliseconds(300),
        stagger: .milliseconds(600))

    /// The timings of a mesh profile (`mesh.profile`: lan or wan).
    public static func profile(_ name: String) -> LeaseSettings { name == "wan" ? .wan : .standard }
}
