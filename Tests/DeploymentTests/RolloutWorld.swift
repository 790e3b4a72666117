import Deployment
import PeerCore
import SimulationKit

/// Whole-cluster rollouts as peerd runs them: every node a ``RolloutNode`` (the same code, restart included),
/// views from a simulated membership (gossip over a lossy, delaying, duplicating network; a member not heard
/// from for 2 s is down; false suspicions), a leader with a lease (re-elected under a higher term when it
/// crashes, pauses or is cut off) that serializes the clients' requests, engines whose swaps take time and
/// fail for a bad image, crashes (mid-swap too), pauses and partitions.
///
/// Checked at every step: a client told "succeeded" for image X ⇒ every app node serves X; never two
/// intents' swaps at once; no forward swap for an intent older than one a client was told was accepted.
struct RolloutWorld {
    struct Gossip: Sendable {
        var version: Int
        var intent: RolloutIntent?
        var report: RolloutReport?
        var term: UInt64
    }

    struct Engine {
        var serving: String
        var swap: (swap: RolloutNode.Swap, until: Instant)?
    }

    struct Node {
        var rollout: RolloutNode
        /// rollout.json
        var disk: RolloutNode.Persisted?
        var engine: Engine
        var up = true
        var frozenUntil: Instant?
        /// What it has heard of each other member, and when.
        var heard: [String: (gossip: Gossip, at: Instant)] = [:]
        var suspectedUntil: [String: Instant] = [:]
        var term: UInt64 = 0
        var version = 0
        var announced: (intent: RolloutIntent?, report: RolloutReport?)
        var startedAt: Instant
    }

    struct Client {
        var image: String
        var via: String
        var requested: Instant
        /// The id its request was given (the intent's, if the leader took it).
        var ref: String?
        /// Accepted as this intent; nil while the leader has not answered.
        var id: String?
        var answer: String?
        var result: Bool?
    }

    struct Pending {
        var client: Int
        var leader: String
        var intent: RolloutIntent
        var deadline: Instant
    }

    let names: [String]
    var nodes: [String: Node] = [:]
    var network = SimulatedNetwork<Gossip>()
    var rng: SplitMix64
    var now = Instant(nanoseconds: 1_000_000_000)
    var lease: (holder: String, term: UInt64, until: Instant)?
    /// The holder crashed: a restarted peerd does not hold the lease it had; it runs out and a new term begins.
    var leaseLost = false
    var clients: [Client] = []
    var pending: [Pending] = []
    var violations: [String] = []
    var nextImage = 2
    /// Newest intent a client was told was accepted.
    var newestAccepted: RolloutIntent?
    var settleMs: Int64 = 300
    var nodeTimeoutMs: Int64 = 5_000
    var parallel = 1
    var skipDown = false
    var badSwapsStarted: [String: Set<String>] = [:]
    /// The nodes that started a forward swap, by intent.
    var forwardSwaps: [String: Set<String>] = [:]
    /// The most forward swaps seen at once, and whether any node was ever taken for behind while it served.
    var mostAtOnce = 0
    var missedSeen: Set<String> = []
    /// Not members yet (added online later, ``join(_:)``): in no view, not running.
    var outside: Set<String> = []
    /// Nodes whose every swap fails (a pull that cannot succeed there).
    var failing: Set<String> = []

    init(size: Int, seed: UInt64) {
        names = (1...size).map { "n\($0)" }
        rng = SplitMix64(seed: seed)
        network.loss = 0.05
        network.duplication = 0.05
        network.delay = .milliseconds(1) ... .milliseconds(150)
        for name in names {
            nodes[name] = Node(
                rollout: RolloutNode(me: name), engine: Engine(serving: "app:1"), announced: (nil, nil), startedAt: Instant(nanoseconds: 0))
        }
        lease = (names[0], 1, now + .seconds(3))
        for name in names { nodes[name]!.term = 1 }
    }

    // MARK: - Faults

    func isRunning(_ name: String) -> Bool {
        guard let node = nodes[name], node.up else { return false }
        return node.frozenUntil.map { now >= $0 } ?? true
    }

