import Cluster
import Membership
import Notify
import ServiceLifecycle
import PeerCore

/// What the leader tells the operator about the cluster, as a pure function of the state before and after a
/// change: that this node took the lead, and each member's deploys and expiring mesh certificates. Only a node
/// that leads at `now` reports (the dispatcher checks the lease again before it sends). DNS removals and returns
/// are the DNS service's to report.
enum LeaderNotices {
    static func notices(from previous: ClusterState, to next: ClusterState, now: Instant) -> [Notice] {
        var notices: [Notice] = []
        guard let term = next.lease.validTerm(now: now) else { return notices }
        let me = next.me.name
        if previous.lease.holding?.term != term {
            notices.append(
                Notice(
                    kind: .leaderChanged, title: "\(me) leads the cluster",
                    body: "\(me) holds the leader lease (term \(term)): it now edits DNS and sends notifications.", key: "leader/\(term)"))
        }
        for member in next.members {
            let before = previous.member(member.id) ?? ClusterState.Member(id: member.id, address: member.address)
            guard member.app != before.app else { continue }
            notices += deployNotices(member, previous: before) + certificateNotices(member, previous: before)
        }
        return notices
    }

    private static func deployNotices(_ state: ClusterState.Member, previous: ClusterState.Member) -> [Notice] {
        let who = state.id.name
        var notices: [Notice] = []
        for deploy in [state.app.lastDeploy, state.app.runningDeploy].compactMap({ $0 })
        where deploy != previous.app.lastDeploy && deploy != previous.app.runningDeploy {
            let what = deploy.kind == "rollback" ? "rollback to \(deploy.image)" : "deploy of \(deploy.image)"
            let key = "deploy/\(who)/\(deploy.id)/\(deploy.state)"
            switch deploy.state {
            case "running":
                notices.append(Notice(kind: .deployStarted, title: "\(who): \(what) started", body: "deploy \(deploy.id)", key: key))
            case "succeeded":
                notices.append(
                    Notice(
                        kind: deploy.kind == "rollback" ? .deployRolledBack : .deployFinished, title: "\(who): \(what) done",
                        body: "deploy \(deploy.id) serves \(deploy.image)", key: key))
            default:
                notices.append(
                    Notice(
                        kind: .deployFailed, title: "\(who): \(what) \(deploy.state)",
                        body: "deploy \(deploy.id): \(deploy.reason ?? "no reason given"); the previous version keeps serving", key: key))
            }
        }
        return notices
    }

    /// Once when a member's mesh certificate crosses 30, 7 and 1 days left.
    private static func certificateNotices(_ state: ClusterState.Member, previous: ClusterState.Member) -> [Notice] {
        guard let days = state.app.certificateDaysLeft, days <= 30 else { return [] }
        let who = state.id.name
        let bucket = days <= 1 ? 1 : days <= 7 ? 7 : 30
        let before = previous.app.certificateDaysLeft.map { $0 <= 1 ? 1 : $0 <= 7 ? 7 : $0 <= 30 ? 30 : 31 } ?? 31
        guard bucket < before || previous.app.certificateDaysLeft == nil else { return [] }
        return [
            Notice(
                kind: .certificateExpiring, title: "\(who): mesh certificate expires in \(days) days",
                body: "Renew it: peerctl cert issue \(who) --address IP --force, copy it to \(who), restart peerd.",
                key: "cert/\(who)/\(bucket)")
        ]
    }
}

/// Posts the leader's notices as the cluster state changes.
struct LeaderNoticeService: Service {
    let cluster: Published<ClusterState>
    let dispatcher: NoticeDispatcher
    let clock: any PeerClock

    func run() async throws {
        let wakeup = Wakeup()
        cluster.watch(wakeup) { old, new in old.members != new.members || old.lease.holding?.term != new.lease.holding?.term }
        await cancelWhenGracefulShutdown { await loop(wakeup) }
    }

    private func loop(_ wakeup: Wakeup) async {
        var previous = cluster.current
        while !Task.isCancelled {
            await wakeup.wait(atMost: .seconds(3600), clock: clock)
            let next = cluster.current
            for notice in LeaderNotices.notices(from: previous, to: next, now: clock.now()) { await dispatcher.post(notice) }
            previous = next
        }
    }
}
