import Cluster
import Leadership
import Membership
import Notify
import PeerCore
import Testing

@testable import PeerDaemon

@Suite struct LeaderNoticesTests {
    let me = MemberID("web-1")
    let other = MemberID("web-2")
    let now = Instant(nanoseconds: 1_000_000_000)

    func state(leading term: UInt64?, otherApp: AppStatus = .none) -> ClusterState {
        var lease = Lease.View(me: me, voters: [me, other], promised: term ?? 0)
        lease.holding = term.map { .init(term: $0, validUntil: Instant(nanoseconds: 2_000_000_000), confirmedAt: .zero) }
        return ClusterState(
            me: me,
            members: [ClusterState.Member(id: me, address: "a:1"), ClusterState.Member(id: other, address: "b:1", app: otherApp)],
            appNodes: [me, other], lease: lease, startedAt: .zero, startupGrace: .seconds(5))
    }

    func app(_ deploy: DeployMark?, running: DeployMark? = nil, days: Int? = nil) -> AppStatus {
        AppStatus(healthy: true, image: "app:1", runningDeploy: running, lastDeploy: deploy, certificateDaysLeft: days)
    }

    @Test func takingTheLeadIsToldOncePerTerm() {
        let notices = LeaderNotices.notices(from: state(leading: nil), to: state(leading: 3), now: now)
        #expect(notices.map(\.key) == ["leader/3"])
        #expect(LeaderNotices.notices(from: state(leading: 3), to: state(leading: 3), now: now).isEmpty)
    }

    @Test func aMembersDeployIsToldByTheLeaderOnly() {
        let running = DeployMark(id: "d1", kind: "deploy", image: "app:2", state: "running")
        let done = DeployMark(id: "d1", kind: "deploy", image: "app:2", state: "succeeded")
        let started = LeaderNotices.notices(from: state(leading: 3), to: state(leading: 3, otherApp: app(nil, running: running)), now: now)
        #expect(started.map(\.key) == ["deploy/web-2/d1/running"])
        let finished = LeaderNotices.notices(
            from: state(leading: 3, otherApp: app(nil, running: running)), to: state(leading: 3, otherApp: app(done)), now: now)
        #expect(finished.map(\.kind) == [.deployFinished])
        // A follower tells nothing.
        #expect(LeaderNotices.notices(from: state(leading: nil), to: state(leading: nil, otherApp: app(done)), now: now).isEmpty)
        // Nor does a leader whose lease ran out.
        let late = Instant(nanoseconds: 2_000_000_000)
        #expect(LeaderNotices.notices(from: state(leading: 3), to: state(leading: 3, otherApp: app(done)), now: late).isEmpty)
    }

    @Test func anExpiringMeshCertificateIsToldAt30And7And1Days() {
        func told(_ before: Int?, _ after: Int) -> [String] {
            LeaderNotices.notices(
                from: state(leading: 3, otherApp: app(nil, days: before)), to: state(leading: 3, otherApp: app(nil, days: after)), now: now
            ).map(\.key)
        }
        #expect(told(31, 30) == ["cert/web-2/30"])
        #expect(told(30, 29).isEmpty)
        #expect(told(8, 7) == ["cert/web-2/7"])
        #expect(told(2, 1) == ["cert/web-2/1"])
        #expect(told(200, 199).isEmpty)
    }

    /// A member on another configuration than the leader's for 30 s is told once (one that catches up within a
    /// lease renewal is not); a follower tells nothing, nor does a dead member count.
    @Test func aMemberThatStaysOnAnotherConfigurationIsToldOnce() {
        func cluster(leading term: UInt64?, theirs: String?, status: MemberStatus = .alive) -> ClusterState {
            var s = state(leading: term)
            s.members[0].app.configuration = "epoch-3"
            s.members[1].app.configuration = theirs
            s.members[1].status = status
            return s
        }
        var lagging: [MemberID: LeaderNotices.Lag] = [:]
        func told(_ s: ClusterState, at seconds: Double) -> [String] {
            let at = Instant(nanoseconds: Int64(seconds * 1e9))
            var s = s
            s.lease.holding?.validUntil = at + .seconds(2)
            return LeaderNotices.configurationNotices(s, lagging: &lagging, now: at).map(\.key)
        }
        // Behind for a moment, then on the cluster's: nothing.
        #expect(told(cluster(leading: 3, theirs: "epoch-2"), at: 1).isEmpty)
        #expect(told(cluster(leading: 3, theirs: "epoch-3"), at: 2).isEmpty)
        #expect(told(cluster(leading: 3, theirs: "epoch-2"), at: 30).isEmpty)
        #expect(LeaderNotices.nextConfigurationCheck(lagging) == Instant(nanoseconds: 60_000_000_000))
        #expect(told(cluster(leading: 3, theirs: "epoch-2"), at: 59).isEmpty)
        #expect(told(cluster(leading: 3, theirs: "epoch-2"), at: 60) == ["configuration/web-2/epoch-2/epoch-3"])
        #expect(told(cluster(leading: 3, theirs: "epoch-2"), at: 200).isEmpty, "told twice")
        #expect(LeaderNotices.nextConfigurationCheck(lagging) == nil)
        // The cluster moves on without it: another pair, told again once it has lasted.
        var further = cluster(leading: 3, theirs: "epoch-2")
        further.members[0].app.configuration = "epoch-4"
        #expect(told(further, at: 210).isEmpty)
        #expect(told(further, at: 240) == ["configuration/web-2/epoch-2/epoch-4"])
        // Dead members and followers tell nothing.
        lagging = [:]
        #expect(told(cluster(leading: 3, theirs: "epoch-1", status: .dead), at: 0).isEmpty)
        #expect(told(cluster(leading: 3, theirs: "epoch-1", status: .dead), at: 100).isEmpty)
        #expect(told(cluster(leading: nil, theirs: "epoch-1"), at: 0).isEmpty)
        #expect(told(cluster(leading: nil, theirs: "epoch-1"), at: 100).isEmpty)
    }
}
