import Cluster
import Control
import Foundation
import Leadership
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOFoundationCompat
import PeerConfiguration
import PeerCore
import ServiceLifecycle

/// Changes of the cluster's configuration asked on this node (`peerctl node add|remove`, an operator): proposed here
/// when this node leads; otherwise sent to the leader over the member links (topic `configuration`), which proposes
/// it as if asked on its own socket and answers with the outcome.
final class MembershipChanges: Service, Sendable {
    /// What goes over the member links.
    enum Message: Codable, Sendable {
        case request(id: UInt64, change: ControlAPI.MemberChange)
        /// `configuration` when carried out; `error` and its `code` (``NodeControl/Refusal/code``) when refused.
        case answer(id: UInt64, configuration: ControlAPI.ClusterConfiguration?, error: String?, code: String?)
    }
    struct Envelope: Codable, Sendable { var configuration: Message }

    let mesh: NodeControl.MeshView
    let links: MemberLinks
    let logger: Logger
    private let answers = NIOLockedValueBox<[UInt64: Message]>([:])
    private let answered = Wakeup()

    init(mesh: NodeControl.MeshView, links: MemberLinks, logger: Logger) {
        self.mesh = mesh
        self.links = links
        self.logger = logger
    }

    /// Carried out here when this node leads, by the leader otherwise.
    func change(_ change: ControlAPI.MemberChange) async throws -> ControlAPI.ClusterConfiguration {
        let now = mesh.clock.now()
        let state = mesh.cluster.current
        if state.lease.validTerm(now: now) != nil { return try await local(change) }
        guard let leader = state.lease.knownLeader(now: now)?.id, leader != state.me else {
            throw NodeControl.Refusal.unavailable(
                "no leader right now (peerctl who): only the leader changes the cluster's configuration; retry once one is elected")
        }
        return try await forward(change, to: leader)
    }

    /// Sent to the leader; its answer awaited (at most 30 s: its own wait for the commit is 10).
    private func forward(_ change: ControlAPI.MemberChange, to leader: MemberID) async throws -> ControlAPI.ClusterConfiguration {
        let id = UInt64.random(in: 1...UInt64.max)
        var buffer = ByteBuffer()
        buffer.writeBytes(try JSONEncoder().encode(Envelope(configuration: .request(id: id, change: change))))
        guard await links.send(buffer, to: leader) else {
            throw NodeControl.Refusal.unavailable("the leader, \(leader), cannot be reached from this node right now: retry, or run it there")
        }
        let deadline = mesh.clock.now() + .seconds(30)
        while true {
            if let answer = answers.withLockedValue({ $0.removeValue(forKey: id) }), case .answer(_, let configuration, let error, let code) = answer
            {
                if let configuration { return configuration }
                throw NodeControl.Refusal.from(code: code, "\(leader): \(error ?? "refused")")
            }
            guard mesh.clock.now() < deadline else {
                throw NodeControl.Refusal.unavailable(
                    "\(leader) (the leader) did not answer within 30 s: peerctl config show tells whether the change was made")
            }
            await answered.wait(atMost: .milliseconds(500), clock: mesh.clock)
        }
    }

    /// Requests from members (this node leads, or led when they asked) and answers to this node's, until the
    /// graceful shutdown.
    func run() async throws {
        await cancelWhenGracefulShutdown {
            for await (from, message) in self.links.inbound(.configuration) { await self.received(message, from: from) }
        }
    }

    private func received(_ message: ByteBuffer, from: MemberID) async {
        guard let envelope = try? JSONDecoder().decode(Envelope.self, from: Data(buffer: message)) else { return }
        switch envelope.configuration {
        case .answer(let id, _, _, _):
            answers.withLockedValue { answers in
                // Only answers someone waits for are kept (at most a handful at once).
                if answers.count < 64 { answers[id] = envelope.configuration }
            }
            answered.wake()
        case .request(let id, let change):
            logger.info("a member asks for a change of the cluster's configuration", metadata: ["mesh.member": "\(from)"])
            let reply: Message
            do {
                // Never forwarded again: a request goes one hop, to the node its sender took for the leader.
                guard mesh.cluster.current.lease.validTerm(now: mesh.clock.now()) != nil else {
                    throw NodeControl.Refusal.unavailable("it does not lead any more: retry (peerctl who)")
                }
                reply = .answer(id: id, configuration: try await local(change), error: nil, code: nil)
            } catch let refusal as NodeControl.Refusal {
                reply = .answer(id: id, configuration: nil, error: refusal.description, code: refusal.code)
            } catch {
                reply = .answer(id: id, configuration: nil, error: "\(error)", code: nil)
            }
            guard let encoded = try? JSONEncoder().encode(Envelope(configuration: reply)) else { return }
            var buffer = ByteBuffer()
            buffer.writeBytes(encoded)
            _ = await links.send(buffer, to: from)
        }
    }

