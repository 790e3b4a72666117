import Cluster
import DNSPlanning
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
/// the node's events stop while its monotonic clock runs on, and what piled up arrives at once on resume), VM
/// pauses (the same, and the node's clocks stop too), NTP slewing the nodes' monotonic clocks by up to 8 % (the
/// lease reads the raw clock, which is not slewed), loss, duplication, delay, partitions. With `dns`, every node
/// also runs the leader's DNS work against a simulated provider (`MeshSimulation+DNS.swift`).
struct MeshSimulation {
    enum Message: Sendable {
        case datagram(MeshNode.Datagram)
        case connectionLost
    }

    struct Node {
        var mesh: MeshNode
        /// What this node's services see: the last state it published.
        var published: ClusterState
        var pausedUntil: Instant?
        /// A process that runs again: the DNS work of this run (nil without `dns`).
        var dns: DNSReconciler?
        /// The state the DNS work last saw, and when it asked to look again: as the service, it steps on a change,
        /// an outcome or its own wake, not on every tick.
        var dnsSaw: ClusterState?
        var dnsWake: Instant?
        var epoch: Int
    }

    /// The clock the lease and the fences read: CLOCK_MONOTONIC_RAW, as peerd does (``slewed`` is a mutation).
    enum LeaseClock { case raw, slewed }

    let ids: [MemberID]
    let witness: MemberID?
    let swim: SWIMSettings
    let lease: LeaseSettings
    var now = Instant.zero
    var nodes: [MemberID: Node] = [:]
    /// Each node's raw clock (the hardware's rate) and its NTP-slewed monotonic clock.
    var raw: [MemberID: SimulatedClock] = [:]
    var slewed: [MemberID: SimulatedClock] = [:]
    var leaseClock = LeaseClock.raw
    /// The promised term each node persisted: what a restart starts from.
    var persisted: [MemberID: UInt64] = [:]
    /// Crashed processes whose machine still answers: a dial is refused at once.
    var refusing: Set<MemberID> = []
    var network = SimulatedNetwork<Message>()
    var rng: SplitMix64
    /// The leader's DNS work and its provider, when simulated.
    var dns: DNSWorld?
    private var epochs = 0
    /// Nodes whose clocks stopped while they led (a VM pause): their belief that they lead is not checked until
    /// it is gone (their lease ran out or was renewed after the pause).
    var frozenLeader: [MemberID: Instant] = [:]
    var violations: [String] = [] {
        didSet { if violations.count > 20 { violations.removeLast() } }
    }
    /// Every this many ticks, also compare each node's published members with its view, and check that a tick
    /// before a node's deadline does nothing (both cost more than the rest of the run).
    var deepCheckEvery = 10
    private var ticks = 0
    private var leadersByTerm: [UInt64: MemberID] = [:]
    /// The members a node is configured with (`mesh.members`), when not all of ``ids``: an operator's edit in
    /// progress. A node only talks to the members of its own list (the TLS check refuses the others).
    var memberLists: [MemberID: [MemberID]] = [:]
    /// The configurations each node persisted as the members' last known ones.
    var knownConfigurations: [MemberID: [MemberID: String]] = [:]
    /// When set, the datagrams the nodes send are kept here (the first 5,000): samples for the fuzzer.
    var sent: [MeshNode.Datagram]?
    /// What a member signed about itself: as the shell does, a node signs each state of its own it sends (its id,
    /// incarnation and app). A signature checks out where the receiver knows the member's certificate: it
    /// exchanged datagrams with it this run (a verified handshake comes before any).
    struct Claim: Hashable {
        var id: MemberID
        var incarnation: UInt64
        var app: AppStatus
        init(_ state: ClusterState.Member) { (id, incarnation, app) = (state.id, state.incarnation, state.app) }
    }
    var signed: Set<Claim> = []
    var certificates: [MemberID: Set<MemberID>] = [:]
    /// Forged claims sent (``forge(by:about:)``): none may be taken.
    var forged: Set<Claim> = []