    mutating func crash(_ name: String) {
        guard nodes[name]!.up else { return }
        var node = nodes[name]!
        node.up = false
        if lease?.holder == name { leaseLost = true }
        if let swap = node.engine.swap {
            // Killed mid-swap: the engine's adoption keeps whatever nginx routed to.
            if swap.swap.image != "bad", Bool.random(using: &rng) { node.engine.serving = swap.swap.image }
            node.engine.swap = nil
        }
        nodes[name] = node
        network.newEpoch(MemberID(name))
        // peerctl's connection to it drops (exit 4; the client re-attaches with --follow).
        for index in clients.indices where clients[index].via == name && clients[index].id != nil && clients[index].result == nil {
            clients[index].result = false
        }
        pending.removeAll { p in
            guard p.leader == name else { return false }
            clients[p.client].answer = "leader crashed"
            return true
        }
    }

    /// Not a member yet (down, in no view) until ``join(_:)``.
    mutating func keepOut(_ name: String) {
        crash(name)
        outside.insert(name)
    }

    /// Made a member online and started for the first time: no rollout state, no app (`none`).
    mutating func join(_ name: String) {
        outside.remove(name)
        nodes[name] = Node(rollout: RolloutNode(me: name), engine: Engine(serving: "none"), announced: (nil, nil), startedAt: now)
        nodes[name]!.term = lease?.term ?? 1
    }

    /// Back: the node's rollout state comes from its disk and what its engine serves, through the node's own
    /// restart logic.
    mutating func restart(_ name: String) {
        guard !nodes[name]!.up else { return }
        var node = nodes[name]!
        let (rollout, directives) = RolloutNode.restart(me: name, persisted: node.disk, serving: node.engine.serving)
        node.rollout = rollout
        node.up = true
        node.frozenUntil = nil
        node.heard = [:]
        node.suspectedUntil = [:]
        node.startedAt = now
        nodes[name] = node
        carryOut(name, directives)
    }

    mutating func freeze(_ name: String, for duration: Duration) {
        nodes[name]!.frozenUntil = now + duration
    }

    mutating func cut(_ name: String) {
        for other in names where other != name {
            network.cut.insert(.init(from: MemberID(name), to: MemberID(other)))
            network.cut.insert(.init(from: MemberID(other), to: MemberID(name)))
        }
    }

    mutating func heal() { network.cut = [] }

    mutating func suspect(_ name: String, by observer: String, for duration: Duration) {
        nodes[observer]!.suspectedUntil[name] = now + duration
    }

    // MARK: - Clients

    /// A client asks `via` to deploy the next image (or `image`); the node forwards to the leader it knows.
    mutating func deploy(via: String, image: String? = nil) {
        let chosen = image ?? "app:\(nextImage)"
        if image == nil { nextImage += 1 }
        clients.append(Client(image: chosen, via: via, requested: now))
        let index = clients.count - 1
        guard isRunning(via) else {
            clients[index].answer = "not reachable"
            return
        }
        guard let lease, now < lease.until, !leaseLost, isRunning(lease.holder), via == lease.holder || connected(via, lease.holder) else {
            clients[index].answer = "no leader"
            return
        }
        let leader = lease.holder
        var node = nodes[leader]!
        // Random ids, as peerd's: the order of intents must not hang on them.
        let id = String((0..<6).map { _ in "abcdefghjkmnpqrstvwxyz".randomElement(using: &rng)! })
        clients[index].ref = id
        let request = RolloutNode.Request(
            id: id, image: chosen, requestedBy: "client \(index)", settleMs: settleMs, nodeTimeoutMs: nodeTimeoutMs, parallel: parallel,
            skipDown: skipDown)
        do {
            let (intent, directives) = try node.rollout.propose(
                request, term: lease.term, serving: node.engine.serving, previous: nil, view: view(of: leader))
            nodes[leader] = node
            carryOut(leader, directives)
            pending.append(Pending(client: index, leader: leader, intent: intent, deadline: now + .seconds(5)))
        } catch {
            clients[index].answer = "refused: \(error)"
        }
    }

    func connected(_ a: String, _ b: String) -> Bool {
        !network.cut.contains(.init(from: MemberID(a), to: MemberID(b))) && !network.cut.contains(.init(from: MemberID(b), to: MemberID(a)))
    }

    // MARK: - Stepping

