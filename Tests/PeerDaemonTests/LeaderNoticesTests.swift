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
}
