/// Timing of the membership protocol. Two profiles: ``lan`` for peers within one region (the ≤ 2 s detection
/// goal) and ``wan`` for peers in different regions. Every field is a `membership.*` key in the config.
public struct SWIMSettings: Sendable, Hashable {
    /// How often this member starts a probe of the next member in its (shuffled, round-robin) list.
    public var probeInterval: Duration
    /// How long to wait for an ack before sending the ping again and asking ``indirectProbes`` others to
    /// probe too (and again after each such interval until ``probeTimeout``): messages are datagrams.
    public var directTimeout: Duration
    /// How long (from the probe's start) to wait for any ack before suspecting the member.
    public var probeTimeout: Duration
    /// How many other members are asked to probe indirectly (capped at the members there are).
    public var indirectProbes: Int
    /// A suspicion lasts `suspicionMax` when only one member suspects, down to `suspicionMin` once
    /// `min(indirectProbes, members − 2)` others confirm it independently (Lifeguard).
    public var suspicionMin: Duration
    public var suspicionMax: Duration
    /// When the transport reports a member's connection closed or refused, it is probed at once, directly and
    /// through others; if that fails within this time it is suspected with the short ``refusedSuspicion``. A
    /// process that is gone closes its sockets, lost packets never do: this is what makes a killed `peerd` or
    /// a stopped machine with a live kernel leave in about a second without shortening the suspicion that
    /// slow or lossy links get.
    public var refusedProbeTimeout: Duration
    public var refusedSuspicion: Duration
    /// For this long after start, a member this node has not heard from yet is not suspected by it.
    public var startupGrace: Duration = .seconds(5)
    /// Each update is piggybacked `retransmitMultiplier × ⌈log2(members + 1)⌉` times.
    public var retransmitMultiplier: Int
    /// At most this many updates per message (besides the sender's own state).
    public var maxGossip: Int
    /// Every this many probes, the ping carries the whole view (anti-entropy after partitions).
    public var fullSyncEvery: Int

    public init(
        probeInterval: Duration, directTimeout: Duration, probeTimeout: Duration, indirectProbes: Int,
        suspicionMin: Duration, suspicionMax: Duration, refusedProbeTimeout: Duration, refusedSuspicion: Duration,
        retransmitMultiplier: Int = 3, maxGossip: Int = 8, fullSyncEvery: Int = 10
    ) {
        self.refusedProbeTimeout = refusedProbeTimeout
        self.refusedSuspicion = refusedSuspicion
        self.probeInterval = probeInterval
        self.directTimeout = directTimeout
        self.probeTimeout = probeTimeout
        self.indirectProbes = indirectProbes
        self.suspicionMin = suspicionMin
        self.suspicionMax = suspicionMax
        self.retransmitMultiplier = retransmitMultiplier
        self.maxGossip = maxGossip
        self.fullSyncEvery = fullSyncEvery
    }

    /// Peers in one region (RTT ≲ 20 ms).
    public static let lan = SWIMSettings(
        probeInterval: .milliseconds(200), directTimeout: .milliseconds(150), probeTimeout: .milliseconds(1000),
        indirectProbes: 3, suspicionMin: .seconds(2), suspicionMax: .seconds(5),
        refusedProbeTimeout: .milliseconds(400), refusedSuspicion: .milliseconds(700))

    /// Peers in different regions (RTT up to ~300 ms).
    public static let wan = SWIMSettings(
        probeInterval: .seconds(1), directTimeout: .milliseconds(700), probeTimeout: .milliseconds(2000),
        indirectProbes: 3, suspicionMin: .seconds(6), suspicionMax: .seconds(15),
        refusedProbeTimeout: .milliseconds(1500), refusedSuspicion: .seconds(2))

    /// Problems with these settings, each naming the key; empty when they are usable.
    public var problems: [String] {
        var out: [String] = []
        if probeInterval <= .zero { out.append("probe_interval must be positive") }
        if directTimeout <= .zero { out.append("direct_timeout must be positive") }
        if probeTimeout <= directTimeout { out.append("probe_timeout must be longer than direct_timeout") }
        if indirectProbes < 0 { out.append("indirect_probes must be 0 or more") }
        if suspicionMin <= .zero { out.append("suspicion_min must be positive") }
        if suspicionMax < suspicionMin { out.append("suspicion_max must be at least suspicion_min") }
        if refusedProbeTimeout <= .zero { out.append("refused_probe_timeout must be positive") }
        if refusedSuspicion <= .zero { out.append("refused_suspicion must be positive") }
        return out
    }
}
