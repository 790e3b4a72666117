import Membership
import PeerCore
import SimulationKit

/// N membership instances over the simulated network (`SimulationKit`), in simulated time, all randomness from one
/// seed.
///
/// The network models the real transport: membership messages are datagrams (each lost on its own, delayed
/// 0.1–2 ms, possibly reordered), and each pair also holds a TCP connection whose only role here is to close: a
/// process that is killed closes its sockets, so its peers see the connection close and a redial refused at
/// once ("loud" crash); a machine that loses power or network does not ("silent" crash). A cut link drops
/// everything.
struct SimulatedCluster {
    /// A datagram, or nil: the transport's "connection lost" notice for the receiver about the sender.
    typealias Message = SWIM.Envelope?

    struct Change {
        var at: Instant
        var observer: MemberID
        var state: MemberState
        var previous: MemberState
    }

    let ids: [MemberID]
    let settings: SWIMSettings
    let tick: Duration
    private(set) var now = Instant.zero
    private(set) var nodes: [MemberID: SWIM] = [:]
    /// Crashed processes whose machine still answers: a dial is refused at once.
    private var refusing: Set<MemberID> = []
    private var rng: SplitMix64
    private var network = SimulatedNetwork<Message>()
    /// Share of datagrams lost on every link.
    var loss: Double {
        get { network.loss }
        set { network.loss = newValue }
    }
    var cut: Set<SimulatedNetwork<Message>.Link> {
        get { network.cut }
        set { network.cut = newValue }
    }
    private(set) var changes: [Change] = []
    private(set) var messagesSent = 0
    /// Called after every event, for invariants.
    var violations: [String] = []

    init(size: Int, settings: SWIMSettings, seed: UInt64, tick: Duration = .milliseconds(20)) {
        ids = (1...size).map { MemberID("n\($0)") }
        self.settings = settings
        self.tick = tick
        rng = SplitMix64(seed: seed)
        for id in ids { start(id) }
    }

    var running: [MemberID] { ids.filter { nodes[$0] != nil } }

    func address(_ id: MemberID) -> String { "\(id.name):7946" }

    mutating func start(_ id: MemberID) {
        network.newEpoch(id)
        refusing.remove(id)
        nodes[id] = SWIM(
            me: id, address: address(id), app: AppStatus(healthy: true, image: "app:1"),
            seeds: ids.map { ($0, address($0)) }, settings: settings, seed: rng.next(), now: now)
    }

    /// kill -9 (`loud`: the peers' connections close) or power loss (`loud == false`).
    mutating func crash(_ id: MemberID, loud: Bool) {
        nodes[id] = nil
        network.newEpoch(id)
        guard loud else { return }
        refusing.insert(id)
        for other in running { network.notify(nil, from: id, to: other, at: now + .milliseconds(1)) }
    }

    mutating func partition(_ a: Set<MemberID>, _ b: Set<MemberID>) { network.partition(a, b) }

    mutating func heal() { network.heal() }

    mutating func setApp(_ id: MemberID, _ app: AppStatus) {
        guard var node = nodes[id] else { return }
        let directives = node.setApp(app, now: now)
        nodes[id] = node
        handle(directives, from: id)
    }

    mutating func run(for duration: Duration) {
        let end = now + duration
        var nextTick = Instant(nanoseconds: (now.nanoseconds / tick.nanoseconds + 1) * tick.nanoseconds)
        while now < end {
            if let delivery = network.next(until: min(nextTick, end)) {
                now = max(now, delivery.at)
                deliver(delivery)
            } else if nextTick <= end {
                now = nextTick
                for id in running {
                    var node = nodes[id]!
                    // peerd sleeps until the instance's next deadline: before it, a tick must change nothing.
                    // Checked on a copy; the node itself is ticked only at its deadlines, as in peerd.
                    let deadline = node.nextDeadline
                    if now < deadline {
                        var copy = node
                        let early = copy.tick(now: now)
                        if !early.isEmpty || copy.nextDeadline != deadline {
                            violations.append("\(id): a tick before its deadline (\(deadline)) at \(now) did something: \(early)")
                        }
                        continue
                    }
                    let directives = node.tick(now: now)
                    if node.nextDeadline <= now { violations.append("\(id): next deadline \(node.nextDeadline) not after its tick at \(now)") }
                    nodes[id] = node
                    handle(directives, from: id)
                }
                nextTick = nextTick + tick
            } else {
                now = end
            }
        }
    }

    private mutating func deliver(_ delivery: SimulatedNetwork<Message>.Delivery) {
        guard var node = nodes[delivery.to] else { return }
        let directives: [SWIM.Directive]
        if let envelope = delivery.message {
            directives = node.receive(envelope, from: delivery.from, now: now)
        } else {
            directives = node.connectionLost(to: delivery.from, now: now)
        }
        nodes[delivery.to] = node
        handle(directives, from: delivery.to)
    }

    private mutating func handle(_ directives: [SWIM.Directive], from sender: MemberID) {
        for directive in directives {
            switch directive {
            case .send(let to, let address, let envelope):
                if address != self.address(to) { violations.append("\(sender) sent to \(to) at \(address)") }
                messagesSent += 1
                send(envelope, from: sender, to: to)
            case .changed(let state, let previous):
                check(state, previous: previous, observer: sender)
                changes.append(Change(at: now, observer: sender, state: state, previous: previous))
            }
        }
    }

    private mutating func send(_ envelope: SWIM.Envelope, from: MemberID, to: MemberID) {
        guard !network.cut.contains(.init(from: from, to: to)) else { return }
        guard nodes[to] != nil else {
            // Nobody listens: a killed process's port refuses the dial at once; a dead machine is silent.
            if refusing.contains(to) { network.notify(nil, from: to, to: from, at: now + .milliseconds(1)) }
            return
        }
        network.send(envelope, from: from, to: to, now: now, rng: &rng)
    }

    /// Invariants of every change: views only move forward, and a node never sees itself as anything but alive.
    private mutating func check(_ state: MemberState, previous: MemberState, observer: MemberID) {
        if state.id != previous.id { violations.append("\(observer): change of \(previous.id) reported as \(state.id)") }
        if previous.supersedes(state) {
            violations.append(
                "\(observer): view of \(state.id) went back from \(previous.status)#\(previous.incarnation) to \(state.status)#\(state.incarnation)")
        }
        if state.id == observer, state.status != .alive { violations.append("\(observer) sees itself \(state.status)") }
    }

    /// What `observer` believes about `member` now.
    func view(of member: MemberID, by observer: MemberID) -> MemberStatus? {
        nodes[observer]?.state(of: member)?.status
    }

    /// Times at which `observer` declared `member` dead.
    func deaths(of member: MemberID, by observer: MemberID? = nil, after: Instant = .zero) -> [Change] {
        changes.filter {
            $0.state.id == member && $0.state.status == .dead && $0.previous.status != .dead && $0.at >= after
                && (observer == nil || $0.observer == observer)
        }
    }
}
