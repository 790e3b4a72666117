import Leadership
import PeerCore
import SimulationKit
import Testing

/// Voters with drifting clocks over a lossy, reordering, partitionable network, crashing and restarting (their
/// promised term survives, as the shell persists it). Checked after every event, in real (simulated) time:
/// never two nodes that each believe they lead, and never two leaders of one term.
struct LeaseCluster {
    struct Node {
        var lease: Lease
        var rate: Double  // local clock speed relative to real time
        var offset: Int64  // local clock origin
        var persisted: UInt64
    }

    let ids: [MemberID]
    let settings: LeaseSettings
    var realNow: Int64 = 0
    var nodes: [MemberID: Node] = [:]
    var persisted: [MemberID: UInt64] = [:]
    var rates: [MemberID: Double] = [:]
    var rng: SplitMix64
    var network = SimulatedNetwork<Lease.Message>()
    var violations: [String] = []
    var leadersByTerm: [UInt64: MemberID] = [:]
    var leaderChanges: [(at: Int64, id: MemberID, term: UInt64)] = []
    var witness: MemberID?

    /// `rates`: each node's clock rate against real time (default: within ±maxDrift/2, as the lease assumes).
    init(size: Int, witness: Bool = false, settings: LeaseSettings = .standard, seed: UInt64, rates given: [Double]? = nil) {
        ids = (1...size).map { MemberID("n\($0)") }
        self.settings = settings
        rng = SplitMix64(seed: seed)
        network.delay = .microseconds(100) ... .milliseconds(20)
        if witness { self.witness = ids.last }
        for id in ids {
            // Rates within ±maxDrift/2 of real time: any two differ by at most maxDrift.
            let drawn = 1 + Double.random(in: -settings.maxDrift / 2...settings.maxDrift / 2, using: &rng)
            rates[id] = given?[ids.firstIndex(of: id)!] ?? drawn
            start(id)
        }
    }

    /// NTP slews `id`'s clock: from now on it runs at `rate` (continuously: no jump).
    mutating func setRate(_ id: MemberID, _ rate: Double) {
        guard var node = nodes[id] else { return }
        let now = local(id, node).nanoseconds
        node.rate = rate
        node.offset = now - Int64(Double(realNow) * rate)
        nodes[id] = node
        rates[id] = rate
    }

    func local(_ id: MemberID, _ node: Node) -> Instant {
        Instant(nanoseconds: node.offset + Int64(Double(realNow) * node.rate))
    }

    mutating func start(_ id: MemberID) {
        network.newEpoch(id)
        let offset = Int64.random(in: 0...1_000_000_000_000, using: &rng)
        let rate = rates[id]!
        var node = Node(
            lease: Lease(
                me: id, voters: ids, canLead: id != witness, promised: persisted[id] ?? 0, settings: settings, seed: rng.next(),
                now: .zero),
            rate: rate, offset: offset, persisted: persisted[id] ?? 0)
        node.lease = Lease(
            me: id, voters: ids, canLead: id != witness, promised: persisted[id] ?? 0, settings: settings, seed: rng.next(),
            now: local(id, node))
        nodes[id] = node
    }

    mutating func crash(_ id: MemberID) {
        nodes[id] = nil
        network.newEpoch(id)
    }

    var leaders: [(MemberID, UInt64)] {
        nodes.compactMap { id, node in node.lease.validTerm(now: local(id, node)).map { (id, $0) } }
    }

    mutating func run(for seconds: Double) {
        let end = realNow + Int64(seconds * 1e9)
        let tick: Int64 = 20_000_000
        var nextTick = (realNow / tick + 1) * tick
        while realNow < end {
            if let first = network.next(until: Instant(nanoseconds: nextTick)) {
                realNow = max(realNow, first.at.nanoseconds)
                guard var node = nodes[first.to] else { continue }
                let directives = node.lease.receive(first.message, from: first.from, now: local(first.to, node))
                nodes[first.to] = node
                handle(directives, from: first.to)
            } else {
                realNow = nextTick
                nextTick += tick
                let alive = ids.filter { nodes[$0] != nil && $0 != witness }
                for id in ids where nodes[id] != nil {
                    var node = nodes[id]!
                    let now = local(id, node)
                    // peerd sleeps until the lease's next deadline: before it, a tick must change nothing.
                    // Checked on a copy; the node itself is ticked only at its deadlines, as in peerd.
                    let deadline = node.lease.nextDeadline(now: now)
                    if deadline.map({ now < $0 }) ?? true {
                        var copy = node
                        let early = copy.lease.tick(now: now, aliveCandidates: alive)
                        if !early.isEmpty || copy.lease.nextDeadline(now: now) != deadline {
                            violations.append("\(id): a tick before its deadline (\(String(describing: deadline))) did something: \(early)")
                        }
                        continue
                    }
                    let directives = node.lease.tick(now: now, aliveCandidates: alive)
                    if let next = node.lease.nextDeadline(now: now), next <= now {
                        violations.append("\(id): next deadline \(next) not after its tick at \(now)")
                    }
                    nodes[id] = node
                    handle(directives, from: id)
                }
            }
            check()
        }
    }

    mutating func handle(_ directives: [Lease.Directive], from id: MemberID) {
        for directive in directives {
            switch directive {
            case .persist(let term):
                if term < (persisted[id] ?? 0) { violations.append("\(id) persisted a lower term \(term)") }
                persisted[id] = term
            case .send(let to, let message):
                network.send(message, from: id, to: to, now: Instant(nanoseconds: realNow), rng: &rng)
            case .leadership(let term):
                guard let term else { continue }
                if let other = leadersByTerm[term], other != id { violations.append("term \(term) led by \(other) and \(id)") }
                if let last = leaderChanges.last, term < last.term {
                    violations.append("term went back from \(last.term) (\(last.id)) to \(term) (\(id))")
                }
                leadersByTerm[term] = id
                leaderChanges.append((realNow, id, term))
                if id == witness { violations.append("the witness became leader") }
            }
        }
    }