    init(
        size: Int, witness: Bool, seed: UInt64, swim: SWIMSettings = .lan, lease: LeaseSettings = .standard, dns: DNSWorld? = nil,
        leaseClock: LeaseClock = .raw, memberLists: [MemberID: [MemberID]] = [:], notStarted: Set<MemberID> = []
    ) {
        ids = (1...size).map { MemberID("n\($0)") }
        self.witness = witness ? ids.last : nil
        self.swim = swim
        self.lease = lease
        self.dns = dns
        self.leaseClock = leaseClock
        rng = SplitMix64(seed: seed)
        for id in ids {
            // Rates within ±maxDrift/2 of real time: any two differ by at most maxDrift.
            let rate = 1 + Double.random(in: -lease.maxDrift / 2...lease.maxDrift / 2, using: &rng)
            let offset = Int64.random(in: 0...1_000_000_000_000, using: &rng)
            raw[id] = SimulatedClock(rate: rate, offset: offset)
            slewed[id] = SimulatedClock(rate: rate, offset: offset)
        }
        self.dns?.seed(records: ids.filter { $0 != self.witness }.map { (member: $0.name, address: Self.address($0)) })
        self.memberLists = memberLists
        for id in ids where !notStarted.contains(id) { start(id) }
    }

    var running: [MemberID] { ids.filter { nodes[$0] != nil } }

    /// Node `id`'s public address (its DNS record).
    static func address(_ id: MemberID) -> String { "192.0.2.\(id.name.dropFirst())" }

    /// What node `id`'s lease reads now.
    func local(_ id: MemberID) -> Instant { (leaseClock == .raw ? raw[id]! : slewed[id]!).local(now) }

    /// NTP slews `id`'s monotonic clock to run at `rate` × its raw rate (chrony: up to 8.3 % either way).
    mutating func slew(_ id: MemberID, by factor: Double) { slewed[id]!.setRate(raw[id]!.rate * factor, at: now) }

    // MARK: - Faults

    mutating func start(_ id: MemberID) {
        network.newEpoch(id)
        refusing.remove(id)
        certificates[id] = []
        let list = memberLists[id] ?? ids
        let members = list.map { MeshNode.Member(id: $0, address: "\($0.name):7946", appNode: $0 != witness) }
        var mesh = MeshNode(
            me: id, members: members, swim: swim, lease: lease, promised: persisted[id] ?? 0, seed: rng.next(), now: local(id),
            configuration: list.map(\.name).sorted().joined(separator: ","), knownConfigurations: knownConfigurations[id] ?? [:])
        let app = AppStatus(
            healthy: id == witness ? nil : true, image: id == witness ? nil : "app:1", address: id == witness ? nil : Self.address(id))
        let directives = mesh.announce(app, now: local(id))
        epochs += 1
        nodes[id] = Node(
            mesh: mesh, published: ClusterState.unstarted(me: id), dns: id == witness ? nil : dns.map { DNSReconciler(settings: $0.settings) },
            epoch: epochs)
        carryOut(directives, from: id)
    }

    /// The operator edits `id`'s member list and restarts it.
    mutating func reconfigure(_ id: MemberID, members: [MemberID]) {
        if nodes[id] != nil { crash(id, loud: true) }
        memberLists[id] = members
        start(id)
    }

    /// kill -9 (`loud`: the peers' connections close) or power loss (`loud == false`).
    mutating func crash(_ id: MemberID, loud: Bool) {
        nodes[id] = nil
        // Whatever stopped the machine's clocks is over when it comes back.
        raw[id]!.thaw(at: now)
        slewed[id]!.thaw(at: now)
        frozenLeader[id] = nil
        network.newEpoch(id)
        guard loud else { return }
        refusing.insert(id)
        for other in running { network.notify(.connectionLost, from: id, to: other, at: now + .milliseconds(1)) }
    }

    /// SIGSTOP for `duration`: the node neither ticks nor reads; its clocks run on. `frozenClock`: a VM pause,
    /// whose clocks stop too (beyond the lease's assumptions: the node may believe it still leads).
    mutating func pause(_ id: MemberID, for duration: Duration, frozenClock: Bool = false) {
        guard nodes[id] != nil, nodes[id]!.pausedUntil == nil else { return }
        nodes[id]!.pausedUntil = now + duration
        if frozenClock {
            if nodes[id]!.mesh.lease.validTerm(now: local(id)) != nil { frozenLeader[id] = Instant(nanoseconds: .max) }
            raw[id]!.freeze(at: now)
            slewed[id]!.freeze(at: now)
        }
    }

