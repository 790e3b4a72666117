import Deployment
import PeerCore
import Testing

/// One ``RolloutNode``'s rules, event by event (the simulation checks them together, under faults).
@Suite struct RolloutNodeTests {
    static let order = ["n1", "n2", "n3"]
    static let at = Instant(nanoseconds: 10_000_000_000)

    static func request(_ id: String, _ image: String?) -> RolloutNode.Request {
        RolloutNode.Request(id: id, image: image, requestedBy: "test", settleMs: 0, nodeTimeoutMs: 60_000)
    }

    static func member(_ name: String, _ intent: RolloutIntent?, _ phase: RolloutReport.Phase?, alive: Bool = true) -> RolloutNode.Member {
        RolloutNode.Member(
            name: name, alive: alive, intent: intent, report: phase.flatMap { p in intent.map { RolloutReport(intent: $0.id, phase: p) } })
    }

    /// As n2 or n3 sees it (n1 leads, as these tests' leader) or as n1 does.
    static func view(_ members: [RolloutNode.Member], term: UInt64 = 1, at offset: Int64 = 0, leader: String? = "n1") -> RolloutNode.View {
        RolloutNode.View(members: members, term: term, settled: true, now: at + .milliseconds(offset), leader: leader)
    }

    /// The leader's node with a proposed intent, and the intent.
    static func leader(_ image: String = "app:2") throws -> (RolloutNode, RolloutIntent) {
        var node = RolloutNode(me: "n1")
        let members = order.map { member($0, nil, nil) }
        let (intent, _) = try node.propose(request("r1", image), term: 1, serving: "app:1", previous: nil, view: view(members))
        return (node, intent)
    }

    static func swaps(_ directives: [RolloutNode.Directive]) -> [RolloutNode.Swap] {
        directives.compactMap { if case .startSwap(let s) = $0 { s } else { nil } }
    }

