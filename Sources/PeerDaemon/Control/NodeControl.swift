import Cluster
import PeerConfiguration
import Control
import Deployment
import Leadership
import PKI
import PeerCore

/// What the control API does, whoever carries the request: `peerctl` over the unix socket (``ControlServer``)
/// or an operator over the mesh (``OperatorGateway``). Strings from the request are parsed into domain values
/// here, once; the answers are the control API's types, built here from the domain.
struct NodeControl: Sendable {
    /// What the control API reads of the mesh: its published state and measurements.
    struct MeshView: Sendable {
        let cluster: Published<ClusterState>
        let leaseRequests: Published<LeaseRequests>
        let stats: MeshStats
        let profile: String
        let clock: any PeerClock
    }

    /// A request this node does not carry out, and why.
    enum Refusal: Error, CustomStringConvertible {
        case notFound(String)
        case badRequest(String)
        case conflict(String)
        /// Nobody to carry it out now (no leader, the leader did not answer): try again.
        case unavailable(String)
        /// The operator's certificate does not allow it (its scopes).
        case forbidden(String)

        var description: String {
            switch self {
            case .notFound(let why), .badRequest(let why), .conflict(let why), .unavailable(let why), .forbidden(let why): why
            }
        }

        /// The error's code over the mesh, where there is no HTTP status.
        var code: String {
            switch self {
            case .notFound: "not-found"
            case .badRequest: "bad-request"
            case .conflict: "refused"
            case .unavailable: "unavailable"
            case .forbidden: "forbidden"
            }
        }

        init(_ failure: RolloutService.Failure) {
            switch failure {
            case .refused(let why): self = .conflict(why)
            case .unavailable(let why): self = .unavailable(why)
            case .notFound(let why): self = .notFound(why)
            }
        }
    }

    let config: PeerConfig
    let engine: NodeEngine
    let mesh: MeshView?
    let rollouts: RolloutService?
    let origin: OriginTLSService?
    let revoking: RevocationService?

    func status() async -> ControlAPI.NodeStatus {
        let installed = await origin?.current()
        return ControlAPI.NodeStatus(await engine.status(), config: config, origin: installed.map { ControlAPI.OriginTLS($0, config: config) })
    }

    func history() async -> [DeployRecord] { await engine.history() }

    func members() throws -> ControlAPI.Members {
        guard let mesh else {
            throw Refusal.notFound("this node has no mesh: section in its config, so it has no members; see docs/configuration.md")
        }
        return ControlAPI.Members(mesh.cluster.current, measured: mesh.stats.current, profile: mesh.profile, now: mesh.clock.now())
    }

    func configuration() throws -> ControlAPI.ClusterConfiguration {
        guard let mesh, let configuration = mesh.cluster.current.configuration else {
            throw Refusal.notFound("this node has no mesh: section in its config, so it has no cluster configuration; see docs/configuration.md")
        }
        return ControlAPI.ClusterConfiguration(configuration, pending: mesh.cluster.current.pendingConfiguration)
    }