    /// `datagram` from `from` read by `to`, with the signatures checked as the shell does: a claim counts as signed
    /// when its owner signed it and `to` has verified the owner's certificate (it talked to it this run).
    mutating func receive(_ datagram: MeshNode.Datagram, at to: MemberID, from: MemberID, now: Instant) -> [MeshNode.Directive] {
        certificates[to, default: []].insert(from)
        let (known, signed) = (certificates[to]!.union([to]), signed)
        return nodes[to]!.mesh.receive(datagram, from: from, now: now) { state in known.contains(state.id) && signed.contains(Claim(state)) }
    }

    /// A member that lies: it gossips to every other member that `about` serves another image, under a higher
    /// incarnation, and says nothing of its own but the truth. Nothing it says of `about` may be taken.
    mutating func forge(by id: MemberID, about: MemberID, deathAtTheLimit: Bool = false) {
        guard let liar = nodes[id], id != about, let held = liar.mesh.swim.state(of: about) else { return }
        var claim = held
        if deathAtTheLimit {
            // Dead at the highest incarnation receivers take, with the app it has: refuting that would take it past
            // the bound, where nobody hears it any more.
            claim.incarnation = Counter.limit
            claim.status = .dead
        } else {
            claim.incarnation += 1
            claim.status = .alive
            claim.app.image = "forged:\(forged.count)"
            claim.app.healthy = false
        }
        forged.insert(Claim(claim))
        let envelope = MeshNode.Swim.Envelope(sender: liar.mesh.swim.me, message: .ping(seq: .max), gossip: [claim])
        for other in ids where other != id {
            network.send(.datagram(.swim(envelope)), from: id, to: other, now: now, rng: &rng)
        }
    }

    mutating func announce(_ id: MemberID, healthy: Bool) {
        guard nodes[id] != nil, id != witness else { return }
        var app = nodes[id]!.mesh.swim.me.app
        app.healthy = healthy
        let local = local(id)
        let directives = nodes[id]!.mesh.announce(app, now: local)
        carryOut(directives, from: id)
    }

    // MARK: - Running

    mutating func run(for duration: Duration, tick: Duration = .milliseconds(10)) {
        let end = now + duration
        var nextTick = Instant(nanoseconds: (now.nanoseconds / tick.nanoseconds + 1) * tick.nanoseconds)
        while now < end {
            let dnsAt = dns?.nextEvent
            if let delivery = network.next(until: min(nextTick, end, dnsAt ?? end)) {
                now = max(now, delivery.at)
                deliver(delivery)
            } else if let at = dnsAt, at <= min(nextTick, end) {
                now = max(now, at)
                runDNSEvent()
            } else if nextTick <= end {
                now = nextTick
                nextTick = nextTick + tick
                ticks += 1
                for id in running {
                    tickIfDue(id)
                    stepDNS(id)
                }
            } else {
                now = end
            }
            check(deep: ticks % deepCheckEvery == 0)
        }
    }

    // The nodes are changed in place (`nodes[id]!.mesh…`): a copy taken out and written back would copy the
    // membership's tables on every event.
    mutating func tickIfDue(_ id: MemberID) {
        guard nodes[id] != nil, resumeIfDue(id) else { return }
        let local = local(id)
        // The shell sleeps until the node's next deadline: before it, a tick must change nothing.
        let deadline = nodes[id]!.mesh.nextDeadline(now: local)
        if local < deadline {
            guard ticks % deepCheckEvery == 0 else { return }
            var copy = nodes[id]!.mesh
            let early = copy.tick(now: local)
            if !early.isEmpty { violations.append("\(id): a tick before its deadline did something: \(early.prefix(2))") }
            return
        }
        let directives = nodes[id]!.mesh.tick(now: local)
        carryOut(directives, from: id)
    }

