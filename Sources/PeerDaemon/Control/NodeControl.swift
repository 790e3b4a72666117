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

        /// A refusal that came over the mesh with its ``code``.
        static func from(code: String?, _ why: String) -> Refusal {
            switch code {
            case "not-found": .notFound(why)
            case "bad-request": .badRequest(why)
            case "refused": .conflict(why)
            case "forbidden": .forbidden(why)
            default: .unavailable(why)
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
    let membership: MembershipChanges?

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

    /// One member added (or its addresses or role changed) or removed, through the leader (``MembershipChanges``).
    func changeMembers(_ change: ControlAPI.MemberChange) async throws -> ControlAPI.ClusterConfiguration {
        guard let membership else {
            throw Refusal.notFound("this node has no mesh: section in its config, so it has no members; see docs/configuration.md")
        }
        return try await membership.change(change)
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
