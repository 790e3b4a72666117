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
        for seed in (batch * 60)..<(batch * 60 + 60) {
            var rng = SplitMix64(seed: seed)
            var sim = MeshSimulation(size: Int.random(in: 2...5, using: &rng), witness: Bool.random(using: &rng), seed: seed)
            sim.network.loss = [0, 0.05, 0.2].randomElement(using: &rng)!
            sim.network.duplication = [0, 0.1].randomElement(using: &rng)!
            sim.run(for: .seconds(6))
            for _ in 0..<Int.random(in: 1...5, using: &rng) {
                let id = sim.ids.randomElement(using: &rng)!
                switch Int.random(in: 0..<7, using: &rng) {
                case 0: if sim.nodes[id] != nil { sim.crash(id, loud: true) }
                case 1: if sim.nodes[id] != nil { sim.crash(id, loud: false) }
                case 2: if sim.nodes[id] == nil { sim.start(id) }
                case 3: sim.pause(id, for: .milliseconds(Int64.random(in: 100...4000, using: &rng)))
                case 4:
                    let side = Set(sim.ids.filter { _ in Bool.random(using: &rng) })
                    sim.network.partition(side, Set(sim.ids).subtracting(side))
                case 5: sim.announce(id, healthy: Bool.random(using: &rng))
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
