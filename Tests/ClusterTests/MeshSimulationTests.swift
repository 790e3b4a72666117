import Foundation
import Cluster
import Membership
import PeerCore
import Testing

/// The whole mesh — membership and lease together, as one ``MeshNode`` per node — under faults, thousands of
/// seeds. Mutations that make it fail (tried when it was written):
/// - `MeshNode.publishIfChanged` publishes only when a member changed (not on lease changes): the services'
///   fence on the published state disagrees with the lease ("publishes lead term").
/// - `Lease.View.validTerm` without its `now < validUntil` check: a node publishes a lead its lease no longer has.
/// Tried and not caught: `MeshNode.absorb` never updating `aliveCandidates` (a dead first candidate only delays
/// the others' campaigns by a stagger; convergence still comes within the 12 s allowed).
@Suite struct MeshSimulationTests {
    @Test(arguments: 0..<4)
    func oneLeaderAndAPublishedStateThatTellsTheTruthUnderFaults(batch: UInt64) {
        // 160 seeds in CI; PEER_MESH_SIM_SEEDS per batch for longer runs (the mutations above were run with 60).
        let share = UInt64(ProcessInfo.processInfo.environment["PEER_MESH_SIM_SEEDS"].flatMap(Int.init) ?? 40)
        for seed in (batch * share)..<(batch * share + share) {
            var rng = SplitMix64(seed: seed)
            var sim = MeshSimulation(size: Int.random(in: 2...5, using: &rng), witness: Bool.random(using: &rng), seed: seed)
            sim.network.loss = [0, 0.05, 0.2].randomElement(using: &rng)!
            sim.network.duplication = [0, 0.1].randomElement(using: &rng)!
            sim.run(for: .seconds(6))
            for _ in 0..<Int.random(in: 1...5, using: &rng) {
                let id = sim.ids.randomElement(using: &rng)!
                switch Int.random(in: 0..<8, using: &rng) {
                case 0: if sim.nodes[id] != nil { sim.crash(id, loud: true) }
                case 1: if sim.nodes[id] != nil { sim.crash(id, loud: false) }
                case 2: if sim.nodes[id] == nil { sim.start(id) }
                case 3: sim.pause(id, for: .milliseconds(Int64.random(in: 100...4000, using: &rng)))
                case 4:
                    let side = Set(sim.ids.filter { _ in Bool.random(using: &rng) })
                    sim.network.partition(side, Set(sim.ids).subtracting(side))
                case 5: sim.announce(id, healthy: Bool.random(using: &rng))
                case 6: sim.forge(by: id, about: sim.ids.randomElement(using: &rng)!, deathAtTheLimit: Bool.random(using: &rng))
                default: sim.network.cut = []
                }
                sim.run(for: .milliseconds(Int64.random(in: 100...4000, using: &rng)))
            }
            let violations = sim.violations.prefix(3)
            #expect(violations.isEmpty, "seed \(seed)")
            // Healed, with a majority of voters up: every running node agrees on who is alive and who leads.
            sim.network.heal()
            let down = sim.ids.filter { sim.nodes[$0] == nil }
            if down.count * 2 >= sim.ids.count {
                for id in down { sim.start(id) }
            }
            sim.run(for: .seconds(12))
            let (converged, why) = sim.converged()
            #expect(converged, "seed \(seed): not converged 12 s after healing: \(why)")
            let after = sim.violations.prefix(3)
            #expect(after.isEmpty, "seed \(seed)")
        }
    }

    /// docs/getting-started.md's growth from 3 voters to 5 done by hand, in any order: the new voters started with
    /// the new list, the old ones edited and restarted one at a time, with loss, duplication, pauses and a
    /// partition on the way. Each node counts majorities over its own list, so an old trio's 2 of 3 and a new
    /// trio's 3 of 5 could both hold; a node that sees a member announce another configuration neither campaigns
    /// nor grants, so there is never more than one leader, and once every list agrees one is elected.
    /// Mutations: `MeshNode.compareConfigurations` not suspending the lease — caught (every seed); comparing only
    /// the members alive in the view, not the last known configuration of each (persisted) — caught by seeds 1, 6,
    /// 8, 17 and 21 (a partition during the edit: the old pair 2 of 3 and the new trio 3 of 5 both elect).
    @Test(arguments: 0..<2)
    func growingFromThreeToFiveVotersByHandNeverMakesTwoLeaders(batch: UInt64) {
        let all = (1...5).map { MemberID("n\($0)") }
        let old = Array(all.prefix(3))
        for seed in (batch * 12)..<(batch * 12 + 12) {
            var rng = SplitMix64(seed: seed)
            var sim = MeshSimulation(
                size: 5, witness: false, seed: seed, memberLists: Dictionary(uniqueKeysWithValues: old.map { ($0, old) }),
                notStarted: Set(all.dropFirst(3)))
            sim.network.loss = [0, 0.05].randomElement(using: &rng)!
            sim.network.duplication = [0, 0.1].randomElement(using: &rng)!
            sim.run(for: .seconds(6))
            #expect(sim.converged().0, "seed \(seed): the old trio has no leader")
            var steps = all.shuffled(using: &rng)
            while let id = steps.popLast() {
                sim.reconfigure(id, members: all)
                switch Int.random(in: 0..<4, using: &rng) {
                case 0: sim.pause(all.randomElement(using: &rng)!, for: .milliseconds(Int64.random(in: 100...3000, using: &rng)))
                case 1:
                    let side = Set(all.filter { _ in Bool.random(using: &rng) })
                    sim.network.partition(side, Set(all).subtracting(side))
                default: break
                }
                sim.run(for: .milliseconds(Int64.random(in: 200...6000, using: &rng)))
                sim.network.heal()
            }
            #expect(sim.violations.prefix(3).isEmpty, "seed \(seed)")
            sim.run(for: .seconds(12))
            let (converged, why) = sim.converged()
            #expect(converged, "seed \(seed): five voters on one list, no leader 12 s later: \(why)")
            #expect(sim.violations.prefix(3).isEmpty, "seed \(seed)")
        }
    }

    @Test func aKilledLeaderIsReplacedAndEveryNodePublishesTheNewOne() {
        var sim = MeshSimulation(size: 3, witness: false, seed: 7)
        sim.run(for: .seconds(6))
        let (ok, before) = sim.converged()
        #expect(ok, "\(before)")
        let leader = sim.running.first { sim.nodes[$0]!.published.fence(now: sim.local($0)) != nil }!
        sim.crash(leader, loud: true)
        sim.run(for: .seconds(6))
        let (converged, after) = sim.converged()
        #expect(converged, "\(after)")
        for id in sim.running {
            let state = sim.nodes[id]!.published
            #expect(state.member(leader)?.status == .dead)
            #expect(state.lease.knownLeader(now: sim.local(id))?.id != leader)
        }
        let violations = sim.violations.prefix(3)
        #expect(violations.isEmpty)
    }
}
