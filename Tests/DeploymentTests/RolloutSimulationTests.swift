import Deployment
import PeerCore
import Testing

/// Nodes that each run ``Rollout/decide`` on what they have heard, with engines whose swaps take time and fail
/// for a bad image, reports that travel with a delay, and nodes that crash (mid-swap too) and come back.
struct RolloutCluster {
    struct Node {
        var serving: String
        var report: RolloutReport?  // persisted
        var swap: (image: String, until: Int64, phase: RolloutReport.Phase)?
        var alive = true
        var doneSince: [String: Instant] = [:]
        var downSince: [String: Instant] = [:]
        /// What this node has heard of the others' reports.
        var heard: [String: RolloutReport] = [:]
    }

    var nodes: [String: Node]
    let names: [String]
    var intent: RolloutIntent
    var now: Int64 = 0
    var rng: SplitMix64
    var violations: [String] = []
    var attemptedBad: Set<String> = []
    var inFlight: [(at: Int64, from: String, to: String, report: RolloutReport)] = []

    init(size: Int, image: String, seed: UInt64, parallel: Int = 1) {
        names = (1...size).map { "n\($0)" }
        nodes = Dictionary(uniqueKeysWithValues: names.map { ($0, Node(serving: "app:1")) })
        rng = SplitMix64(seed: seed)
        intent = RolloutIntent(
            id: "r1", seq: 1, kind: .deploy, image: image, previousImage: "app:1", order: names, requestedBy: "test", settleMs: 300,
            nodeTimeoutMs: 5_000)
        if parallel > 1 { intent.parallel = parallel }
    }

    var alive: Set<String> { Set(names.filter { nodes[$0]!.alive }) }

    mutating func step() {
        now += 20_000_000
        let instant = Instant(nanoseconds: now)
        // Deliver reports.
        inFlight.sort { $0.at < $1.at }
        while let first = inFlight.first, first.at <= now {
            inFlight.removeFirst()
            if nodes[first.to]!.alive {
                nodes[first.to]!.heard[first.from] = first.report
                if first.report.phase == .done, nodes[first.to]!.doneSince[first.from] == nil { nodes[first.to]!.doneSince[first.from] = instant }
            }
        }
        for name in names where nodes[name]!.alive {
            var node = nodes[name]!
            for other in names where other != name {
                if nodes[other]!.alive { node.downSince[other] = nil } else if node.downSince[other] == nil { node.downSince[other] = instant }
            }
            // A swap finishing.
            if let swap = node.swap, now >= swap.until {
                node.swap = nil
                if swap.image == "bad" {
                    node.report = RolloutReport(intent: intent.id, phase: .failed, reason: "health check never passed")
                } else {
                    node.serving = swap.image
                    node.report = RolloutReport(intent: intent.id, phase: swap.phase == .rollingBack ? .rolledBack : .done)
                }
            }
            if node.swap == nil {
                var reports = node.heard
                reports[name] = node.report
                let decision = Rollout.decide(
                    intent: intent, me: name, reports: reports, alive: alive, now: instant, doneSince: node.doneSince,
                    downSince: node.downSince)
                switch decision {
                case .swap(let image, let phase):
                    if phase == .swapping {
                        if image == "bad" { attemptedBad.insert(name) }
                        let swapping = names.filter { nodes[$0]!.swap?.phase == .swapping && $0 != name }
                        if swapping.count >= (intent.parallel ?? 1) { violations.append("\(name) starts while \(swapping) swap forward") }
                    }
                    node.swap = (image, now + Int64.random(in: 200_000_000...2_000_000_000, using: &rng), phase)
                    node.report = RolloutReport(intent: intent.id, phase: phase)
                case .report(let phase, let reason):
                    node.report = RolloutReport(intent: intent.id, phase: phase, reason: reason)
                case .wait:
                    break
                }
            }
            nodes[name] = node
            // Gossip our report to the others (lossy, delayed; repeated every step).
            if let report = node.report, Int.random(in: 0..<5, using: &rng) == 0 {
                for other in names where other != name {
                    inFlight.append((now + Int64.random(in: 1_000_000...300_000_000, using: &rng), name, other, report))
                }
            }
        }
    }

    mutating func crash(_ name: String) {
        var node = nodes[name]!
        node.alive = false
        if let swap = node.swap {
            // Killed mid-swap: the engine's adoption keeps whatever nginx routed to.
            if Bool.random(using: &rng), swap.image != "bad" { node.serving = swap.image }
            node.swap = nil
        }
        node.heard = [:]
        node.doneSince = [:]
        nodes[name] = node
    }

    /// Back after a crash: a report of `swapping`/`rollingBack` is settled from what the engine serves.
    mutating func restart(_ name: String) {
        var node = nodes[name]!
        node.alive = true
        if let report = node.report {
            switch report.phase {
            case .swapping:
                node.report =
                    node.serving == intent.image ? RolloutReport(intent: intent.id, phase: .done) : RolloutReport(intent: intent.id, phase: .waiting)
            case .rollingBack:
                node.report =
                    node.serving == intent.previousImage
                    ? RolloutReport(intent: intent.id, phase: .rolledBack) : RolloutReport(intent: intent.id, phase: .done)
            default: break
            }
        }
        nodes[name] = node
    }