    mutating func deliver(_ delivery: SimulatedNetwork<Message>.Delivery) {
        guard nodes[delivery.to] != nil else { return }
        guard resumeIfDue(delivery.to) else {
            // Read when the process runs again: put back for then.
            network.notify(delivery.message, from: delivery.from, to: delivery.to, at: nodes[delivery.to]!.pausedUntil!)
            return
        }
        let local = local(delivery.to)
        let directives: [MeshNode.Directive]
        switch delivery.message {
        case .datagram(let datagram):
            directives = receive(datagram, at: delivery.to, from: delivery.from, now: local)
        case .connectionLost: directives = nodes[delivery.to]!.mesh.connectionLost(to: delivery.from, now: local)
        }
        carryOut(directives, from: delivery.to)
    }

    /// Whether `id` runs now: a pause that is over ends here. A process that runs again acts before it reads
    /// what piled up while it was stopped (the worst order for its DNS work: its view is as old as the pause).
    mutating func resumeIfDue(_ id: MemberID) -> Bool {
        guard let until = nodes[id]?.pausedUntil else { return nodes[id] != nil }
        guard now >= until else { return false }
        resume(id)
        stepDNS(id)
        return true
    }

    /// The process runs again (its clocks go on from where they stopped, if they stopped).
    mutating func resume(_ id: MemberID) {
        nodes[id]?.pausedUntil = nil
        raw[id]!.thaw(at: now)
        slewed[id]!.thaw(at: now)
        if frozenLeader[id] != nil { frozenLeader[id] = local(id) }
    }

    /// What the shell does with the directives, in order.
    mutating func carryOut(_ directives: [MeshNode.Directive], from id: MemberID) {
        for directive in directives {
            switch directive {
            case .persistTerm(let term):
                if term < (persisted[id] ?? 0) { violations.append("\(id) persisted a lower term \(term)") }
                persisted[id] = term
            case .send(let datagram, let to):
                if sent != nil, sent!.count < 5_000 { sent!.append(datagram) }
                certificates[id, default: []].insert(to)
                if case .swim(let envelope) = datagram {
                    for state in [envelope.sender] + envelope.gossip where state.id == id { signed.insert(Claim(state)) }
                }
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
            case .configurationMismatch, .refused:
                break
            case .persistConfiguration, .configurationCommitted:
                // No change of the configuration is made here (ReconfigurationSimulationTests makes them).
                break
            case .persistConfigurations(let known):
                knownConfigurations[id] = known
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
            // A paused leader counts: its clock runs on, so its lease ends on time whether it runs or not — unless
            // its clock stopped too (a VM pause, beyond the lease's assumptions: the DNS invariants cover it).
            if let published, frozenLeader[id] == nil { leaders.append((id, published)) }
            // Resolved once it no longer leads, or its voters confirmed it after it ran again.
            if let resumed = frozenLeader[id],
                node.published.fence(now: local) == nil || (node.published.lease.holding?.confirmedAt ?? .zero) > resumed
            {
                frozenLeader[id] = nil
            }
            guard deep else { continue }
            // And the members' status and app it published are the ones it knows.
            let view = node.mesh.swim.view.map(\.state)
            if node.published.members.map(\.status) != view.map(\.status) || node.published.members.map(\.app) != view.map(\.app) {
                violations.append("at \(now): \(id) published members whose status or app differ from its view")
            }
            // Members speak only for themselves: what it holds of another is what that member said.
            if let taken = view.first(where: { forged.contains(Claim($0)) }) {
                violations.append("at \(now): \(id) took a forged claim of \(taken.id): \(taken.app.image ?? "-")")
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
                // What each says of itself reached everyone (first-hand, or relayed with its signature).
                if let owner = nodes[member.id], nodes[id]!.mesh.swim.state(of: member.id)?.app != owner.mesh.swim.me.app {
                    return (false, "\(id) holds another app status of \(member.id) than the one it announces")
                }
            }
            guard let known = state.lease.knownLeader(now: local(id)) else { return (false, "\(id) knows no leader") }
            if let leader, leader != known.id { return (false, "\(id) follows \(known.id), others \(leader)") }
            leader = known.id
        }
        return (true, "leader \(leader.map(\.name) ?? "-")")
    }
}
