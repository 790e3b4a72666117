import Deployment
import PeerCore

/// What a member says about its app, gossiped with its liveness so every peer knows every node's app health and
/// version without asking. A witness runs no app: `healthy` is nil.
public struct AppStatus: Sendable, Hashable, Codable {
    public var healthy: Bool?
    /// The image the node serves, if any.
    public var image: String?
    /// The node's public address (`node.address`): what its DNS record points at. nil for a witness.
    public var address: String?
    /// The node's deploy under way and its last finished one, so the leader can tell the operator how they went
    /// (two fields: a deploy that starts right after another finished must not hide that one's result).
    public var runningDeploy: DeployMark?
    public var lastDeploy: DeployMark?
    /// Days until this node's mesh certificate expires.
    public var certificateDaysLeft: Int?
    /// The cluster deploy this node knows (persisted) and its own part in it.
    public var rollout: RolloutIntent?
    public var rolloutReport: RolloutReport?
    /// The origin certificate this node's nginx serves (`peerctl tls set`), so the others can hand a newer one to
    /// a node that missed it.
    public var origin: OriginMark?

    public init(
        healthy: Bool?, image: String?, address: String? = nil, runningDeploy: DeployMark? = nil, lastDeploy: DeployMark? = nil,
        certificateDaysLeft: Int? = nil
    ) {
        self.healthy = healthy
        self.image = image
        self.address = address
        self.runningDeploy = runningDeploy
        self.lastDeploy = lastDeploy
        self.certificateDaysLeft = certificateDaysLeft
    }

    public static let none = AppStatus(healthy: nil, image: nil)
}

/// Which origin certificate a node serves: the newest (by `setAt`, then fingerprint) wins in the cluster.
public struct OriginMark: Sendable, Hashable, Codable, Comparable {
    /// The first 16 hex digits of the certificate's SHA-256.
    public var fingerprint: String
    /// When an operator set it (milliseconds since 1970, the clock of the node that took the request).
    public var setAt: Int64
    /// When it expires (seconds since 1970).
    public var notAfter: Int64

    public init(fingerprint: String, setAt: Int64, notAfter: Int64) {
        self.fingerprint = String(fingerprint.prefix(16))
        self.setAt = setAt
        self.notAfter = notAfter
    }

    public static func < (a: OriginMark, b: OriginMark) -> Bool { (a.setAt, a.fingerprint) < (b.setAt, b.fingerprint) }
}

/// A node's latest deploy or rollback, as gossiped.
public struct DeployMark: Sendable, Hashable, Codable {
    public var id: String
    /// `deploy` or `rollback`.
    public var kind: String
    public var image: String
    /// `running`, `succeeded`, `failed` or `interrupted`.
    public var state: String
    public var reason: String?

    public init(id: String, kind: String, image: String, state: String, reason: String? = nil) {
        self.id = id
        self.kind = kind
        self.image = image
        self.state = state
        self.reason = reason
    }
}

public enum MemberStatus: UInt8, Sendable, Hashable, Codable, CustomStringConvertible {
    case alive = 0, suspect = 1, dead = 2
    public var description: String {
        switch self {
        case .alive: "alive"
        case .suspect: "suspect"
        case .dead: "dead"
        }
    }
}

/// One member's state as the cluster gossips it. Only the member itself raises its incarnation: to refute a
/// suspicion, to come back after being declared dead, or to announce a change of its app.
public struct MemberState: Sendable, Hashable, Codable {
    public var id: MemberID
    /// Where its mesh listener is, `host:port`.
    public var address: String
    public var incarnation: UInt64
    public var status: MemberStatus
    public var app: AppStatus
    /// For a suspicion: who raised it. Lifeguard counts independent suspicions to shorten the timeout, so the
    /// originator has to travel with the gossip.
    public var suspectedBy: MemberID?

    public init(
        id: MemberID, address: String, incarnation: UInt64 = 0, status: MemberStatus = .alive, app: AppStatus = .none,
        suspectedBy: MemberID? = nil
    ) {
        self.id = id
        self.address = address
        self.incarnation = incarnation
        self.status = status
        self.app = app
        self.suspectedBy = suspectedBy
    }

    /// SWIM's precedence: a higher incarnation wins; at the same incarnation dead > suspect > alive.
    public func supersedes(_ other: MemberState) -> Bool {
        if incarnation != other.incarnation { return incarnation > other.incarnation }
        return status.rawValue > other.status.rawValue
    }
}