    /// Proposed by this node's mesh, which must lead, and committed once a majority of the members before and after
    /// the change accepted it. Returns the committed configuration (or the proposal, when a majority cannot accept
    /// it yet); refused with the reason otherwise (another change under way, …).
    func local(_ change: ControlAPI.MemberChange) async throws -> ControlAPI.ClusterConfiguration {
        guard let before = mesh.cluster.current.configuration else { throw NodeControl.Refusal.unavailable("the mesh has not started yet") }
        var members = before.members
        switch (change.add, change.remove) {
        case (let add?, nil):
            guard isValidPeerName(add.name) else {
                throw NodeControl.Refusal.badRequest("\(add.name) is not a node name (1-63 lowercase letters, digits, '-')")
            }
            guard PeerConfig.hostPort(add.address) != nil else {
                throw NodeControl.Refusal.badRequest("\(add.address) is not a mesh address: IP:PORT, e.g. 10.0.0.4:7946")
            }
            guard add.role == "node" || add.role == "witness" else { throw NodeControl.Refusal.badRequest("role \(add.role): node or witness") }
            if let other = members.first(where: { $0.id.name != add.name && $0.address == add.address }) {
                throw NodeControl.Refusal.badRequest("\(add.address) is \(other.id)'s mesh address already")
            }
            let publicAddress = add.publicAddress.map(canonicalIPAddress)
            if let publicAddress, ipAddressBytes(publicAddress) == nil {
                throw NodeControl.Refusal.badRequest("\(publicAddress) is not an IP address")
            }
            if add.role == "witness", publicAddress != nil {
                throw NodeControl.Refusal.badRequest("a witness has no public address (it serves nothing)")
            }
            members.removeAll { $0.id.name == add.name }
            members.append(
                Configuration.Member(id: MemberID(add.name), address: add.address, appNode: add.role == "node", publicAddress: publicAddress))
        case (nil, let name?):
            guard members.contains(where: { $0.id.name == name }) else {
                throw NodeControl.Refusal.notFound(
                    "\(name) is not a member of the cluster's configuration (epoch \(before.epoch)): peerctl config show")
            }
            members.removeAll { $0.id.name == name }
        default:
            throw NodeControl.Refusal.badRequest("expected a JSON body {\"add\": {\"name\", \"address\", \"role\"}} or {\"remove\": \"NAME\"}")
        }
        // While a change is pending, the lease needs a majority of the old members and of the new: a member added
        // that never comes up, with too few of the others alive, would leave the cluster with no leader — and nobody
        // to take the change back. Refused then, unless one node is becoming two (inherent: the second must be up).
        let state = mesh.cluster.current
        let alive = Set(state.members.filter { $0.status == .alive }.map(\.id))
        let next = before.next(members: members, term: 0)
        let added = Set(next.voters).subtracting(before.voters)
        if !added.isEmpty, before.voters.count > 1, !next.isMajority(alive.intersection(before.voters)) {
            let down = before.voters.filter { !alive.contains($0) }.map(\.name)
            throw NodeControl.Refusal.conflict(
                "adding \(added.map(\.name).sorted().joined(separator: ", ")) now would leave no leader until it is up: \(down.joined(separator: ", ")) \(down.count == 1 ? "is" : "are") down, and the members alive are not a majority of the \(next.voters.count) members after the change. Bring \(down.count == 1 ? "it" : "them") back (or remove \(down.count == 1 ? "it" : "them") first), then add."
            )
        }
        let wakeup = Wakeup()
        mesh.cluster.watch(wakeup)
        mesh.leaseRequests.watch(wakeup)
        defer {
            mesh.cluster.unwatch(wakeup)
            mesh.leaseRequests.unwatch(wakeup)
        }
        let deadline = mesh.clock.now() + .seconds(10)
        // A leader that just committed a change confirms its lease under it before the next one: a few tries.
        var proposed = false
        while !proposed {
            let id = UInt64.random(in: 1...UInt64.max)
            mesh.leaseRequests.update { $0.proposal = .init(id: id, members: members) }
            while mesh.leaseRequests.current.answer?.id != id {
                guard mesh.clock.now() < deadline else { throw NodeControl.Refusal.unavailable("this node's mesh did not take the change in 10 s") }
                await wakeup.wait(atMost: .milliseconds(200), clock: mesh.clock)
            }
            switch mesh.leaseRequests.current.answer?.refusal {
            case nil: proposed = true
            case .notConfirmed?:
                guard mesh.clock.now() < deadline else {
                    throw NodeControl.Refusal.unavailable(ConfiguredLease.Refusal.notConfirmed.description)
                }
                // The mesh asked its voters for the round; its lease shows it once they answered.
                await wakeup.wait(atMost: .milliseconds(200), clock: mesh.clock)
            case .notLeader?:
                let leader = mesh.cluster.current.lease.knownLeader(now: mesh.clock.now())?.id
                throw NodeControl.Refusal.conflict(
                    "this node does not lead\(leader.map { ": run it on \($0)" } ?? " (no leader right now: peerctl who)")"
                        + " — only the leader changes the cluster's configuration")
            case let refusal?:
                throw NodeControl.Refusal.conflict(refusal.description)
            }
        }
        while true {
            if let now = mesh.cluster.current.configuration, now.epoch > before.epoch {
                guard now.members == next.members else {
                    throw NodeControl.Refusal.conflict("another change was committed first (epoch \(now.epoch)): peerctl config show, then retry")
                }
                return ControlAPI.ClusterConfiguration(now, pending: mesh.cluster.current.pendingConfiguration)
            }
            // Not committed yet (one node becoming two needs the new one up to accept it): proposed, and committed as
            // soon as a majority of the members before and after the change accepted it.
            guard mesh.clock.now() < deadline else {
                return ControlAPI.ClusterConfiguration(before, pending: mesh.cluster.current.pendingConfiguration)
            }
            await wakeup.wait(atMost: .milliseconds(500), clock: mesh.clock)
        }
    }
}
