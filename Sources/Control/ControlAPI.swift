import Deployment
import Foundation
import PKI

/// The JSON that peerd and peerctl exchange over the control socket.
public enum ControlAPI {
    public static let version = "0.1.0"

    /// `GET /v1/members`: the cluster as this node sees it.
    public struct Members: Codable, Sendable {
        public var node: String
        /// nil when this node has no `mesh:` section.
        public var profile: String?
        public var members: [Member]
        public var datagramsSent: Int
        public var bytesSent: Int
        public var datagramsReceived: Int
        public var bytesReceived: Int
        public var datagramsDropped: Int
        /// The cluster's latest rollout, as this node knows it.
        public var rollout: Rollout?

        public struct Rollout: Codable, Sendable {
            public var id: String
            public var kind: String
            public var image: String
            public var previousImage: String?
            public var requestedBy: String
            public var order: [String]
            /// running, succeeded, failed, cancelled
            public var outcome: String
            public var failure: String?

            public init(
                id: String, kind: String, image: String, previousImage: String? = nil, requestedBy: String, order: [String], outcome: String,
                failure: String? = nil
            ) {
                self.id = id
                self.kind = kind
                self.image = image
                self.previousImage = previousImage
                self.requestedBy = requestedBy
                self.order = order
                self.outcome = outcome
                self.failure = failure
            }
        }

        public struct Member: Codable, Sendable {
            public var name: String
            public var address: String
            public var status: String
            public var incarnation: UInt64
            /// nil: runs no app (or not known yet).
            public var appHealthy: Bool?
            public var image: String?
            public var isSelf: Bool
            /// Milliseconds since this node last heard from it directly.
            public var lastSeenMsAgo: Int?
            public var rttMs: Double?
            /// Its part in the latest rollout (waiting, swapping, done, failed, rollingBack, rolledBack).
            public var rolloutPhase: String?
            /// The first 16 hex digits of the origin certificate its nginx serves.
            public var originFingerprint: String?
            /// The digest of its cluster configuration (`mesh.members`), as it last announced it.
            public var configuration: String?
            /// The digest of the certificate revocations it holds, as it last announced it (nil: none).
            public var revocations: String?

            public init(
                name: String, address: String, status: String, incarnation: UInt64, appHealthy: Bool? = nil, image: String? = nil, isSelf: Bool,
                lastSeenMsAgo: Int? = nil, rttMs: Double? = nil, rolloutPhase: String? = nil, originFingerprint: String? = nil
            ) {
                self.name = name
                self.address = address
                self.status = status
                self.incarnation = incarnation
                self.appHealthy = appHealthy
                self.image = image
                self.isSelf = isSelf
                self.lastSeenMsAgo = lastSeenMsAgo
                self.rttMs = rttMs
                self.rolloutPhase = rolloutPhase
                self.originFingerprint = originFingerprint
            }
        }

        public init(
            node: String, profile: String? = nil, members: [Member], datagramsSent: Int, bytesSent: Int, datagramsReceived: Int, bytesReceived: Int,
            datagramsDropped: Int, rollout: Rollout? = nil
        ) {
            self.node = node
            self.profile = profile
            self.members = members
            self.datagramsSent = datagramsSent
            self.bytesSent = bytesSent
            self.datagramsReceived = datagramsReceived
            self.bytesReceived = bytesReceived
            self.datagramsDropped = datagramsDropped
            self.rollout = rollout
        }
    }

    /// `GET /v1/who`: the leader as this node knows it.
    public struct Who: Codable, Sendable {
        public var node: String
        /// The node this node's vote backs (or this node, when it leads); nil: no leader known right now.
        public var leader: String?
        public var term: UInt64?
        public var thisNodeLeads: Bool
        /// Left on this node's own lease, when it leads.
        public var leaseRemainingMs: Int?
        public var voters: [String]
        public var majority: Int
        /// The highest term this node has promised (persisted).
        public var promisedTerm: UInt64
        /// Why this node stepped down and does not campaign for now (it could not do the leader's work).
        public var standingDown: String?
        /// Members that run (or last ran) another cluster configuration than this node: it neither campaigns nor
        /// votes until every member lists the same members.
        public var otherConfigurations: [String]?

        public init(
            node: String, leader: String? = nil, term: UInt64? = nil, thisNodeLeads: Bool, leaseRemainingMs: Int? = nil, voters: [String],
            majority: Int, promisedTerm: UInt64, standingDown: String? = nil
        ) {
            self.node = node
            self.leader = leader
            self.term = term
            self.thisNodeLeads = thisNodeLeads
            self.leaseRemainingMs = leaseRemainingMs
            self.voters = voters
            self.majority = majority
            self.promisedTerm = promisedTerm
            self.standingDown = standingDown
        }
    }

