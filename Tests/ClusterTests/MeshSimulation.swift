import Cluster
import Leadership
import Membership
import PeerCore
import SimulationKit

/// Whole nodes of the mesh — membership and lease together, as in peerd — over the simulated network, in
/// simulated real time, all randomness from one seed. Each node has its own clock (rates within the lease's
/// drift bound), persists its promised term as its shell does, and publishes its ``ClusterState``; the
/// simulation keeps what each node published, as the services of that node see it.
///
/// Faults: kill -9 (peers see the connection close), power loss (they see nothing), process pauses (SIGSTOP:
/// the node's events stop while its monotonic clock runs on, and what piled up arrives at once on resume), loss,
/// duplication, delay, partitions.
struct MeshSimulation {
    enum Message: Sendable {
        case datagram(MeshNode.Datagram)
        case connectionLost
    }

    struct Node {
        var mesh: MeshNode
        var clock: SimulatedClock
        /// What this node's services see: the last state it published.
        var published: ClusterState
        var pausedUntil: Instant?
    }

    let ids: [MemberID]
    let witness: MemberID?
    let swim: SWIMSettings
    let lease: LeaseSettings
    private(set) var now = Instant.zero
    private(set) var nodes: [MemberID: Node] = [:]
    private var clocks: [MemberID: SimulatedClock] = [:]
    /// The promised term each node persisted: what a restart starts from.
    private var persisted: [MemberID: UInt64] = [:]
    /// Crashed processes whose machine still answers: a dial is refused at once.
    private var refusing: Set<MemberID> = []
    var network = SimulatedNetwork<Message>()
    private var rng: SplitMix64
    private(set) var violations: [String] = [] {
        didSet { if violations.count > 20 { violations.removeLast() } }
    }
    /// Every this many ticks, also compare each node's published members with its view, and check that a tick
    /// before a node's deadline does nothing (both cost more than the rest of the run).
    var deepCheckEvery = 10
    private var ticks = 0
    private var leadersByTerm: [UInt64: MemberID] = [:]

    init(size: Int, witness: Bool, seed: UInt64, swim: SWIMSettings = .lan, lease: LeaseSettings = .standard) {
        ids = (1...size).map { MemberID("n\($0)") }
        self.witness = witness ? ids.last : nil
        self.swim = swim
        self.lease = lease
        rng = SplitMix64(seed: seed)
        for id in ids {
            // Rates within ±maxDrift/2 of real time: any two differ by at most maxDrift.
            let rate = 1 + Double.random(in: -lease.maxDrift / 2...lease.maxDrift / 2, using: &rng)
            clocks[id] = SimulatedClock(rate: rate, offset: Int64.random(in: 0...1_000_000_000_000, using: &rng))
            start(id)
        }
    }

    var running: [MemberID] { ids.filter { nodes[$0] != nil } }

    func local(_ id: MemberID) -> Instant { clocks[id]!.local(now) }

    // MARK: - Faults

    mutating func start(_ id: MemberID) {
        network.newEpoch(id)
        refusing.remove(id)
        let members = ids.map { MeshNode.Member(id: $0, address: "\($0.name):7946", appNode: $0 != witness) }
        var mesh = MeshNode(
            me: id, members: members, swim: swim, lease: lease, promised: persisted[id] ?? 0, seed: rng.next(), now: local(id))
        let app = AppStatus(
            healthy: id == witness ? nil : true, image: id == witness ? nil : "app:1", address: id == witness ? nil : "192.0.2.\(id.name.dropFirst())"
        )
        let directives = mesh.announce(app, now: local(id))
        nodes[id] = Node(mesh: mesh, clock: clocks[id]!, published: ClusterState.unstarted(me: id))
        carryOut(directives, from: id)
    }

    /// kill -9 (`loud`: the peers' connections close) or power loss (`loud == false`).
    mutating func crash(_ id: MemberID, loud: Bool) {
        nodes[id] = nil
        network.newEpoch(id)
        guard loud else { return }
        refusing.insert(id)
        for other in running { network.notify(.connectionLost, from: id, to: other, at: now + .milliseconds(1)) }
    }

    /// SIGSTOP for `duration`: the node neither ticks nor reads; its clock runs on.
    mutating func pause(_ id: MemberID, for duration: Duration) {
        nodes[id]?.pausedUntil = now + duration
    }

    mutating func announce(_ id: MemberID, healthy: Bool) {
        guard var node = nodes[id], id != witness else { return }
        var app = node.mesh.swim.me.app
        app.healthy = healthy
        let directives = node.mesh.announce(app, now: local(id))
        nodes[id] = node
        carryOut(directives, from: id)
    }

    // MARK: - Running

