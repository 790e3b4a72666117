import PeerCore

/// The network every protocol simulation runs on: datagrams between named nodes in simulated real time, each one
/// lost on its own (``loss``), delayed (``delay``), possibly delivered twice (``duplication``) and so reordered;
/// links can be cut one way or both. A node that crashes or restarts starts a new epoch: what was in flight to
/// its earlier run is never delivered to the new one.
public struct SimulatedNetwork<Message: Sendable>: Sendable {
    public struct Link: Hashable, Sendable {
        public var from: MemberID
        public var to: MemberID
        public init(from: MemberID, to: MemberID) {
            self.from = from
            self.to = to
        }
    }

    public struct Delivery: Sendable {
        public var at: Instant
        public var from: MemberID
        public var to: MemberID
        public var message: Message
        fileprivate var order: Int
        fileprivate var epoch: Int
    }

    /// Share of messages lost on every link.
    public var loss: Double = 0
    /// Share of messages delivered a second time, later.
    public var duplication: Double = 0
    public var delay: ClosedRange<Duration> = .microseconds(100) ... .milliseconds(2)
    public var cut: Set<Link> = []
    public private(set) var sent = 0
    private var inFlight: [Delivery] = []
    private var order = 0
    private var epochs: [MemberID: Int] = [:]

    public init() {}

    /// `to` crashed or restarted: what is in flight to it is lost.
    public mutating func newEpoch(_ id: MemberID) { epochs[id, default: 0] += 1 }

    public mutating func send(_ message: Message, from: MemberID, to: MemberID, now: Instant, rng: inout SplitMix64) {
        sent += 1
        guard !cut.contains(Link(from: from, to: to)), Double.random(in: 0..<1, using: &rng) >= loss else { return }
        let copies = Double.random(in: 0..<1, using: &rng) < duplication ? 2 : 1
        for _ in 0..<copies {
            let lag = Duration.nanoseconds(Int64.random(in: delay.lowerBound.nanoseconds...delay.upperBound.nanoseconds, using: &rng))
            enqueue(Delivery(at: now + lag, from: from, to: to, message: message, order: 0, epoch: epochs[to, default: 0]))
        }
    }

    /// Delivers `message` at `at` whatever the links (a transport event: a connection closing, a refusal).
    public mutating func notify(_ message: Message, from: MemberID, to: MemberID, at: Instant) {
        enqueue(Delivery(at: at, from: from, to: to, message: message, order: 0, epoch: epochs[to, default: 0]))
    }

    /// The next delivery due at or before `until`, removed from the network; deliveries to an earlier epoch of
    /// their receiver are dropped on the way.
    public mutating func next(until: Instant) -> Delivery? {
        while let first = inFlight.first, first.at <= until {
            inFlight.removeFirst()
            if first.epoch == epochs[first.to, default: 0] { return first }
        }
        return nil
    }

    public mutating func partition(_ a: Set<MemberID>, _ b: Set<MemberID>) {
        for x in a { for y in b { cut.insert(Link(from: x, to: y)); cut.insert(Link(from: y, to: x)) } }
    }

    public mutating func isolate(_ id: MemberID, from others: [MemberID]) { partition([id], Set(others).subtracting([id])) }

    public mutating func heal() {
        cut = []
        loss = 0
        duplication = 0
    }

    private mutating func enqueue(_ delivery: Delivery) {
        var delivery = delivery
        order += 1
        delivery.order = order
        let index = inFlight.firstIndex { ($0.at, $0.order) > (delivery.at, delivery.order) } ?? inFlight.endIndex
        inFlight.insert(delivery, at: index)
    }
}

/// A node's own clock against real (simulated) time: it runs at `rate` from a random origin; the rate can change
/// (NTP slewing a clock by up to 8 %), and the clock can stop and go on from where it stopped (a VM paused and
/// resumed, whose guest clocks do not count the pause). A process paused with SIGSTOP keeps its clock running:
/// it is the node's events that stop, not this.
public struct SimulatedClock: Sendable, Hashable {
    public private(set) var rate: Double
    private var anchorReal: Instant
    private var anchorLocal: Int64
    private var frozenAt: Instant?

    public init(rate: Double, offset: Int64) {
        self.rate = rate
        anchorReal = .zero
        anchorLocal = offset
    }

    public func local(_ real: Instant) -> Instant {
        let at = frozenAt.map { min($0, real) } ?? real
        return Instant(nanoseconds: anchorLocal + Int64(Double((at - anchorReal).nanoseconds) * rate))
    }

    /// From `real` on, the clock runs at `rate`.
    public mutating func setRate(_ rate: Double, at real: Instant) {
        anchorLocal = local(real).nanoseconds
        anchorReal = frozenAt ?? real
        self.rate = rate
    }

    public var isFrozen: Bool { frozenAt != nil }

    /// Stops at `real` (what it reads then, it reads until ``thaw(at:)``).
    public mutating func freeze(at real: Instant) {
        guard frozenAt == nil else { return }
        anchorLocal = local(real).nanoseconds
        anchorReal = real
        frozenAt = real
    }

    /// Goes on from the value it stopped at.
    public mutating func thaw(at real: Instant) {
        guard frozenAt != nil else { return }
        frozenAt = nil
        anchorReal = real
    }
}