    /// `GET /v1/configuration`: the cluster's configuration as this node holds it — the members every majority is
    /// counted over — and a change under way.
    public struct ClusterConfiguration: Codable, Sendable, Equatable {
        public struct Member: Codable, Sendable, Equatable {
            public var name: String
            /// Its mesh address, `host:port`.
            public var address: String
            /// `node` or `witness`.
            public var role: String
            public var publicAddress: String?
            public init(name: String, address: String, role: String, publicAddress: String? = nil) {
                self.name = name
                self.address = address
                self.role = role
                self.publicAddress = publicAddress
            }
        }
        /// Counts committed changes: 1 is the member list every node was set up with.
        public var epoch: UInt64
        public var members: [Member]
        /// A change proposed and not committed yet: its epoch and members.
        public var pendingEpoch: UInt64?
        public var pendingMembers: [Member]?
        /// Members changes took out (as they last were): the leader takes their DNS records away.
        public var removed: [Member]?

        public init(
            epoch: UInt64, members: [Member], pendingEpoch: UInt64? = nil, pendingMembers: [Member]? = nil, removed: [Member]? = nil
        ) {
            self.epoch = epoch
            self.members = members
            self.pendingEpoch = pendingEpoch
            self.pendingMembers = pendingMembers
            self.removed = removed
        }
    }

    /// `POST /v1/configuration/members`: one member added (or changed) or removed, committed through the leader.
    public struct MemberChange: Codable, Sendable {
        public var add: ClusterConfiguration.Member?
        public var remove: String?
        public init(add: ClusterConfiguration.Member? = nil, remove: String? = nil) {
            self.add = add
            self.remove = remove
        }
    }

    public struct DeployRequest: Codable, Sendable {
        public var image: String
        /// Who asked (an operator over the mesh); `peerctl on NODE` when absent.
        public var requestedBy: String?
        public init(image: String, requestedBy: String? = nil) {
            self.image = image
            self.requestedBy = requestedBy
        }
    }

    /// One line of a deploy's NDJSON stream: `accepted`, then `progress` lines, then one `result` — or, for a
    /// cluster rollout, `accepted`, `node` lines (a node's phase or swap step) and one `rollout` result.
    public struct Event: Codable, Sendable, Hashable {
        public enum Kind: String, Codable, Sendable { case accepted, following, progress, result, node, rollout }
        public var type: Kind
        public var id: String?
        public var image: String?
        public var progress: ProgressLine?
        public var record: DeployRecord?
        public var node: String?
        public var phase: String?
        public var reason: String?
        public var succeeded: Bool?

        public static func accepted(id: String, image: String) -> Event { Event(type: .accepted, id: id, image: image) }
        public static func progress(_ line: ProgressLine) -> Event { Event(type: .progress, progress: line) }
        public static func result(_ record: DeployRecord) -> Event { Event(type: .result, id: record.id, record: record) }
        public static func node(_ name: String, phase: String, reason: String?) -> Event {
            Event(type: .node, node: name, phase: phase, reason: reason)
        }
        public static func rollout(id: String, image: String, succeeded: Bool, reason: String?) -> Event {
            Event(type: .rollout, id: id, image: image, reason: reason, succeeded: succeeded)
        }
    }

    public struct ProgressLine: Codable, Sendable, Hashable {
        public var step: String
        public var status: String
        public var elapsedMs: Int64
        public var totalMs: Int64
        public var detail: String

        public init(_ progress: Swap.Progress) {
            step = progress.step.rawValue
            status = progress.status.rawValue
            elapsedMs = progress.elapsed.milliseconds
            totalMs = progress.total.milliseconds
            detail = progress.detail
        }
    }

    /// `{"error": "…"}` with a 4xx/5xx status.
    public struct ErrorBody: Codable, Sendable {
        public var error: String
        /// Over the mesh (no HTTP status there): `refused`, `unavailable`, `not-found`, `bad-request`.
        public var code: String?
        public init(error: String, code: String? = nil) {
            self.error = error
            self.code = code
        }
    }

    /// `POST /v1/rollout/follow` and `POST /v1/rollout/cancel`: which rollout (nil: the current one).
    public struct RolloutRequest: Codable, Sendable {
        public var id: String?
        public var requestedBy: String?
        public init(id: String? = nil, requestedBy: String? = nil) {
            self.id = id
            self.requestedBy = requestedBy
        }
    }

    /// `POST /v1/rollout/cancel`: the rollout that is being stopped.
    public struct Cancelled: Codable, Sendable {
        public var id: String
        public init(id: String) { self.id = id }
    }

    /// `POST /v1/revocations`: revocations signed by the cluster CA (`peerctl cert revoke`), for every node.
    public struct RevocationRequest: Codable, Sendable {
        public var revocations: [Revocation]
        public var requestedBy: String?
        public init(revocations: [Revocation], requestedBy: String? = nil) {
            self.revocations = revocations
            self.requestedBy = requestedBy
        }
    }

