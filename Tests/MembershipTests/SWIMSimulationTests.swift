import Foundation
import Membership
import PeerCore
import Testing

/// The membership instances together, over a simulated network under a seeded RNG: every run replays exactly
/// from its seed, and the seed is in every failure message.
@Suite struct SWIMSimulationTests {
    /// Random faults — loss up to 30 %, partitions, loud and silent crashes, restarts, app changes — then
    /// everything heals. Views never move backwards (checked at every change), and after healing every node
    /// agrees: the running nodes alive with their latest app state, the crashed ones dead.
    @Test(arguments: 0..<8)
    func randomFaultsThenHealConverges(batch: UInt64) {
        // 480 seeds in CI (about 40 s of CPU); PEER_SWIM_SIM_SEEDS per batch for longer runs.
        let share = UInt64(ProcessInfo.processInfo.environment["PEER_SWIM_SIM_SEEDS"].flatMap(Int.init) ?? 60)
        for seed in (batch * share)..<(batch * share + share) {
            var rng = SplitMix64(seed: seed)
            let size = Int.random(in: 2...9, using: &rng)
            var sim = SimulatedCluster(size: size, settings: .lan, seed: seed)
            sim.loss = [0, 0.05, 0.1, 0.3].randomElement(using: &rng)!
            sim.run(for: .seconds(2))
            for _ in 0..<Int.random(in: 1...6, using: &rng) {
                let id = sim.ids.randomElement(using: &rng)!
                switch Int.random(in: 0..<6, using: &rng) {
                case 0: if sim.running.count > 1, sim.nodes[id] != nil { sim.crash(id, loud: true) }
                case 1: if sim.running.count > 1, sim.nodes[id] != nil { sim.crash(id, loud: false) }
                case 2: if sim.nodes[id] == nil { sim.start(id) }
                case 3:
                    let side = Set(sim.ids.filter { _ in Bool.random(using: &rng) })
                    sim.partition(side, Set(sim.ids).subtracting(side))
                case 4: sim.setApp(id, AppStatus(healthy: Bool.random(using: &rng), image: "app:\(Int.random(in: 1...3, using: &rng))"))
                default: sim.cut = []
                }
                sim.run(for: .milliseconds(Int64.random(in: 100...3000, using: &rng)))
            }
            sim.heal()
            sim.run(for: .seconds(15))

            #expect(sim.violations.isEmpty, "seed \(seed): \(sim.violations.prefix(3))")
            for observer in sim.running {
                for member in sim.ids where member != observer {
                    let expected: MemberStatus = sim.nodes[member] == nil ? .dead : .alive
                    let seen = sim.view(of: member, by: observer)
                    #expect(
                        seen == expected,
                        "seed \(seed), \(size) nodes: \(observer) sees \(member) \(seen.map { "\($0)" } ?? "-"), expected \(expected)")
                    if let actual = sim.nodes[member]?.me.app {
                        #expect(sim.nodes[observer]?.state(of: member)?.app == actual, "seed \(seed): \(observer) has a stale app state of \(member)")
                    }
                }
            }
        }
    }

    /// kill -9: every other node declares it dead, within two seconds with the LAN settings.
    @Test(arguments: [2, 3, 5, 9])
    func killedProcessIsDeclaredDeadQuickly(size: Int) {
        var worst = Duration.zero
        for seed in UInt64(0)..<50 {
            var sim = SimulatedCluster(size: size, settings: .lan, seed: seed)
            sim.run(for: .seconds(3))
            let victim = sim.ids[Int(seed) % size]
            let killedAt = sim.now
            sim.crash(victim, loud: true)
            sim.run(for: .seconds(10))
            for observer in sim.running {
                let death = sim.deaths(of: victim, by: observer, after: killedAt).first
                #expect(death != nil, "seed \(seed): \(observer) never declared \(victim) dead")
                if let death { worst = max(worst, death.at - killedAt) }
            }
        }
        // Two nodes cannot confirm each other's suspicions: they wait the longest suspicion.
        let bound: Duration = size == 2 ? SWIMSettings.lan.suspicionMax + .milliseconds(500) : .seconds(2)
        #expect(worst <= bound, "\(size) nodes: worst detection \(worst.compactDescription)")
    }

    /// Power loss (no connection closes): found by failed probes, dead everywhere within 6 s on the LAN settings.
    @Test(arguments: [3, 5, 9])
    func silentCrashIsFoundByProbes(size: Int) {
        var worst = Duration.zero
        for seed in UInt64(0)..<50 {
            var sim = SimulatedCluster(size: size, settings: .lan, seed: seed)
            sim.run(for: .seconds(3))
            let victim = sim.ids[Int(seed) % size]
            let at = sim.now
            sim.crash(victim, loud: false)
            sim.run(for: .seconds(15))
            for observer in sim.running {
                let death = sim.deaths(of: victim, by: observer, after: at).first
                #expect(death != nil, "seed \(seed): \(observer) never declared \(victim) dead")
                if let death { worst = max(worst, death.at - at) }
            }
        }
        #expect(worst <= .seconds(6), "\(size) nodes: worst detection \(worst.compactDescription)")
    }

    /// 30 % packet loss on every link for five minutes: messages arrive late, never lost, and nobody is
    /// declared dead.
    @Test(arguments: [3, 5])
    func heavyLossMakesNoFalseDeaths(size: Int) {
        for seed in UInt64(0)..<4 {
            var sim = SimulatedCluster(size: size, settings: .lan, seed: seed)
            sim.loss = 0.3
            sim.run(for: .seconds(300))
            let deaths = sim.changes.filter { $0.state.status == .dead }
            let suspicions = sim.changes.filter { $0.state.status == .suspect && $0.previous.status == .alive }
            let falseDeaths = deaths.count
            #expect(
                falseDeaths == 0,
                "seed \(seed): \(deaths.count) false deaths (\(suspicions.count) suspicions), first: \(deaths.first.map { "\($0.observer) → \($0.state.id) at \($0.at)" } ?? "")"
            )
            #expect(sim.violations.isEmpty, "seed \(seed): \(sim.violations.prefix(3))")
        }
    }

    /// One link cut (A cannot reach B, both reach C): indirect probes through C keep B alive for A.
    @Test func oneCutLinkMakesNoFalseDeath() {
        for seed in UInt64(0)..<20 {
            var sim = SimulatedCluster(size: 3, settings: .lan, seed: seed)
            sim.run(for: .seconds(2))
            sim.partition([MemberID("n1")], [MemberID("n2")])
            sim.run(for: .seconds(60))
            #expect(sim.deaths(of: MemberID("n1")).isEmpty && sim.deaths(of: MemberID("n2")).isEmpty, "seed \(seed)")
        }
    }

    /// A node that restarts (incarnation back to 0) after being declared dead is alive again everywhere.
    @Test func restartedNodeRejoins() {
        for seed in UInt64(0)..<50 {
            var sim = SimulatedCluster(size: 4, settings: .lan, seed: seed)
            sim.run(for: .seconds(2))
            sim.crash(MemberID("n2"), loud: true)
            sim.run(for: .seconds(6))
            #expect(sim.running.allSatisfy { sim.view(of: MemberID("n2"), by: $0) == .dead }, "seed \(seed)")
            sim.start(MemberID("n2"))
            sim.run(for: .seconds(3))
            for observer in sim.running {
                #expect(sim.view(of: MemberID("n2"), by: observer) == .alive, "seed \(seed): \(observer)")
            }
            #expect(sim.nodes[MemberID("n2")]!.me.incarnation > 0)
        }
    }

    /// An app change reaches every node within a second.
    @Test func appChangesSpread() {
        for seed in UInt64(0)..<50 {
            var sim = SimulatedCluster(size: 9, settings: .lan, seed: seed)
            sim.run(for: .seconds(1))
            let app = AppStatus(healthy: false, image: "app:2")
            sim.setApp(MemberID("n5"), app)
            sim.run(for: .seconds(1))
            for observer in sim.running {
                #expect(sim.nodes[observer]?.state(of: MemberID("n5"))?.app == app, "seed \(seed): \(observer)")
            }
        }
    }
}