    mutating func run(for duration: Duration, tick: Duration = .milliseconds(10)) {
        let end = now + duration
        var nextTick = Instant(nanoseconds: (now.nanoseconds / tick.nanoseconds + 1) * tick.nanoseconds)
        while now < end {
            if let delivery = network.next(until: min(nextTick, end)) {
                now = max(now, delivery.at)
                deliver(delivery)
            } else if nextTick <= end {
                now = nextTick
                nextTick = nextTick + tick
                ticks += 1
                for id in running { tickIfDue(id) }
            } else {
                now = end
            }
            check(deep: ticks % deepCheckEvery == 0)
        }
    }

    private mutating func tickIfDue(_ id: MemberID) {
        guard var node = nodes[id] else { return }
        if let until = node.pausedUntil {
            guard now >= until else { return }
            nodes[id]!.pausedUntil = nil
            node.pausedUntil = nil
        }
        let local = local(id)
        // The shell sleeps until the node's next deadline: before it, a tick must change nothing.
        let deadline = node.mesh.nextDeadline(now: local)
        if local < deadline {
            guard ticks % deepCheckEvery == 0 else { return }
            var copy = node.mesh
            let early = copy.tick(now: local)
            if !early.isEmpty { violations.append("\(id): a tick before its deadline did something: \(early.prefix(2))") }
            return
        }
        let directives = node.mesh.tick(now: local)
        nodes[id] = node
        carryOut(directives, from: id)
    }

    private mutating func deliver(_ delivery: SimulatedNetwork<Message>.Delivery) {
        guard var node = nodes[delivery.to] else { return }
        if let until = node.pausedUntil, now < until {
            // Read when the process runs again: put back for then.
            network.notify(delivery.message, from: delivery.from, to: delivery.to, at: until)
            return
        }
        let directives: [MeshNode.Directive]
        switch delivery.message {
        case .datagram(let datagram): directives = node.mesh.receive(datagram, from: delivery.from, now: local(delivery.to))
        case .connectionLost: directives = node.mesh.connectionLost(to: delivery.from, now: local(delivery.to))
        }
        nodes[delivery.to] = node
        carryOut(directives, from: delivery.to)
    }

    /// What the shell does with the directives, in order.
    private mutating func carryOut(_ directives: [MeshNode.Directive], from id: MemberID) {
        for directive in directives {
            switch directive {
            case .persistTerm(let term):
                if term < (persisted[id] ?? 0) { violations.append("\(id) persisted a lower term \(term)") }
                persisted[id] = term
            case .send(let datagram, let to):
                if refusing.contains(to) {
                    // A dial to a killed process is refused: the sender's transport reports it.
                    network.notify(.connectionLost, from: to, to: id, at: now + .milliseconds(1))
                    continue
                }
                network.send(.datagram(datagram), from: id, to: to, now: now, rng: &rng)
            case .memberChanged:
                break
            case .leadership(let term):
                guard let term else { continue }
                if let other = leadersByTerm[term], other != id { violations.append("term \(term) led by \(other) and \(id)") }
                leadersByTerm[term] = id
                if id == witness { violations.append("the witness \(id) became leader") }
            case .publish(let state):
                nodes[id]?.published = state
            }
        }
    }

    // MARK: - Invariants

    /// Checked after every event, in real (simulated) time.
    private mutating func check(deep: Bool) {
        var leaders: [(MemberID, UInt64)] = []
        for (id, node) in nodes {
            let local = local(id)
            // The services fence on the published state: it must say what the node itself says, at every instant.
            let published = node.published.fence(now: local)?.term
            let actual = node.mesh.lease.validTerm(now: local)
            if published != actual {
                violations.append(
                    "at \(now): \(id) publishes lead term \(published.map(String.init) ?? "-") while its lease says \(actual.map(String.init) ?? "-")"
                )
            }
            // A paused leader counts: its clock runs on, so its lease ends on time whether it runs or not.
            if let published { leaders.append((id, published)) }
            // And the members' status and app it published are the ones it knows.
            let view = node.mesh.swim.view.map(\.state)
            if deep, node.published.members.map(\.status) != view.map(\.status) || node.published.members.map(\.app) != view.map(\.app) {
                violations.append("at \(now): \(id) published members whose status or app differ from its view")
            }
        }
        if leaders.count > 1 { violations.append("at \(now): two leaders on the published state: \(leaders)") }
    }

    /// Every running node sees every running node alive and every crashed one dead, and they agree on one leader.
    func converged() -> (Bool, String) {
        let up = Set(running)
        var leader: MemberID?
        for id in running {
            let state = nodes[id]!.published
            for member in state.members {
                let expected: MemberStatus = up.contains(member.id) ? .alive : .dead
                if member.status != expected { return (false, "\(id) sees \(member.id) \(member.status)") }
            }
            guard let known = state.lease.knownLeader(now: local(id)) else { return (false, "\(id) knows no leader") }
            if let leader, leader != known.id { return (false, "\(id) follows \(known.id), others \(leader)") }
            leader = known.id
        }
        return (true, "leader \(leader.map(\.name) ?? "-")")
    }
}