    /// `GET` and `POST /v1/revocations`: what the node holds (each already checked against the cluster CA).
    public struct Revocations: Codable, Sendable {
        public var revocations: [Revocation]
        /// Names the set; every node that announces it holds the same revocations. nil: none.
        public var digest: String?
        /// For a `POST`: how many of the request's were new here, and how many were refused (not signed by this
        /// cluster's CA).
        public var added: Int?
        public var refused: Int?

        public init(revocations: [Revocation], digest: String?, added: Int? = nil, refused: Int? = nil) {
            self.revocations = revocations
            self.digest = digest
            self.added = added
            self.refused = refused
        }
    }

    /// `POST /v1/tls`: the origin certificate (leaf first, then intermediates) and its key, PEM.
    public struct TLSRequest: Codable, Sendable {
        public var certificatePEM: String
        public var keyPEM: String
        public var requestedBy: String?
        /// The CA's or an operator's signature letting the pair into the cluster (``PKI/OriginAuthority``).
        public var authority: OriginAuthority?
        public init(certificatePEM: String, keyPEM: String, requestedBy: String? = nil, authority: OriginAuthority? = nil) {
            self.certificatePEM = certificatePEM
            self.keyPEM = keyPEM
            self.requestedBy = requestedBy
            self.authority = authority
        }
    }

    /// The origin certificate a node's nginx serves on its HTTPS listener (never the key).
    public struct OriginTLS: Codable, Sendable, Hashable {
        public var fingerprint: String
        public var names: [String]
        public var issuer: String
        public var notValidAfter: Date
        public var daysLeft: Int
        public var setAt: Date
        public var listen: String
        /// off, optional or on (Authenticated Origin Pulls).
        public var originPulls: String

        public init(
            fingerprint: String, names: [String], issuer: String, notValidAfter: Date, daysLeft: Int, setAt: Date, listen: String, originPulls: String
        ) {
            self.fingerprint = fingerprint
            self.names = names
            self.issuer = issuer
            self.notValidAfter = notValidAfter
            self.daysLeft = daysLeft
            self.setAt = setAt
            self.listen = listen
            self.originPulls = originPulls
        }
    }

    public struct NodeStatus: Codable, Sendable {
        public var node: String
        public var address: String
        public var app: String
        public var serving: AppInstance?
        public var servingSince: Date?
        public var previousImage: String?
        public var deploying: NodeState.InProgress?
        public var lastDeploy: DeployRecord?
        public var starting: String?
        public var nginx: Nginx
        public var docker: Docker
        public var peerd: Peerd
        /// nil until `peerctl tls set`.
        public var originCertificate: OriginTLS?

        public struct Nginx: Codable, Sendable {
            public var site: String
            public var listen: String
            public var running: Bool
            public var routedGeneration: Int?

            public init(site: String, listen: String, running: Bool, routedGeneration: Int? = nil) {
                self.site = site
                self.listen = listen
                self.running = running
                self.routedGeneration = routedGeneration
            }
        }
        public struct Docker: Codable, Sendable {
            public var socket: String
            public var reachable: Bool
            public var apiVersion: String?
            public var error: String?

            public init(socket: String, reachable: Bool, apiVersion: String? = nil, error: String? = nil) {
                self.socket = socket
                self.reachable = reachable
                self.apiVersion = apiVersion
                self.error = error
            }
        }
        public struct Peerd: Codable, Sendable {
            public var version: String
            public var pid: Int32
            public var rssBytes: Int
            public var startedAt: Date

            public init(version: String, pid: Int32, rssBytes: Int, startedAt: Date) {
                self.version = version
                self.pid = pid
                self.rssBytes = rssBytes
                self.startedAt = startedAt
            }
        }

        public init(
            node: String, address: String, app: String, serving: AppInstance? = nil, servingSince: Date? = nil, previousImage: String? = nil,
            deploying: NodeState.InProgress? = nil, lastDeploy: DeployRecord? = nil, starting: String? = nil, nginx: Nginx, docker: Docker,
            peerd: Peerd, originCertificate: OriginTLS? = nil
        ) {
            self.node = node
            self.address = address
            self.app = app
            self.serving = serving
            self.servingSince = servingSince
            self.previousImage = previousImage
            self.deploying = deploying
            self.lastDeploy = lastDeploy
            self.starting = starting
            self.nginx = nginx
            self.docker = docker
            self.peerd = peerd
            self.originCertificate = originCertificate
        }
    }

    public static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        e.dateEncodingStrategy = .peerISO8601
        return e
    }()

    public static let decoder: JSONDecoder = {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .peerISO8601
        return d
    }()
}