    func view(of name: String) -> RolloutNode.View {
        let node = nodes[name]!
        let members = names.filter { !outside.contains($0) }.map { other -> RolloutNode.Member in
            if other == name {
                return RolloutNode.Member(name: name, alive: true, intent: node.announced.intent, report: node.announced.report)
            }
            let heard = node.heard[other]
            let alive = heard.map { now - $0.at < .seconds(2) } == true && (node.suspectedUntil[other].map { now >= $0 } ?? true)
            return RolloutNode.Member(name: other, alive: alive, intent: heard?.gossip.intent, report: heard?.gossip.report)
        }
        // The leader it knows: the lease holder it reaches (a voter knows whom it granted its lease to).
        let leader = lease.flatMap { now < $0.until && ($0.holder == name || connected(name, $0.holder)) ? $0.holder : nil }
        return RolloutNode.View(members: members, term: node.term, settled: now - node.startedAt >= .seconds(2), now: now, leader: leader)
    }

    mutating func carryOut(_ name: String, _ directives: [RolloutNode.Directive]) {
        for directive in directives {
            switch directive {
            case .persist(let value): nodes[name]!.disk = value
            case .announce(let intent, let report):
                nodes[name]!.announced = (intent, report)
                nodes[name]!.version += 1
            case .startSwap(let swap):
                startSwap(name, swap)
            case .adopted, .dropped: break
            }
        }
    }

    mutating func startSwap(_ name: String, _ swap: RolloutNode.Swap) {
        let others = names.compactMap { n in nodes[n]!.engine.swap.map { (n, $0.swap.intent) } }.filter { $0.0 != name }
        if let clash = others.first(where: { $0.1 != swap.intent }) {
            violations.append("\(now): \(name) starts a swap for \(swap.intent) while \(clash.0) swaps for \(clash.1)")
        }
        if swap.phase == .swapping, let newest = newestAccepted, swap.intent != newest.id,
            let intent = nodes[name]!.rollout.intent, intent.id == swap.intent, newest.isNewer(than: intent)
        {
            violations.append("\(now): \(name) resumes \(swap.intent) after \(newest.id) was accepted")
        }
        if swap.phase == .swapping, swap.image == "bad" { badSwapsStarted[swap.intent, default: []].insert(name) }
        if swap.phase == .swapping { forwardSwaps[swap.intent, default: []].insert(name) }
        let took = Duration.milliseconds(Int64.random(in: 200...2_000, using: &rng))
        nodes[name]!.engine.swap = (swap, now + took)
    }

    mutating func step() {
        now = now + .milliseconds(20)
        // Deliveries.
        while let delivery = network.next(until: now) {
            let to = delivery.to.name
            guard nodes[to]!.up else { continue }
            if let frozen = nodes[to]!.frozenUntil, now < frozen {
                // Held in the socket buffer until the node runs again.
                network.notify(delivery.message, from: delivery.from, to: delivery.to, at: frozen)
                continue
            }
            let from = delivery.from.name
            if let known = nodes[to]!.heard[from], known.gossip.version > delivery.message.version {
                nodes[to]!.heard[from]!.at = now
            } else {
                nodes[to]!.heard[from] = (delivery.message, now)
            }
            nodes[to]!.term = max(nodes[to]!.term, delivery.message.term)
        }
        electIfNeeded()
        for name in names where isRunning(name) {
            nodes[name]!.frozenUntil = nil
            // Swaps ending.
            if let swap = nodes[name]!.engine.swap, now >= swap.until {
                nodes[name]!.engine.swap = nil
                let ok = swap.swap.image != "bad" && !failing.contains(name)
                if ok { nodes[name]!.engine.serving = swap.swap.image }
                var node = nodes[name]!
                let directives = node.rollout.swapFinished(swap.swap, succeeded: ok, reason: ok ? nil : "health check never passed")
                nodes[name] = node
                carryOut(name, directives)
            }
            var node = nodes[name]!
            let directives = node.rollout.step(view(of: name))
            nodes[name] = node
            carryOut(name, directives)
            // Gossip, every 100 ms or so.
            if Int.random(in: 0..<5, using: &rng) == 0 {
                let n = nodes[name]!
                let gossip = Gossip(version: n.version, intent: n.announced.intent, report: n.announced.report, term: n.term)
                for other in names where other != name {
                    network.send(gossip, from: MemberID(name), to: MemberID(other), now: now, rng: &rng)
                }
            }
        }
        answerClients()
        checkSucceeded()
        mostAtOnce = max(mostAtOnce, names.filter { nodes[$0]!.engine.swap?.swap.phase == .swapping }.count)
        for name in names where nodes[name]!.rollout.missed { missedSeen.insert(name) }
    }

