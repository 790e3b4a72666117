import Cluster
import Deployment
import Leadership
import Membership
import PeerCore
import Testing

@Suite struct ClusterStateTests {
    let me = MemberID("web-1")

    func state(holding: Lease.View.Holding?) -> ClusterState {
        var lease = Lease.View(me: me, voters: [me, MemberID("web-2"), MemberID("web-3")], promised: 4)
        lease.holding = holding
        return ClusterState(
            me: me, members: [ClusterState.Member(id: me, address: "web-1:7946")], appNodes: [me], lease: lease,
            startedAt: .zero, startupGrace: .seconds(5))
    }

    @Test func theFenceHoldsOnlyWhileTheLeaseHasEnoughLeft() {
        let state = state(holding: .init(term: 4, validUntil: Instant(nanoseconds: 2_000_000_000), confirmedAt: .zero))
        #expect(state.fence(now: Instant(nanoseconds: 500_000_000))?.term == 4)
        #expect(state.fence(now: Instant(nanoseconds: 500_000_000))?.remaining == Duration.milliseconds(1500))
        #expect(state.fence(now: Instant(nanoseconds: 1_500_000_000), atLeast: .milliseconds(900)) == nil)
        #expect(state.fence(now: Instant(nanoseconds: 2_000_000_000)) == nil)
        #expect(self.state(holding: nil).fence(now: .zero) == nil)
    }

    @Test func aGrantToAnotherNamesTheLeaderUntilItRunsOut() {
        var state = state(holding: nil)
        state.lease.grant = .init(to: MemberID("web-2"), term: 5, until: Instant(nanoseconds: 1_000))
        #expect(state.lease.knownLeader(now: .zero)?.id == MemberID("web-2"))
        #expect(state.lease.knownLeader(now: Instant(nanoseconds: 1_000)) == nil)
        // A grant to itself that did not make it leader names nobody.
        state.lease.grant = .init(to: me, term: 5, until: Instant(nanoseconds: 1_000))
        #expect(state.lease.knownLeader(now: .zero) == nil)
    }

    @Test func theStateSettlesAfterTheStartupGrace() {
        let state = state(holding: nil)
        #expect(!state.settled(now: Instant(nanoseconds: 5_500_000_000), margin: .seconds(1)))
        #expect(state.settled(now: Instant(nanoseconds: 6_000_000_000), margin: .seconds(1)))
    }
}

@Suite struct AppHealthDebounceTests {
    @Test func oneSlowAnswerIsNotAnOutageButThreeAre() {
        var debounce = AppHealthDebounce()
        let healthy = AppReport(healthy: true, image: "app:1")
        let failing = AppReport(healthy: false, image: "app:1")
        var announced = debounce.next(observed: healthy, announced: .none)
        #expect(announced.healthy == true)
        announced = debounce.next(observed: failing, announced: announced)
        #expect(announced.healthy == true)
        announced = debounce.next(observed: failing, announced: announced)
        #expect(announced.healthy == true)
        announced = debounce.next(observed: failing, announced: announced)
        #expect(announced.healthy == false)
        // Back at the first good answer.
        #expect(debounce.next(observed: healthy, announced: announced).healthy == true)
    }

    @Test func aNewImageThatFailsIsAnnouncedAtOnce() {
        var debounce = AppHealthDebounce()
        let announced = debounce.next(observed: AppReport(healthy: true, image: "app:1"), announced: .none)
        #expect(debounce.next(observed: AppReport(healthy: false, image: "app:2"), announced: announced).healthy == false)
    }

    @Test func aFailureCountBrokenByAGoodAnswerStartsOver() {
        var debounce = AppHealthDebounce()
        var announced = debounce.next(observed: AppReport(healthy: true, image: "app:1"), announced: .none)
        for observed in [false, false, true, false, false] {
            announced = debounce.next(observed: AppReport(healthy: observed, image: "app:1"), announced: announced)
        }
        #expect(announced.healthy == true)
    }
}
