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

    /// `peerctl node remove`: the member leaves the membership, and its DNS record goes with it — nobody else would
    /// take it away once it is no member (a record whose comment names no member is left alone). Added again, it is
    /// a member like any other.
    @Test func aMemberTakenOutOfTheClusterLosesItsRecord() {
        let web2 = MemberID("web-2")
        let first = Configuration.initial([
            .init(id: me, address: "10.0.0.1:7946", appNode: true),
            .init(id: web2, address: "10.0.0.2:7946", appNode: true, publicAddress: "203.0.113.2"),
            .init(id: MemberID("web-3"), address: "10.0.0.3:7946", appNode: true),
        ])
        #expect(first.removed == nil)
        let without = first.next(members: first.members.filter { $0.id != web2 }, term: 4)
        #expect(without.epoch == 2 && without.removed?.map(\.id) == [web2])
        #expect(without.removed?.first?.publicAddress == "203.0.113.2")

        var state = state(holding: .init(term: 4, validUntil: Instant(nanoseconds: 2_000_000_000), confirmedAt: .zero))
        state.members[0].app.healthy = true
        state.members[0].app.address = "203.0.113.1"
        state.configuration = without
        let view = state.dnsView(now: .zero)
        #expect(view.members.contains(DNSMember(name: "web-2", address: "203.0.113.2", serving: false)), "\(view.members)")
        var planner = DNSPlanner(holdDown: .zero)
        let records = [
            DNSRecord(id: "1", type: "A", name: "shop.example", content: "203.0.113.1", comment: DNSPlanner.comment(member: "web-1", term: 3)),
            DNSRecord(id: "2", type: "A", name: "shop.example", content: "203.0.113.2", comment: DNSPlanner.comment(member: "web-2", term: 3)),
        ]
        let plan = planner.plan(members: view.members, records: records, name: "shop.example", now: .zero)
        #expect(plan.batch?.deletes.map(\.id) == ["2"], "\(plan)")

        // Its address taken by a member that serves: only the record its comment names can be its.
        state.members[0].app.address = "203.0.113.2"
        #expect(state.dnsView(now: .zero).members.contains(DNSMember(name: "web-2", address: nil, serving: false)))
        // Made a witness online: it serves no app, and its record goes the same way.
        var demoted = first.members
        demoted[1].appNode = false
        state.configuration = first.next(members: demoted, term: 4)
        state.members[0].app.address = "203.0.113.1"
        #expect(state.dnsView(now: .zero).members.contains(DNSMember(name: "web-2", address: "203.0.113.2", serving: false)))
        // Added again: a member, no longer removed.
        let back = without.next(members: first.members, term: 5)
        #expect(back.removed == nil && back.members == first.members)
        // Removed again with another address: as it was last.
        var moved = first.members
        moved[1].publicAddress = "203.0.113.22"
        let again = back.next(members: moved, term: 6).next(members: moved.filter { $0.id != web2 }, term: 6)
        #expect(again.removed?.map(\.publicAddress) == ["203.0.113.22"])
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