    /// One member added (or its addresses or role changed) or removed: proposed by this node's mesh, which must
    /// lead, and committed once a majority of the members before and after the change accepted it. Returns the
    /// committed configuration; refused with the reason otherwise (not leading, another change under way, …).
    func changeMembers(_ change: ControlAPI.MemberChange) async throws -> ControlAPI.ClusterConfiguration {
        guard let mesh, let before = mesh.cluster.current.configuration else {
            throw Refusal.notFound("this node has no mesh: section in its config, so it has no members; see docs/configuration.md")
        }
        var members = before.members
        switch (change.add, change.remove) {
        case (let add?, nil):
            guard isValidPeerName(add.name) else {
                throw Refusal.badRequest("\(add.name) is not a node name (1-63 lowercase letters, digits, '-')")
            }
            guard let (host, _) = PeerConfig.hostPort(add.address) else {
                throw Refusal.badRequest("\(add.address) is not a mesh address: IP:PORT, e.g. 10.0.0.4:7946")
            }
            guard add.role == "node" || add.role == "witness" else { throw Refusal.badRequest("role \(add.role): node or witness") }
            if let other = members.first(where: { $0.id.name != add.name && $0.address == add.address }) {
                throw Refusal.badRequest("\(add.address) is \(other.id)'s mesh address already")
            }
            let publicAddress = add.publicAddress.map(canonicalIPAddress)
            if let publicAddress, ipAddressBytes(publicAddress) == nil { throw Refusal.badRequest("\(publicAddress) is not an IP address") }
            if add.role == "witness", publicAddress != nil { throw Refusal.badRequest("a witness has no public address (it serves nothing)") }
            _ = host
            members.removeAll { $0.id.name == add.name }
            members.append(
                Configuration.Member(id: MemberID(add.name), address: add.address, appNode: add.role == "node", publicAddress: publicAddress))
        case (nil, let name?):
            guard members.contains(where: { $0.id.name == name }) else {
                throw Refusal.notFound("\(name) is not a member of the cluster's configuration (epoch \(before.epoch)): peerctl config show")
            }
            members.removeAll { $0.id.name == name }
        default:
            throw Refusal.badRequest("expected a JSON body {\"add\": {\"name\", \"address\", \"role\"}} or {\"remove\": \"NAME\"}")
        }
        // While a change is pending, the lease needs a majority of the old members and of the new: a member added
        // that never comes up, with too few of the others alive, would leave the cluster with no leader — and nobody
        // to take the change back. Refused then, unless one node is becoming two (inherent: the second must be up).
        let state = mesh.cluster.current
        let alive = Set(state.members.filter { $0.status == .alive }.map(\.id))
        let next = Configuration(epoch: before.epoch + 1, term: 0, members: members)
        let added = Set(next.voters).subtracting(before.voters)
        if !added.isEmpty, before.voters.count > 1, !next.isMajority(alive.intersection(before.voters)) {
            let down = before.voters.filter { !alive.contains($0) }.map(\.name)
            throw Refusal.conflict(
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
                guard mesh.clock.now() < deadline else { throw Refusal.unavailable("this node's mesh did not take the change in 10 s") }
                await wakeup.wait(atMost: .milliseconds(200), clock: mesh.clock)
            }
            switch mesh.leaseRequests.current.answer?.refusal {
            case nil: proposed = true
            case .notConfirmed?:
                guard mesh.clock.now() < deadline else { throw Refusal.unavailable(ConfiguredLease.Refusal.notConfirmed.description) }
                try await mesh.clock.sleep(for: .milliseconds(100))
            case .notLeader?:
                let leader = mesh.cluster.current.lease.knownLeader(now: mesh.clock.now())?.id
                throw Refusal.conflict(
                    "this node does not lead\(leader.map { ": run it on \($0)" } ?? " (no leader right now: peerctl who)")"
                        + " — only the leader changes the cluster's configuration")
            case let refusal?:
                throw Refusal.conflict(refusal.description)
            }
        }
        while true {
            if let now = mesh.cluster.current.configuration, now.epoch > before.epoch {
                guard now.members == Configuration(epoch: 0, term: 0, members: members).members else {
                    throw Refusal.conflict("another change was committed first (epoch \(now.epoch)): peerctl config show, then retry")
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

    func who() throws -> ControlAPI.Who {
        guard let mesh else {
            throw Refusal.notFound("this node has no mesh: section in its config, so there is no leader; see docs/configuration.md")
        }
        return ControlAPI.Who(mesh.cluster.current, leaseRequests: mesh.leaseRequests.current, now: mesh.clock.now())
    }

    /// A deploy of `image`, or a rollback when nil: on a mesh the cluster's rollout, alone this node's swap. The
    /// events stream as they happen; the deploy runs on in the engine or the rollout service if the caller goes.
    func deploy(image: String?, requestedBy: String?) async throws -> ControlEvents {
        var reference: ImageReference?
        if let image {
            do {
                reference = try ImageReference(parsing: image)
            } catch {
                throw Refusal.badRequest(error.description)
            }
        }
        if let rollouts {
            do {
                return .rollout(try await rollouts.submit(image: reference, requestedBy: requestedBy ?? "peerctl on \(config.node.name)"))
            } catch {
                throw Refusal(error)
            }
        }
        do {
            return .swap(try await engine.submit(reference == nil ? .rollback : .deploy, image: reference).events)
        } catch let busy as NodeEngine.Busy {
            throw Refusal.conflict(busy.description)
        } catch let refused as NodeEngine.Refused {
            throw Refusal.badRequest(refused.description)
        }
    }

    /// Re-attaches to a cluster rollout (the current one when `id` is nil).
    func follow(_ id: String?) async throws -> ControlEvents {
        guard let rollouts else { throw Refusal.notFound(noRollouts) }
        do {
            return .rollout(try await rollouts.follow(id))
        } catch {
            throw Refusal(error)
        }
    }

    /// Stops the cluster's current rollout (`id`, if given, must be it); the nodes it reached go back.
    func cancel(_ id: String?, requestedBy: String?) async throws -> ControlAPI.Cancelled {
        guard let rollouts else { throw Refusal.notFound(noRollouts) }
        do {
            return ControlAPI.Cancelled(id: try await rollouts.cancel(id, requestedBy: requestedBy ?? "peerctl on \(config.node.name)"))
        } catch {
            throw Refusal(error)
        }
    }

    private var noRollouts: String {
        config.mesh == nil
            ? "this node has no mesh: section in its config, so there are no cluster rollouts; a deploy here is this node's own swap"
            : "this node is a witness: it takes no part in rollouts; ask an app node"
    }

    private var revocationService: RevocationService {
        get throws {
            guard let revoking else {
                throw Refusal.notFound("this node has no mesh: section in its config: there are no mesh certificates to revoke")
            }
            return revoking
        }
    }

    func revocations() throws -> ControlAPI.Revocations {
        let list = try revocationService.list.current
        return ControlAPI.Revocations(revocations: list.sorted, digest: list.digest)
    }

    /// Revocations from an operator: those the cluster CA signed are taken and handed on; if none of them is, the
    /// request is refused.
    func revoke(_ offered: [Revocation], requestedBy: String?) async throws -> ControlAPI.Revocations {
        let service = try revocationService
        guard !offered.isEmpty else { throw Refusal.badRequest("no revocations in the request") }
        let (added, refused) = try await service.take(offered, from: requestedBy ?? "peerctl on \(config.node.name)")
        if refused == offered.count {
            throw Refusal.badRequest(
                "none of the \(offered.count) revocation(s) is signed by this cluster's CA (\(config.mesh?.ca ?? "mesh.ca")): make them with peerctl cert revoke --dir and the folder of this cluster's ca-key.pem"
            )
        }
        let list = service.list.current
        return ControlAPI.Revocations(revocations: list.sorted, digest: list.digest, added: added.count, refused: refused)
    }

    func setOriginTLS(_ pair: OriginPair, requestedBy: String?, authority: OriginAuthority?) async throws -> ControlAPI.OriginTLS {
        guard let origin else {
            throw Refusal.notFound("this node is a witness: it runs no nginx; send the certificate to an app node")
        }
        do {
            let installed = try await origin.set(pair, requestedBy: requestedBy ?? "peerctl on \(config.node.name)", authority: authority)
            return ControlAPI.OriginTLS(installed, config: config)
        } catch let refused as OriginTLSService.Refused {
            throw Refusal.badRequest(refused.description)
        }
    }
}

/// A deploy's events as the control API's lines: a swap on this node, or a cluster rollout.
enum ControlEvents: Sendable {
    case swap(AsyncStream<DeployEvent>)
    case rollout(AsyncStream<RolloutEvent>)

    /// Calls `body` with each line as it happens, until the deploy ends.
    func forEach(_ body: (ControlAPI.Event) async throws -> Void) async rethrows {
        switch self {
        case .swap(let events): for await event in events { try await body(ControlAPI.Event(event)) }
        case .rollout(let events): for await event in events { try await body(ControlAPI.Event(event)) }
        }
    }
}
