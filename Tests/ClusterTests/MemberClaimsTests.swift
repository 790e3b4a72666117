import Cluster
import Deployment
import Membership
import PeerCore
import Testing

/// Members speak only for themselves: a member relaying another's state cannot change what that one says (its
/// app, image, rollout intent, origin certificate) unless the owner signed it; liveness stays anyone's to report.
/// Mutation: the check in `MeshNode.receive` off (every relayed claim taken) — caught here and by the
/// simulation's forging member (`MeshSimulationTests`, "took a forged claim"; it also forges deaths at the bound).
@Suite struct MemberClaimsTests {
    static let ids = GossipBoundsTests.ids

    static func node(_ id: MemberID) -> MeshNode { GossipBoundsTests.node(id) }

    /// n1 holding n3 first-hand: healthy on app:1 at incarnation 2.
    static func n1KnowingN3() -> (MeshNode, ClusterState.Member) {
        var n1 = node(ids[0])
        let n3 = MemberState(id: ids[2], address: "n3:7946", incarnation: 2, status: .alive, app: AppStatus(healthy: true, image: "app:1"))
        let envelope = MeshNode.Swim.Envelope(sender: n3, message: .ping(seq: 1), gossip: [])
        _ = n1.receive(.swim(envelope), from: ids[2], now: .zero + .milliseconds(5)) { _ in false }
        return (n1, n3)
    }

    /// n2 passes `claims` about n3 to n1.
    static func relay(
        _ claims: [ClusterState.Member], to n1: inout MeshNode, seq: UInt64, signed: (ClusterState.Member) -> Bool
    )
        -> [MeshNode.Directive]
    {
        let sender = MemberState<AppStatus>(id: ids[1], address: "n2:7946", incarnation: 1, status: .alive)
        let envelope = MeshNode.Swim.Envelope(sender: sender, message: .ping(seq: seq), gossip: claims)
        return n1.receive(.swim(envelope), from: ids[1], now: .zero + .milliseconds(10 + Int64(seq)), signed: signed)
    }

    @Test func aRelayedClaimIsTakenOnlyWithItsOwnersSignature() throws {
        var (n1, n3) = Self.n1KnowingN3()
        #expect(n1.state.member(Self.ids[2])?.app.image == "app:1", "first-hand, no signature needed")

        // n2 says n3 went unhealthy on another image and joined a rollout: not signed by n3, not taken.
        var forged = n3
        forged.incarnation = 3
        forged.app = AppStatus(healthy: false, image: "evil:1")
        forged.app.rollout = RolloutIntent(
            id: "r-evil", seq: 9, kind: .deploy, image: "evil:1", previousImage: nil, order: ["n1", "n2", "n3"], requestedBy: "n2",
            settleMs: 0, nodeTimeoutMs: 1_000)
        let refused = Self.relay([forged], to: &n1, seq: 2) { _ in false }
        #expect(refused.contains(.refused(Self.ids[2], relayedBy: Self.ids[1])))
        let held = try #require(n1.state.member(Self.ids[2]))
        #expect(held.app.image == "app:1" && held.app.healthy == true && held.app.rollout == nil && held.incarnation == 2)

        // Liveness is anyone's: a suspicion of n3, with what n3 said, is taken without a signature.
        var suspicion = n3
        suspicion.status = .suspect
        suspicion.suspectedBy = Self.ids[1]
        let taken = Self.relay([suspicion], to: &n1, seq: 3) { _ in false }
        #expect(!taken.contains { if case .refused = $0 { true } else { false } })
        #expect(n1.state.member(Self.ids[2])?.status == .suspect)

        // The same change signed by n3 (relayed after n3 announced it) is taken.
        let signed = forged
        _ = Self.relay([signed], to: &n1, seq: 4) { $0 == signed }
        #expect(n1.state.member(Self.ids[2])?.app.image == "evil:1")
        #expect(n1.state.member(Self.ids[2])?.incarnation == 3)
    }

    /// Only a member raises its incarnation: a relay that declares n3 dead at the highest incarnation receivers
    /// take (n3 could only refute past the bound, where nobody hears it) is not taken without n3's signature; and
    /// n1, told of itself at that incarnation, does not jump there. A state of its own a little above its
    /// incarnation (its previous run's, under a key since rotated) it still refutes; and a member's own state does
    /// not jump far first-hand without its signature. Mutations: the incarnation rule off (only a changed app needs
    /// a signature) — caught by the first expectation; no bound on the unsigned jump for its own state — caught by
    /// the second; the first-hand rule off — caught by the last and by `DatagramFuzzTests` (no convergence).
    @Test func aRelayCannotRaiseAMembersIncarnation() throws {
        var (n1, n3) = Self.n1KnowingN3()
        var death = n3
        death.incarnation = Counter.limit
        death.status = .dead
        _ = Self.relay([death], to: &n1, seq: 2) { _ in false }
        #expect(n1.state.member(Self.ids[2])?.incarnation == 2 && n1.state.member(Self.ids[2])?.status == .alive)

        let mine = try #require(n1.state.member(Self.ids[0]))
        var aboutN1 = mine
        aboutN1.incarnation = Counter.limit
        aboutN1.status = .dead
        _ = Self.relay([aboutN1], to: &n1, seq: 3) { _ in false }
        #expect(n1.state.member(Self.ids[0])?.incarnation == mine.incarnation, "refuted an unsigned state at the bound")
        var previousRun = mine
        previousRun.incarnation = mine.incarnation + 5
        previousRun.status = .dead
        _ = Self.relay([previousRun], to: &n1, seq: 4) { _ in false }
        #expect(n1.state.member(Self.ids[0])?.incarnation == mine.incarnation + 6, "a previous run's death is refuted")

        // Nor does a member jump far first-hand without its signature (its shell signs every state of its own): n1
        // would hold an incarnation n3 itself never refutes.
        var jump = n3
        jump.incarnation = Counter.limit
        let envelope = MeshNode.Swim.Envelope(sender: jump, message: .ping(seq: 9), gossip: [])
        _ = n1.receive(.swim(envelope), from: Self.ids[2], now: .zero + .milliseconds(40)) { _ in false }
        #expect(n1.state.member(Self.ids[2])?.incarnation == 2)
    }
}