    /// Steps until `done` holds, at most `limit`; returns whether it did.
    @discardableResult
    mutating func run(for limit: Duration, until done: (RolloutWorld) -> Bool = { _ in false }) -> Bool {
        let end = now + limit
        var steps = 0
        while now < end {
            if steps % 10 == 0, done(self) { return true }
            step()
            steps += 1
        }
        return done(self)
    }

    /// The lease: its holder renews it while it runs and reaches a majority; once it has run out, a running node
    /// that reaches a majority takes it under the next term.
    mutating func electIfNeeded() {
        let majority = names.count / 2 + 1
        func reaches(_ n: String) -> Bool { names.filter { $0 == n || (isRunning($0) && connected(n, $0)) }.count >= majority }
        if let current = lease, now < current.until {
            if !leaseLost, isRunning(current.holder), reaches(current.holder) { lease!.until = now + .seconds(3) }
            return
        }
        leaseLost = false
        let candidates = names.filter { isRunning($0) && reaches($0) }
        guard let next = candidates.randomElement(using: &rng) else { return }
        let term = (lease?.term ?? 0) + 1
        lease = (next, term, now + .seconds(3))
        nodes[next]!.term = max(nodes[next]!.term, term)
    }

    mutating func answerClients() {
        var still: [Pending] = []
        for p in pending {
            let reports = nodes[p.leader]!.rollout.reports(view(of: p.leader).members)
            let (holders, needed) = Rollout.replication(of: p.intent, reports: reports)
            if !isRunning(p.leader) {
                still.append(p)  // paused: answers when it runs again
            } else if holders >= needed {
                clients[p.client].id = p.intent.id
                clients[p.client].answer = "accepted"
                if p.intent.isNewer(than: newestAccepted) { newestAccepted = p.intent }
            } else if now >= p.deadline {
                var node = nodes[p.leader]!
                if let directives = node.rollout.cancel(p.intent.id, reason: "not replicated", members: view(of: p.leader).members) {
                    nodes[p.leader] = node
                    carryOut(p.leader, directives)
                }
                clients[p.client].answer = "not replicated: \(holders) of \(p.intent.order.count)"
            } else {
                still.append(p)
            }
        }
        pending = still
    }

    /// Accepted clients follow their rollout from the node they asked, as `peerctl deploy` does.
    mutating func checkSucceeded() {
        for index in clients.indices where clients[index].id != nil && clients[index].result == nil {
            let client = clients[index]
            guard isRunning(client.via) else { continue }
            let view = view(of: client.via)
            let node = nodes[client.via]!
            let known = node.rollout.known(view.members, leader: view.leader).filter { $0.id == client.id }
            guard let intent = known.max(by: { $1.isNewer(than: $0) }) else {
                // Replaced by a newer one before this node saw it end (no member gossips it any more): peerctl fails
                // rather than guess. Gossiped only by members this node does not take it from yet: it waits.
                if node.rollout.intent != nil, !view.members.contains(where: { $0.intent?.id == client.id }) { clients[index].result = false }
                continue
            }
            switch Rollout.outcome(intent: intent, reports: node.rollout.reports(view.members), alive: node.rollout.alive(view.members)) {
            case .running: continue
            case .succeeded:
                clients[index].result = true
                // The intent's nodes (one that joined after it began follows it later).
                let serving = intent.order.map { nodes[$0]!.engine.serving }
                let movedOn = newestAccepted.map { $0.isNewer(than: intent) } ?? false
                if !skipDown, !movedOn, serving.contains(where: { $0 != client.image }) {
                    violations.append("\(now): client \(index) told \(client.image) succeeded, nodes serve \(serving)")
                }
                if intent.image != client.image { violations.append("client \(index) told another image succeeded: \(intent.image)") }
            case .failed, .cancelled:
                clients[index].result = false
            }
        }
    }

    // MARK: - Reading

    /// Every running node has settled on the same intent, which has ended, and all serve the same image.
    var quiet: Bool {
        let running = names.filter(isRunning)
        guard running.count == names.count else { return false }
        let ids = Set(running.map { nodes[$0]!.rollout.intent?.id })
        guard ids.count == 1, pending.isEmpty else { return false }
        let outcomes = running.map { nodes[$0]!.rollout.outcome(view(of: $0).members) }
        guard outcomes.allSatisfy({ $0 != .running }) else { return false }
        return Set(names.map { nodes[$0]!.engine.serving }).count == 1 && names.allSatisfy { nodes[$0]!.engine.swap == nil }
    }

    var serving: [String: String] { nodes.mapValues(\.engine.serving) }
}
