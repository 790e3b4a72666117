import Cluster
import Deployment
import Foundation
import Leadership
import Membership
import PeerCore
import Testing

/// What a member gossips has a size: a failure reason of a megabyte (a crash that printed it, a hostile member)
/// must not push a node's datagrams past what receivers accept (60,000 bytes), or it looks dead and leaves DNS.
@Suite struct GossipBoundsTests {
    static let ids = ["n1", "n2", "n3"].map(MemberID.init)

    static func node(_ id: MemberID) -> MeshNode {
        MeshNode(
            me: id, members: ids.map { MeshNode.Member(id: $0, address: "\($0.name):7946", appNode: true) }, swim: .lan, lease: .profile("lan"),
            promised: 0, seed: 7, now: .zero)
    }

    static let megabyte = String(repeating: "panic: out of memory\n", count: 50_000)

    static func hugeStatus() -> AppStatus {
        var status = AppStatus(
            healthy: false, image: "registry.example/shop:v2", address: "203.0.113.1",
            lastDeploy: DeployMark(id: "d1", kind: "deploy", image: "registry.example/shop:v2", state: "failed", reason: megabyte))
        status.rolloutReport = RolloutReport(intent: "r1", phase: .failed, reason: megabyte)
        return status
    }

    /// Every datagram `directives` send, as JSON.
    static func sent(_ directives: [MeshNode.Directive]) throws -> [Data] {
        try directives.compactMap {
            guard case .send(let datagram, _) = $0 else { return nil }
            return try JSONEncoder().encode(datagram)
        }
    }

    @Test func aMegabyteReasonIsCutBeforeItIsGossipedAndEveryDatagramStaysSmall() throws {
        var n1 = Self.node(Self.ids[0])
        _ = n1.announce(Self.hugeStatus(), now: .zero)
        let mine = try #require(n1.state.members.first { $0.id == Self.ids[0] })
        #expect(mine.app.lastDeploy?.reason?.utf8.count ?? 0 <= AppStatus.maximumText)
        #expect(mine.app.lastDeploy?.reason?.hasPrefix("panic: out of memory") == true, "the start of the reason is kept")
        #expect(mine.app.rolloutReport?.reason?.hasSuffix("…") == true)
        // Every datagram it sends for a while, full syncs included, is far below the receivers' limit.
        var largest = 0
        var now = Instant.zero
        for _ in 0..<100 {
            now = now + .milliseconds(100)
            largest = max(largest, try Self.sent(n1.tick(now: now)).map(\.count).max() ?? 0)
        }
        #expect(largest > 0)
        #expect(largest < 8_000, "a datagram of \(largest) bytes")
    }

    @Test func aHugeStateGossipedAboutAnotherMemberIsCutWhereItIsTaken() throws {
        var n1 = Self.node(Self.ids[0])
        var n2 = Self.node(Self.ids[1])
        // n1 sends a ping whose gossip carries a doctored state of n3 (a hostile or broken member's).
        var hostile = Self.node(Self.ids[0])
        _ = hostile.announce(.none, now: .zero)
        var now = Instant.zero
        var ping: MeshNode.Datagram?
        while ping == nil {
            now = now + .milliseconds(50)
            for case .send(let datagram, let to) in n1.tick(now: now) where to == Self.ids[1] { ping = datagram }
        }
        guard case .swim(var envelope) = try #require(ping) else { Issue.record("not a SWIM datagram"); return }
        var forged = MemberState<AppStatus>(id: Self.ids[2], address: "n3:7946", incarnation: 50, status: .alive, app: Self.hugeStatus())
        forged.app.rolloutReport?.reason = Self.megabyte
        envelope.gossip.append(forged)
        // Signed by n3, as far as n2 can tell: the bounds apply to what is taken.
        _ = n2.receive(.swim(envelope), from: Self.ids[0], now: now) { _ in true }
        let taken = try #require(n2.state.members.first { $0.id == Self.ids[2] })
        #expect(taken.incarnation == 50)
        #expect(taken.app.rolloutReport?.reason?.utf8.count ?? .max <= AppStatus.maximumText)
        #expect(taken.app.lastDeploy?.reason?.utf8.count ?? .max <= AppStatus.maximumText)
    }