    mutating func check() {
        let current = leaders
        if current.count > 1 { violations.append("at \(realNow / 1_000_000) ms two leaders: \(current)") }
    }
}

@Suite struct LeaseSimulationTests {
    @Test(arguments: 0..<4)
    func neverTwoLeadersUnderFaults(batch: UInt64) {
        for seed in (batch * 500)..<(batch * 500 + 500) {
            var rng = SplitMix64(seed: seed)
            var sim = LeaseCluster(size: Int.random(in: 2...5, using: &rng), witness: Bool.random(using: &rng), seed: seed)
            sim.network.loss = [0, 0.1, 0.3].randomElement(using: &rng)!
            sim.network.delay = .microseconds(100)...[.milliseconds(2), .milliseconds(50), .milliseconds(300)].randomElement(using: &rng)!
            sim.run(for: 4)
            for _ in 0..<Int.random(in: 1...6, using: &rng) {
                let id = sim.ids.randomElement(using: &rng)!
                switch Int.random(in: 0..<4, using: &rng) {
                case 0: if sim.nodes[id] != nil { sim.crash(id) }
                case 1: if sim.nodes[id] == nil { sim.start(id) }
                case 2:
                    let side = Set(sim.ids.filter { _ in Bool.random(using: &rng) })
                    sim.network.partition(side, Set(sim.ids).subtracting(side))
                default: sim.network.cut = []
                }
                sim.run(for: Double.random(in: 0.1...4, using: &rng))
            }
            #expect(sim.violations.isEmpty, "seed \(seed): \(sim.violations.prefix(3))")
            // Healed, everyone up: a leader again, within a few lease durations.
            sim.network.heal()
            for id in sim.ids where sim.nodes[id] == nil { sim.start(id) }
            sim.run(for: 10)
            #expect(sim.leaders.count == 1, "seed \(seed): after healing \(sim.leaders.count) leaders")
            #expect(sim.violations.isEmpty, "seed \(seed): \(sim.violations.prefix(3))")
        }
    }

    /// The leader dies: a new leader, under a higher term, within 3 s.
    @Test(arguments: [3, 5])
    func leaderFailoverIsQuick(size: Int) {
        var worst = 0.0
        for seed in UInt64(0)..<100 {
            var sim = LeaseCluster(size: size, seed: seed)
            sim.run(for: 5)
            guard let (old, term) = sim.leaders.first else {
                Issue.record("seed \(seed): no leader after 5 s")
                continue
            }
            let killedAt = sim.realNow
            sim.crash(old)
            sim.run(for: 6)
            let next = sim.leaderChanges.first { $0.at > killedAt }
            #expect(next != nil && next!.term > term, "seed \(seed)")
            if let next { worst = max(worst, Double(next.at - killedAt) / 1e9) }
        }
        #expect(worst <= 3.0, "worst failover \(worst) s")
    }

    /// Two nodes and a witness: either node alone with the witness leads; the witness never does.
    @Test func twoNodesAndAWitness() {
        for seed in UInt64(0)..<100 {
            var sim = LeaseCluster(size: 3, witness: true, seed: seed)
            sim.run(for: 4)
            let (leader, _) = sim.leaders.first!
            sim.crash(leader)
            sim.run(for: 5)
            #expect(sim.leaders.count == 1 && sim.leaders.first?.0 != leader && sim.leaders.first?.0 != sim.witness, "seed \(seed)")
            #expect(sim.violations.isEmpty, "seed \(seed): \(sim.violations.prefix(3))")
        }
    }

    /// Why peerd times the lease on CLOCK_MONOTONIC_RAW: NTP (chrony's default `maxslewrate`) slews the monotonic
    /// clock by up to 8.3 %, far past the 1 % the lease allows for. A leader whose clock is slewed slow and voters
    /// whose clocks are slewed fast: cut off, the leader still believes in its lease when the others have elected
    /// a new one — two leaders. On the raw clocks (rates a crystal keeps, well inside 1 %) the same run has none.
    @Test func aClockSlewedByNTPBreaksTheLeaseTheRawClockDoesNot() {
        func twoLeaders(leaderRate: Double, othersRate: Double) -> Int {
            var seen = 0
            for seed in UInt64(0)..<50 {
                var sim = LeaseCluster(size: 3, seed: seed)
                sim.run(for: 4)
                guard let (leader, _) = sim.leaders.first else { continue }
                // Slewed from here on: the leader's clock slow, the others' fast.
                for id in sim.ids { sim.setRate(id, id == leader ? leaderRate : othersRate) }
                sim.run(for: 2)
                sim.network.isolate(leader, from: sim.ids)
                sim.run(for: 6)
                if sim.violations.contains(where: { $0.contains("two leaders") }) { seen += 1 }
            }
            return seen
        }
        #expect(twoLeaders(leaderRate: 0.917, othersRate: 1.083) > 0, "slewed clocks: the leader outlives its lease")
        #expect(twoLeaders(leaderRate: 0.995, othersRate: 1.005) == 0, "clocks within the 1 % the lease allows")
    }

    /// Two voters and no witness: when one is gone, nobody leads (no majority), by design.
    @Test func twoVotersWithoutAWitnessHaveNoLeaderAlone() {
        var sim = LeaseCluster(size: 2, seed: 1)
        sim.run(for: 4)
        #expect(sim.leaders.count == 1)
        sim.crash(sim.leaders.first!.0)
        sim.run(for: 6)
        #expect(sim.leaders.isEmpty)
    }
}
