import Cluster
import PeerConfiguration
import Control
import Foundation
import Deployment
import Leadership
import Membership
import PeerCore

/// The control API's answers, built at the edge from the domain: the engine's status, the installed origin
/// certificate, the published ``ClusterState`` and the mesh's measurements.
extension ControlAPI.Who {
    init(_ state: ClusterState, leaseRequests: LeaseRequests, now: Instant) {
        let leader = state.lease.knownLeader(now: now)
        let standingDown = leaseRequests.stepDown.flatMap { now < $0.until ? $0 : nil }
        self.init(
            node: state.me.name, leader: leader?.id.name, term: leader?.term, thisNodeLeads: state.lease.validTerm(now: now) != nil,
            leaseRemainingMs: state.lease.remaining(now: now).map { Int($0.milliseconds) }, voters: state.lease.voters.map(\.name),
            majority: state.lease.majority, promisedTerm: state.lease.promised,
            standingDown: standingDown.map { "\($0.reason); it does not campaign for \(($0.until - now).compactDescription) more" })
        if !state.otherConfigurations.isEmpty { otherConfigurations = state.otherConfigurations.map(\.name) }
    }
}

extension ControlAPI.NodeStatus {
    init(_ status: NodeEngine.Status, config: PeerConfig, origin: ControlAPI.OriginTLS?) {
        var docker = Docker(socket: config.dockerSocket, reachable: false)
        switch status.docker {
        case .success(let version):
            docker.apiVersion = version
            docker.reachable = true
        case .failure(let failure): docker.error = failure.description
        }
        self.init(
            node: config.node.name, address: config.node.address, app: config.app.name, serving: status.serving,
            servingSince: status.servingSince, previousImage: status.previousImage, deploying: status.deploying,
            lastDeploy: status.lastDeploy, starting: status.starting,
            nginx: .init(
                site: config.nginx.site, listen: config.nginx.listen, running: status.nginxRunning, routedGeneration: status.routedGeneration),
            docker: docker,
            peerd: .init(version: ControlAPI.version, pid: getpid(), rssBytes: status.rssBytes, startedAt: status.startedAt),
            originCertificate: origin)
    }
}

extension ControlAPI.OriginTLS {
    init(_ installed: OriginTLSService.Installed, config: PeerConfig) {
        let info = installed.info
        self.init(
            fingerprint: info.fingerprint, names: info.names, issuer: info.issuer, notValidAfter: info.notValidAfter, daysLeft: info.daysLeft(),
            setAt: Date(timeIntervalSince1970: Double(installed.setAt) / 1000), listen: config.nginx.tls.listen,
            originPulls: config.nginx.tls.originPulls.rawValue)
    }
}

extension ControlAPI.Members {
    init(_ state: ClusterState, measured: MeshStats.Measured, profile: String?, now: Instant) {
        // The intent this node took up (an unreplicated one some member still gossips is not the cluster's).
        let intent = state.member(state.me)?.app.rollout ?? state.members.compactMap(\.app.rollout).max { $1.isNewer(than: $0) }
        var reports: [String: RolloutReport] = [:]
        for member in state.members { if let r = member.app.rolloutReport { reports[member.id.name] = r } }
        let summary = intent.map { intent -> Rollout in
            let alive = Set(state.members.filter { $0.status != .dead }.map(\.id.name))
            var text = "running"
            var failure: String?
            switch Deployment.Rollout.outcome(intent: intent, reports: reports, alive: alive) {
            case .running: text = "running"
            case .succeeded: text = "succeeded"
            case .failed(let node, let reason):
                text = "failed"
                failure = "\(node): \(reason)"
            case .cancelled(let reason):
                text = "cancelled"
                failure = reason
            }
            return Rollout(
                id: intent.id, kind: intent.kind.rawValue, image: intent.image, previousImage: intent.previousImage,
                requestedBy: intent.requestedBy, order: intent.order, outcome: text, failure: failure)
        }
        let counters = measured.counters
        self.init(
            node: state.me.name, profile: profile,
            members: state.members.map { member in
                var row = Member(
                    name: member.id.name, address: member.address, status: "\(member.status)",
                    incarnation: member.incarnation, appHealthy: member.app.healthy, image: member.app.image,
                    isSelf: member.id == state.me, lastSeenMsAgo: measured.lastSeen[member.id].map { Int((now - $0).milliseconds) },
                    rttMs: measured.rtt[member.id].map { Double($0.nanoseconds) / 1e6 },
                    rolloutPhase: intent.flatMap { i in member.app.rolloutReport.flatMap { $0.intent == i.id ? $0.phase.rawValue : nil } },
                    originFingerprint: member.app.origin?.fingerprint)
                row.configuration = member.app.configuration
                row.revocations = member.app.revocations
                return row
            },
            datagramsSent: counters.datagramsSent, bytesSent: counters.bytesSent, datagramsReceived: counters.datagramsReceived,
            bytesReceived: counters.bytesReceived, datagramsDropped: counters.datagramsDropped, rollout: summary)
    }
}

extension ControlAPI.ClusterConfiguration {
    init(_ configuration: Configuration, pending: Configuration?) {
        func members(_ list: [Configuration.Member]) -> [Member] {
            list.map { Member(name: $0.id.name, address: $0.address, role: $0.appNode ? "node" : "witness", publicAddress: $0.publicAddress) }
        }
        self.init(
            epoch: configuration.epoch, members: members(configuration.members), pendingEpoch: pending?.epoch,
            pendingMembers: pending.map { members($0.members) }, removed: configuration.removed.map(members))
    }
}
