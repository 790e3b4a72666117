import Membership
import PeerCore
import Testing

/// One instance, driven message by message.
@Suite struct SWIMTests {
    let a = MemberID("a"), b = MemberID("b"), c = MemberID("c")
    var seeds: [(MemberID, String)] { [(a, "a:1"), (b, "b:1"), (c, "c:1")] }

    func node(_ id: MemberID) -> SWIM {
        SWIM(me: id, address: "\(id):1", seeds: seeds, settings: .lan, seed: 1, now: .zero)
    }

    func sends(_ directives: [SWIM.Directive]) -> [(MemberID, SWIM.Envelope)] {
        directives.compactMap { if case .send(let to, _, let e) = $0 { (to, e) } else { nil } }
    }

    @Test func pingIsAckedWithTheSameSequenceNumber() {
        var swim = node(a)
        let other = node(b)
        let out = sends(swim.receive(SWIM.Envelope(sender: other.me, message: .ping(seq: 42), gossip: []), from: b, now: .zero))
        #expect(out.count == 1)
        #expect(out.first?.0 == b)
        #expect(out.first?.1.message == .ack(seq: 42, target: a))
    }

    @Test func messagesThatLieAboutTheSenderOrComeFromStrangersAreIgnored() {
        var swim = node(a)
        let claimsToBeC = node(c).me
        #expect(swim.receive(SWIM.Envelope(sender: claimsToBeC, message: .ping(seq: 1), gossip: []), from: b, now: .zero).isEmpty)
        let stranger = SWIM(me: MemberID("x"), address: "x:1", seeds: seeds, settings: .lan, seed: 1, now: .zero)
        #expect(swim.receive(SWIM.Envelope(sender: stranger.me, message: .ping(seq: 1), gossip: []), from: MemberID("x"), now: .zero).isEmpty)
        #expect(swim.state(of: MemberID("x")) == nil)
    }

    /// An incarnation of `UInt64.max` (a broken or hostile member's) would make the refutation's `+ 1` trap and
    /// crash every node that hears it: such a sender or rumour is ignored.
    @Test func absurdIncarnationsAreIgnored() {
        var swim = node(a)
        let before = swim.me.incarnation
        var hostile = node(b).me
        hostile.incarnation = .max
        #expect(swim.receive(SWIM.Envelope(sender: hostile, message: .ping(seq: 1), gossip: []), from: b, now: .zero).isEmpty)
        let rumour = MemberState(id: a, address: "a:1", incarnation: .max, status: .suspect, suspectedBy: c)
        _ = swim.receive(SWIM.Envelope(sender: node(b).me, message: .ping(seq: 2), gossip: [rumour]), from: b, now: .zero)
        #expect(swim.me.incarnation == before && swim.me.status == .alive)
        let aboutC = MemberState(id: c, address: "c:1", incarnation: Counter.limit + 1, status: .dead)
        _ = swim.receive(SWIM.Envelope(sender: node(b).me, message: .ping(seq: 3), gossip: [aboutC]), from: b, now: .zero)
        #expect(swim.state(of: c)?.status != .dead)
    }

    @Test func aSuspectedMemberRefutesWithAHigherIncarnation() {
        var swim = node(a)
        let before = swim.me.incarnation
        let rumour = MemberState(id: a, address: "a:1", incarnation: before, status: .suspect, suspectedBy: c)
        let directives = swim.receive(SWIM.Envelope(sender: node(b).me, message: .ping(seq: 1), gossip: [rumour]), from: b, now: .zero)
        #expect(swim.me.incarnation == before + 1)
        #expect(swim.me.status == .alive)
        // The ack carries the refutation.
        #expect(sends(directives).first?.1.sender.incarnation == before + 1)
    }

    @Test func unansweredProbeLeadsToSuspicionThenDeath() {
        var swim = node(a)
        var now = Instant.zero
        var changes: [MemberState] = []
        while now < Instant.zero + .seconds(15) {  // 5 s of start-up grace, then probe and suspicion
            for case .changed(let state, _) in swim.tick(now: now) { changes.append(state) }
            now = now + .milliseconds(20)
        }
        #expect(changes.contains { $0.id == b && $0.status == .suspect })
        #expect(swim.state(of: b)?.status == .dead)
        #expect(swim.state(of: c)?.status == .dead)
    }
}