    /// A witness holds no secrets and never leads: a rollout intent, an address for DNS or an origin certificate
    /// it announces (broken or hostile) is not taken; its liveness is.
    @Test func aWitnessAnnouncesNothingButItsLiveness() throws {
        let members = [
            MeshNode.Member(id: MemberID("n1"), address: "n1:7946", appNode: true),
            MeshNode.Member(id: MemberID("n2"), address: "n2:7946", appNode: true),
            MeshNode.Member(id: MemberID("w"), address: "w:7946", appNode: false),
        ]
        func node(_ name: String) -> MeshNode {
            MeshNode(me: MemberID(name), members: members, swim: .lan, lease: .profile("lan"), promised: 0, seed: 3, now: .zero)
        }
        var witness = node("w")
        var n1 = node("n1")
        var status = AppStatus(healthy: true, image: "evil:1", address: "198.51.100.66")
        status.rollout = RolloutIntent(
            id: "r-evil", seq: 9, kind: .deploy, image: "evil:1", previousImage: nil, order: ["n1", "n2"], requestedBy: "w", settleMs: 0,
            nodeTimeoutMs: 1000)
        status.origin = OriginMark(fingerprint: "00ff00ff00ff00ff", setAt: .max / 2, notAfter: .max / 2)
        var now = Instant.zero
        var datagrams = witness.announce(status, now: now)
        while !datagrams.contains(where: { if case .send(_, let to) = $0 { to == MemberID("n1") } else { false } }) {
            now = now + .milliseconds(50)
            datagrams = witness.tick(now: now)
        }
        for case .send(let datagram, let to) in datagrams where to == MemberID("n1") {
            _ = n1.receive(datagram, from: MemberID("w"), now: now) { _ in true }
        }
        let seen = try #require(n1.state.member(MemberID("w")))
        #expect(seen.status == .alive)
        #expect(seen.app.rollout == nil && seen.app.address == nil && seen.app.origin == nil && seen.app.image == nil)
    }

    /// A rolling upgrade: an older peerd relays this node's state without the fields it does not know (the
    /// configuration digest). That copy, under this node's current incarnation, is not a previous life's state:
    /// refuting it would raise the incarnation every gossip round for as long as the older node runs.
    @Test func itsOwnStateRelayedWithoutTheConfigurationIsNotRefuted() throws {
        let members = Self.ids.map { MeshNode.Member(id: $0, address: "\($0.name):7946", appNode: true) }
        var n1 = MeshNode(
            me: Self.ids[0], members: members, swim: .lan, lease: .profile("lan"), promised: 0, seed: 5, now: .zero, configuration: "abc")
        _ = n1.announce(AppStatus(healthy: true, image: "app:1", address: "203.0.113.1"), now: .zero)
        let mine = try #require(n1.state.member(Self.ids[0]))
        var relayed = mine
        relayed.app.configuration = nil
        let envelope = MeshNode.Swim.Envelope(
            sender: MemberState(id: Self.ids[1], address: "n2:7946", incarnation: 1, status: .alive), message: .ping(seq: 1), gossip: [relayed])
        _ = n1.receive(.swim(envelope), from: Self.ids[1], now: .zero + .milliseconds(10)) { _ in true }
        #expect(n1.state.member(Self.ids[0])?.incarnation == mine.incarnation, "a stripped copy of its own state was refuted")
        // A copy that really differs (another image under the same incarnation: a previous life) still is.
        var previousLife = mine
        previousLife.app.image = "app:0"
        let second = MeshNode.Swim.Envelope(
            sender: MemberState(id: Self.ids[1], address: "n2:7946", incarnation: 1, status: .alive), message: .ping(seq: 2),
            gossip: [previousLife])
        _ = n1.receive(.swim(second), from: Self.ids[1], now: .zero + .milliseconds(20)) { _ in true }
        #expect((n1.state.member(Self.ids[0])?.incarnation ?? 0) > mine.incarnation)
    }

    @Test func textIsCutBetweenCharactersFromTheStartOrTheEnd() {
        #expect("short".cut(toBytes: 10) == "short")
        let cut = "ééééé".cut(toBytes: 8)  // 2 bytes each: 2 fit before the 3-byte "…"
        #expect(cut == "éé…")
        #expect("line 1\nline 2\nline 3".tail(bytes: 10) == "…\nline 3")
        #expect(String(repeating: "x", count: 10_000).tail(bytes: 100).utf8.count == 100)
    }
}
