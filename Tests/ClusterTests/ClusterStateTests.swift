import Cluster
import DNSPlanning
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

    /// With `public_address` in the member list, a member's DNS record points where the configuration says,
    /// whatever the member (or anyone relaying for it) announces; without it, at what the member announces.
    @Test func dnsAddressesComeFromTheConfigurationWhenItGivesThem() {
        let node = MeshNode(
            me: me,
            members: [
                .init(id: me, address: "10.0.0.1:7946", appNode: true, publicAddress: "203.0.113.1"),
                .init(id: MemberID("web-2"), address: "10.0.0.2:7946", appNode: true, publicAddress: "203.0.113.2"),
                .init(id: MemberID("web-3"), address: "10.0.0.3:7946", appNode: true),
            ],
            swim: .lan, lease: .profile("lan"), promised: 0, seed: 1, now: .zero)
        var state = node.state
        #expect(state.publicAddresses == [me: "203.0.113.1", MemberID("web-2"): "203.0.113.2"])
        for i in state.members.indices {
            state.members[i].app.healthy = true
            state.members[i].app.address = "198.51.100.66"  // what a liar would announce
        }
        let addresses = Dictionary(uniqueKeysWithValues: state.dnsView(now: .zero).members.map { ($0.name, $0.address) })
        #expect(addresses == ["web-1": "203.0.113.1", "web-2": "203.0.113.2", "web-3": "198.51.100.66"])
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