    var outcome: Rollout.Outcome {
        Rollout.outcome(
            intent: intent, reports: Dictionary(uniqueKeysWithValues: names.compactMap { n in nodes[n]!.report.map { (n, $0) } }), alive: alive)
    }
}

@Suite struct RolloutSimulationTests {
    @Test func aGoodImageRollsThroughOneNodeAtATime() {
        for seed in UInt64(0)..<200 {
            var sizes = SplitMix64(seed: seed)
            var sim = RolloutCluster(size: Int.random(in: 1...5, using: &sizes), image: "app:2", seed: seed)
            for _ in 0..<2000 where sim.outcome == .running { sim.step() }
            #expect(sim.outcome == .succeeded, "seed \(seed): \(sim.outcome)")
            #expect(sim.nodes.values.allSatisfy { $0.serving == "app:2" }, "seed \(seed)")
            #expect(sim.violations.isEmpty, "seed \(seed): \(sim.violations)")
        }
    }

    @Test func aDownNodeIsSkippedAndCatchesUpWhenBack() {
        for seed in UInt64(0)..<100 {
            var sim = RolloutCluster(size: 4, image: "app:2", seed: seed)
            sim.intent.skipDown = true
            sim.crash("n2")
            for _ in 0..<2000 where sim.outcome == .running { sim.step() }
            #expect(sim.outcome == .succeeded, "seed \(seed): \(sim.outcome)")
            #expect(sim.names.filter { $0 != "n2" }.allSatisfy { sim.nodes[$0]!.serving == "app:2" }, "seed \(seed)")
            #expect(sim.nodes["n2"]!.serving == "app:1")
            sim.restart("n2")
            for _ in 0..<500 where sim.nodes["n2"]!.serving != "app:2" { sim.step() }
            #expect(sim.nodes["n2"]!.serving == "app:2", "seed \(seed): n2 did not catch up")
            #expect(sim.violations.isEmpty, "seed \(seed): \(sim.violations)")
        }
    }

    @Test func twoAtATime() {
        for seed in UInt64(0)..<100 {
            var sim = RolloutCluster(size: 5, image: "app:2", seed: seed, parallel: 2)
            var most = 0
            for _ in 0..<2000 where sim.outcome == .running {
                sim.step()
                most = max(most, sim.nodes.values.filter { $0.swap?.phase == .swapping }.count)
            }
            #expect(sim.outcome == .succeeded && most <= 2, "seed \(seed): \(sim.outcome), \(most) at once")
            #expect(sim.violations.isEmpty, "seed \(seed): \(sim.violations)")
        }
    }

    @Test func aBadImageReachesOneNodeAndEveryoneEndsOnThePreviousImage() {
        for seed in UInt64(0)..<200 {
            var sim = RolloutCluster(size: 3, image: "bad", seed: seed)
            for _ in 0..<2000 where sim.outcome == .running { sim.step() }
            #expect(sim.attemptedBad.count == 1, "seed \(seed): tried by \(sim.attemptedBad)")
            #expect(sim.nodes.values.allSatisfy { $0.serving == "app:1" }, "seed \(seed)")
            if case .failed(let node, _) = sim.outcome { #expect(node == "n1") } else { Issue.record("seed \(seed): \(sim.outcome)") }
        }
    }

    /// Crashes at random moments (mid-swap included), each node back after a while: the rollout ends either
    /// done everywhere or undone everywhere — never half — and never two forward swaps at once.
    @Test(arguments: 0..<4)
    func crashesNeverLeaveItHalfDone(batch: UInt64) {
        for seed in (batch * 250)..<(batch * 250 + 250) {
            var rng = SplitMix64(seed: seed &+ 99)
            let bad = Int.random(in: 0..<4, using: &rng) == 0
            var sim = RolloutCluster(size: Int.random(in: 2...5, using: &rng), image: bad ? "bad" : "app:2", seed: seed)
            var down: [String: Int] = [:]
            for tick in 0..<3000 {
                sim.step()
                if tick < 600, Int.random(in: 0..<60, using: &rng) == 0, let victim = sim.names.randomElement(using: &rng), sim.nodes[victim]!.alive {
                    sim.crash(victim)
                    // Mostly back before the node timeout (5 s); sometimes not.
                    down[victim] = tick + Int.random(in: 10...400, using: &rng)
                }
                for (name, until) in down where tick >= until {
                    sim.restart(name)
                    down[name] = nil
                }
                if sim.outcome != .running, down.isEmpty, tick > 700 { break }
            }
            for name in down.keys { sim.restart(name) }
            for _ in 0..<1500 where sim.outcome == .running { sim.step() }
            #expect(sim.violations.isEmpty, "seed \(seed): \(sim.violations.prefix(2))")
            #expect(sim.attemptedBad.count <= 1, "seed \(seed): bad image tried by \(sim.attemptedBad)")
            switch sim.outcome {
            case .succeeded:
                #expect(!bad && sim.nodes.values.allSatisfy { $0.serving == "app:2" }, "seed \(seed): \(sim.nodes.mapValues(\.serving))")
            case .failed:
                #expect(sim.nodes.values.allSatisfy { $0.serving == "app:1" }, "seed \(seed): failed but \(sim.nodes.mapValues(\.serving))")
            case .running:
                Issue.record("seed \(seed): still running: \(sim.nodes.mapValues { $0.report?.phase.rawValue ?? "-" })")
            }
        }
    }
}