    @Test func noNodeSwapsBeforeAMajorityHoldsTheIntent() throws {
        var (node, intent) = try Self.leader()
        #expect(intent.term == 1 && intent.seq == 1 && intent.previousImage == "app:1" && intent.order == Self.order)
        // Only the leader holds it: n1, first in the order, waits.
        #expect(
            Self.swaps(node.step(Self.view([Self.member("n1", intent, .waiting), Self.member("n2", nil, nil), Self.member("n3", nil, nil)]))).isEmpty)
        #expect(!node.committed)
        // n2 has it too: 2 of 3, a majority.
        let started = Self.swaps(
            node.step(Self.view([Self.member("n1", intent, .waiting), Self.member("n2", intent, .waiting), Self.member("n3", nil, nil)])))
        #expect(node.committed && started == [RolloutNode.Swap(intent: "r1", image: "app:2", phase: .swapping)])
    }

    static func dropped(_ directives: [RolloutNode.Directive]) -> Bool {
        directives.contains { if case .dropped = $0 { true } else { false } }
    }

    /// At start several nodes campaign; the winner renews above the term a voter promised a rival whose campaign
    /// lost (1 → 3). Its intent, not yet held by a majority, goes on under the new term — on the leader and on
    /// the others — instead of being dropped as one of a leadership that ended (a new cluster's first deploy
    /// failed "not replicated" this way). Mutation checked: no move to the new term → the leader drops it.
    @Test func aLeaderRenewedUnderAHigherTermKeepsItsIntent() throws {
        var (leader, intent) = try Self.leader()
        let deposed = leader
        var renewedView = Self.view([Self.member("n1", intent, .waiting), Self.member("n2", nil, nil), Self.member("n3", nil, nil)], term: 3)
        renewedView.leading = RolloutNode.Leadership(term: 3, since: 1)
        let directives = leader.step(renewedView)
        #expect(!Self.dropped(directives), "\(directives)")
        let renewed = try #require(leader.intent)
        #expect(renewed.id == "r1" && renewed.term == 3 && renewed.seq == intent.seq)
        // A follower that holds it under term 1 takes the renewed copy; one that knew term 3 first and so did not
        // take the old copy takes the renewed one.
        var follower = RolloutNode(me: "n2")
        _ = follower.step(Self.view([Self.member("n1", intent, .waiting), Self.member("n2", nil, nil), Self.member("n3", nil, nil)]))
        #expect(follower.intent == intent)
        let took = follower.step(
            Self.view([Self.member("n1", renewed, .waiting), Self.member("n2", intent, .waiting), Self.member("n3", nil, nil)], term: 3))
        #expect(follower.intent == renewed && !Self.dropped(took))
        var late = RolloutNode(me: "n3")
        _ = late.step(Self.view([Self.member("n1", intent, .waiting), Self.member("n2", nil, nil), Self.member("n3", nil, nil)], term: 3))
        #expect(late.intent == nil, "an intent of an older term that no majority holds is not taken up")
        _ = late.step(Self.view([Self.member("n1", renewed, .waiting), Self.member("n2", renewed, .waiting), Self.member("n3", nil, nil)], term: 3))
        #expect(late.intent == renewed)
        // A node that no longer leads, under the same view, drops its intent as before; and one that lost its lease
        // and leads again, in a leadership that began under term 3, does not bring back its intent of term 1.
        let onlyMine = [Self.member("n1", intent, .waiting), Self.member("n2", nil, nil), Self.member("n3", nil, nil)]
        var former = deposed
        #expect(Self.dropped(former.step(Self.view(onlyMine, term: 3))))
        var again = deposed
        var newLeadership = Self.view(onlyMine, term: 3)
        newLeadership.leading = RolloutNode.Leadership(term: 3, since: 3)
        #expect(Self.dropped(again.step(newLeadership)) && again.intent == nil)
    }

    @Test func theLeaderRefusesASecondRequestWhileOneRuns() throws {
        var (node, intent) = try Self.leader()
        let members = [Self.member("n1", intent, .waiting), Self.member("n2", intent, .waiting), Self.member("n3", intent, .waiting)]
        #expect(throws: RolloutNode.Refusal.self) {
            _ = try node.propose(Self.request("r2", "app:3"), term: 1, serving: "app:1", previous: nil, view: Self.view(members))
        }
        // Once it has succeeded, the next one follows it: the image before is the one it rolled out.
        // n1's own part: its swap, then the others'.
        let swap = try #require(Self.swaps(node.step(Self.view(members))).first)
        _ = node.swapFinished(swap, succeeded: true, reason: nil)
        let done = [Self.member("n1", intent, .done), Self.member("n2", intent, .done), Self.member("n3", intent, .done)]
        _ = node.step(Self.view(done))
        let (next, _) = try node.propose(Self.request("r2", "app:3"), term: 2, serving: "app:2", previous: nil, view: Self.view(done))
        // A new term orders after every intent of the old one; its numbers start over.
        #expect(next.seq == 1 && next.term == 2 && next.isNewer(than: intent) && next.previousImage == "app:2" && next.olderImage == "app:1")
    }

    /// Numbers from the network past ``Counter/limit`` are not taken: the next intent's `+ 1` never traps.
    @Test func absurdSequenceNumbersNeitherTrapNorWin() throws {
        let (_, intent) = try Self.leader()
        var hostile = intent
        hostile.id = "zz"
        hostile.seq = .max
        hostile.term = .max
        var node = RolloutNode(me: "n2")
        _ = node.step(Self.view([Self.member("n1", hostile, .waiting), Self.member("n3", hostile, .waiting)], term: 1))
        #expect(node.intent == nil)
        var sameTerm = hostile
        sameTerm.term = 1
        var leader = RolloutNode(me: "n1")
        let members = [Self.member("n1", nil, nil), Self.member("n2", sameTerm, nil), Self.member("n3", nil, nil)]
        #expect(throws: RolloutNode.Refusal.sequenceExhausted) {
            _ = try leader.propose(Self.request("r1", "app:2"), term: 1, serving: "app:1", previous: nil, view: Self.view(members))
        }
        // The next term starts over.
        let (next, _) = try leader.propose(Self.request("r1", "app:2"), term: 2, serving: "app:1", previous: nil, view: Self.view(members))
        #expect(next.seq == 1 && next.term == 2)
    }

    @Test func aNewerIntentIsTakenUpOnlyOnceTheSwapHasEndedAndTheResultIsFiledUnderItsOwn() throws {
        let (_, first) = try Self.leader()
        var node = RolloutNode(me: "n1")
        let started = Self.swaps(node.step(Self.view([Self.member("n2", first, .waiting), Self.member("n3", first, .waiting)])))
        #expect(started.count == 1)
        var second = first
        second.id = "r2"
        second.seq = 2
        second.term = 2
        second.image = "app:3"
        _ = node.step(Self.view([Self.member("n2", second, .waiting), Self.member("n3", second, .waiting)], term: 2))
        #expect(node.intent?.id == "r1", "taken up in the middle of a swap")
        _ = node.swapFinished(started[0], succeeded: true, reason: nil)
        #expect(node.report == RolloutReport(intent: "r1", phase: .done))
        _ = node.step(Self.view([Self.member("n2", second, .waiting), Self.member("n3", second, .waiting)], term: 2))
        #expect(node.intent?.id == "r2" && node.report?.intent == "r2")
        // A result that arrives for another swap changes nothing.
        let before = node.report
        _ = node.swapFinished(RolloutNode.Swap(intent: "r1", image: "app:2", phase: .swapping), succeeded: false, reason: "late")
        #expect(node.report == before)
    }

    @Test func anIntentOfAnEndedLeadershipThatNoMajorityHoldsIsNotTakenUp() throws {
        let (_, zombie) = try Self.leader()
        var node = RolloutNode(me: "n2")
        // Its leader's term was 1; this node knows term 2 — and only the old leader holds it.
        _ = node.step(Self.view([Self.member("n1", zombie, .waiting), Self.member("n3", nil, nil)], term: 2))
        #expect(node.intent == nil)
        // Held by a majority: it is the cluster's, whatever its term.
        _ = node.step(Self.view([Self.member("n1", zombie, .waiting), Self.member("n3", zombie, .waiting)], term: 2))
        #expect(node.intent?.id == zombie.id)
    }

    @Test func aRestartDropsAnIntentNeverSeenReplicatedAndSettlesAnInterruptedSwap() throws {
        let (leader, intent) = try Self.leader()
        let (dropped, directives) = RolloutNode.restart(me: "n1", persisted: leader.persisted, serving: "app:1")
        #expect(dropped.intent == nil && directives.contains { if case .dropped = $0 { true } else { false } })

        var swapping = RolloutNode.Persisted(intent: intent, report: RolloutReport(intent: intent.id, phase: .swapping), committed: true)
        #expect(RolloutNode.restart(me: "n1", persisted: swapping, serving: "app:2").0.report?.phase == .done)
        #expect(RolloutNode.restart(me: "n1", persisted: swapping, serving: "app:1").0.report?.phase == .waiting)
        swapping.report?.phase = .rollingBack
        #expect(RolloutNode.restart(me: "n1", persisted: swapping, serving: "app:1").0.report?.phase == .rolledBack)
    }

    /// Intents are the leader's: a member that gossips a new intent of its own (any image, cluster-wide), or a
    /// cancellation of the running one, is not followed; the leader is, and so is a copy a majority of the intent's
    /// nodes hold (a node catching up after the leader that made it is gone), and so is the cancellation by the leader
    /// that made it, after it lost its lease. Mutations: every member's copy taken (`RolloutNode.authoritative`
    /// without the leader and majority checks) — caught by each refusal below; the majority counted over the copy's
    /// own `order` — caught by the order of one; the proposer's cancellation not taken — caught.
    @Test func onlyTheLeaderOrAMajorityIsFollowed() throws {
        let (_, intent) = try Self.leader()
        var rogue = intent
        rogue.id = "r-evil"
        rogue.image = "evil:1"
        rogue.seq = 50
        rogue.term = 9
        // n3 makes its own intent: n2 (whose leader is n1) does not take it — nor when n3 names itself alone as the
        // order (a majority of that order would be n3 itself).
        var n2 = RolloutNode(me: "n2")
        _ = n2.step(Self.view([Self.member("n1", nil, nil), Self.member("n2", nil, nil), Self.member("n3", rogue, .waiting)], term: 1))
        #expect(n2.intent == nil)
        var alone = rogue
        alone.order = ["n3"]
        _ = n2.step(Self.view([Self.member("n1", nil, nil), Self.member("n2", nil, nil), Self.member("n3", alone, .waiting)], leader: nil))
        #expect(n2.intent == nil, "an intent whose order is its sender alone")
        // The leader's is taken.
        _ = n2.step(Self.view([Self.member("n1", intent, .waiting), Self.member("n2", nil, nil), Self.member("n3", rogue, .waiting)]))
        #expect(n2.intent == intent)
        // n3 cancels it on its own: not taken; the leader's cancellation is.
        var cancelled = intent
        cancelled.cancelled = "n3 says so"
        let held = [Self.member("n2", intent, .waiting)]
        _ = n2.step(Self.view([Self.member("n1", intent, .waiting)] + held + [Self.member("n3", cancelled, .waiting)]))
        #expect(n2.intent == intent)
        var stopped = intent
        stopped.cancelled = "not replicated in time"
        var n2Later = n2
        _ = n2.step(Self.view([Self.member("n1", stopped, .waiting)] + held + [Self.member("n3", intent, .waiting)]))
        #expect(n2.intent?.cancelled == "not replicated in time")
        // The leader that made it cancels it after losing its lease: its cancellation still stands — but only that:
        // a "cancellation" of its that also changes where the nodes go back to, or outranks every later intent, is not.
        var rewritten = stopped
        rewritten.previousImage = "evil:0"
        var outranking = stopped
        outranking.term = Counter.limit
        for forged in [rewritten, outranking] {
            var copy = n2Later
            _ = copy.step(Self.view([Self.member("n1", forged, .waiting)] + held + [Self.member("n3", intent, .waiting)], leader: nil))
            #expect(copy.intent == intent, "\(forged)")
        }
        _ = n2Later.step(Self.view([Self.member("n1", stopped, .waiting)] + held + [Self.member("n3", intent, .waiting)], leader: nil))
        #expect(n2Later.intent?.cancelled == "not replicated in time")
        // No leader known (it died): a copy that two of the three nodes hold is taken by the third, one that only
        // one node holds is not.
        var n3 = RolloutNode(me: "n3")
        _ = n3.step(Self.view([Self.member("n1", nil, nil), Self.member("n2", intent, .waiting), Self.member("n3", nil, nil)], leader: nil))
        #expect(n3.intent == nil)
        _ = n3.step(Self.view([Self.member("n1", intent, .done), Self.member("n2", intent, .waiting), Self.member("n3", nil, nil)], leader: nil))
        #expect(n3.intent == intent)
    }

    @Test func aCancelledIntentSendsTheNodesItReachedBack() throws {
        var (leader, intent) = try Self.leader()
        let members = [Self.member("n1", intent, .done), Self.member("n2", intent, .waiting), Self.member("n3", intent, .waiting)]
        let cancelling = leader.cancel(intent.id, reason: "cancelled by test", members: members)
        let directives = try #require(cancelling)
        guard case .announce(let cancelled?, _) = directives.last else {
            Issue.record("no announcement: \(directives)")
            return
        }
        #expect(cancelled.cancelled == "cancelled by test" && cancelled.isNewer(than: intent))

        var done = RolloutNode(me: "n1")
        _ = done.step(Self.view([Self.member("n2", intent, .waiting), Self.member("n3", intent, .waiting)]))
        let again = Self.swaps(done.step(Self.view([Self.member("n2", intent, .waiting), Self.member("n3", intent, .waiting)])))
        let swap = try #require(again.first ?? done.swap)
        _ = done.swapFinished(swap, succeeded: true, reason: nil)
        let back = Self.swaps(done.step(Self.view([Self.member("n2", cancelled, .waiting), Self.member("n3", cancelled, .waiting)])))
        #expect(back == [RolloutNode.Swap(intent: intent.id, image: "app:1", phase: .rollingBack)])
        var waiting = RolloutNode(me: "n3")
        _ = waiting.step(Self.view([Self.member("n1", cancelled, .done), Self.member("n2", cancelled, .waiting)]))
        #expect(waiting.report?.phase == .rolledBack)
        #expect(
            Rollout.outcome(
                intent: cancelled, reports: ["n1": .init(intent: "r1", phase: .rolledBack), "n2": .init(intent: "r1", phase: .rolledBack)])
                == .cancelled(reason: "cancelled by test"))
    }
}
