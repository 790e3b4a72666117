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

    /// A member that announces another configuration than the leader's, since when, and whether it was told.
    struct Lag: Equatable {
        var theirs: String
        var ours: String
        var since: Instant
        var told = false
    }

    /// How long a member may announce another configuration than the leader's before the leader tells: a change
    /// reaches every member within a lease renewal or two, so one that stays behind this long does not take them
    /// (a state folder it cannot write, a node started from another cluster's files).
    static let configurationPatience = Duration.seconds(30)

    /// A member that stays on another configuration than the leader's (its `epoch-N`) for
    /// ``configurationPatience``: told once per member and pair of configurations. `lagging` is the caller's memory
    /// between calls. While the cluster runs its first configuration, differing file lists stop elections: there is
    /// no leader to tell, and `peerctl status` names them.
    static func configurationNotices(_ state: ClusterState, lagging: inout [MemberID: Lag], now: Instant) -> [Notice] {
        guard state.lease.validTerm(now: now) != nil, let ours = state.member(state.me)?.app.configuration, ours.hasPrefix("epoch-")
        else {
            lagging = [:]
            return []
        }
        var notices: [Notice] = []
        var next: [MemberID: Lag] = [:]
        for member in state.members where member.id != state.me && member.status != .dead {
            guard let theirs = member.app.configuration, theirs != ours else { continue }
            var lag = lagging[member.id].flatMap { $0.theirs == theirs && $0.ours == ours ? $0 : nil } ?? Lag(theirs: theirs, ours: ours, since: now)
            if !lag.told, now - lag.since >= configurationPatience {
                lag.told = true
                let who = member.id.name
                notices.append(
                    Notice(
                        kind: .configurationBehind, title: "\(who) is on another configuration (\(theirs), the cluster \(ours))",
                        body:
                            "\(who) has not taken the cluster's configuration for \(configurationPatience.compactDescription): see its log, "
                            + "and peerctl status and peerctl config show on \(who).",
                        key: "configuration/\(who)/\(theirs)/\(ours)"))
            }
            next[member.id] = lag
        }
        lagging = next
        return notices
    }

    /// When the next member that lags would be told, if one lags.
    static func nextConfigurationCheck(_ lagging: [MemberID: Lag]) -> Instant? {
        lagging.values.filter { !$0.told }.map { $0.since + configurationPatience }.min()
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
        var lagging: [MemberID: LeaderNotices.Lag] = [:]
        while !Task.isCancelled {
            let check = LeaderNotices.nextConfigurationCheck(lagging).map { $0 - clock.now() } ?? .seconds(3600)
            await wakeup.wait(atMost: min(check, .seconds(3600)), clock: clock)
            let next = cluster.current
            let now = clock.now()
            for notice in LeaderNotices.notices(from: previous, to: next, now: now) { await dispatcher.post(notice) }
            for notice in LeaderNotices.configurationNotices(next, lagging: &lagging, now: now) { await dispatcher.post(notice) }
            previous = next
        }
    }
}
