import Membership
import PeerCore

/// N membership instances over a simulated mesh, in simulated time, all randomness from one seed.
///
/// The network models the real transport: membership messages are datagrams (each lost on its own, delayed
/// 0.1–2 ms, possibly reordered), and each pair also holds a TCP connection whose only role here is to close: a
/// process that is killed closes its sockets, so its peers see the connection close and a redial refused at
/// once ("loud" crash); a machine that loses power or network does not ("silent" crash). A cut link drops
/// everything.
struct SimulatedCluster {
    struct Link: Hashable {
        var from: MemberID
        var to: MemberID
    }

    struct Delivery {
        var at: Instant
        var order: Int
        var from: MemberID
        var to: MemberID
        var epoch: Int
        var envelope: SWIM.Envelope?  // nil: "connection lost" notice for `to` about `from`
    }

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
    private var epochs: [MemberID: Int] = [:]
    /// Crashed processes whose machine still answers: a dial is refused at once.
    private var refusing: Set<MemberID> = []
    private var rng: SplitMix64
    /// Share of datagrams lost on every link.
    var loss: Double = 0
    var cut: Set<Link> = []
    private var inFlight: [Delivery] = []
    private var order = 0
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
        epochs[id, default: 0] += 1
        refusing.remove(id)
        nodes[id] = SWIM(
            me: id, address: address(id), app: AppStatus(healthy: true, image: "app:1"),
            seeds: ids.map { ($0, address($0)) }, settings: settings, seed: rng.next(), now: now)
    }

    /// kill -9 (`loud`: the peers' connections close) or power loss (`loud == false`).
    mutating func crash(_ id: MemberID, loud: Bool) {
        nodes[id] = nil
        epochs[id, default: 0] += 1
        guard loud else { return }
        refusing.insert(id)
        for other in running {
            enqueue(Delivery(at: now + .milliseconds(1), order: 0, from: id, to: other, epoch: epochs[other]!, envelope: nil))
        }
    }

    mutating func partition(_ a: Set<MemberID>, _ b: Set<MemberID>) {
        for x in a { for y in b { cut.insert(Link(from: x, to: y)); cut.insert(Link(from: y, to: x)) } }
    }

    mutating func heal() {
        cut = []
        loss = 0
    }

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
            let deliveryAt = inFlight.first?.at
            if let at = deliveryAt, at <= nextTick, at <= end {
                let delivery = inFlight.removeFirst()
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

    private mutating func deliver(_ delivery: Delivery) {
        guard var node = nodes[delivery.to], epochs[delivery.to] == delivery.epoch else { return }
        let directives: [SWIM.Directive]
        if let envelope = delivery.envelope {
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
        let link = Link(from: from, to: to)
        guard !cut.contains(link) else { return }
        guard nodes[to] != nil else {
            // Nobody listens: a killed process's port refuses the dial at once; a dead machine is silent.
            if refusing.contains(to) {
                enqueue(Delivery(at: now + .milliseconds(1), order: 0, from: to, to: from, epoch: epochs[from]!, envelope: nil))
            }
            return
        }
        guard Double.random(in: 0..<1, using: &rng) >= loss else { return }
        let delay = Duration.microseconds(Int64.random(in: 100...2_000, using: &rng))
        enqueue(Delivery(at: now + delay, order: 0, from: from, to: to, epoch: epochs[to]!, envelope: envelope))
    }

    private mutating func enqueue(_ delivery: Delivery) {
        var delivery = delivery
        order += 1
        delivery.order = order
        let index = inFlight.firstIndex { ($0.at, $0.order) > (delivery.at, delivery.order) } ?? inFlight.endIndex
        inFlight.insert(delivery, at: index)
    }

    /// Invariants of every change: views only move forward, and a node never sees itself as anything but alive.
    private mutating func check(_ state: MemberState, previous: MemberState, observer: MemberID) {
        if state.id != previous.id { violations.append("\(observer): change of \(previous.id) reported as \(state.id)") }
        if previous.supersedes(state) {
            violations.append("\(observer): view of \(state.id) went back from \(previous.status)#\(previous.incarnation) to \(state.status)#\(state.incarnation)")
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
