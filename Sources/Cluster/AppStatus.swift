import Deployment
import Membership
import PeerCore

/// What a member says about its app, gossiped with its liveness so every peer knows every node's app health and
/// version without asking. A witness runs no app: `healthy` is nil.
public struct AppStatus: SWIMPayload {
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
    /// The digest of the node's cluster configuration (``MeshNode/configuration``): members that announce another
    /// one count their majorities differently, and nobody leads until they agree. nil from a peerd before it.
    public var configuration: String?
    /// The digest of the certificate revocations the node holds (``PKI/RevocationList/digest``), so the others can
    /// hand it the ones it lacks. nil when it holds none, or from a peerd before revocations.
    public var revocations: String?

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

    /// The most bytes of free text (a failure's reason, who asked) a status carries per field: enough for a
    /// sentence, and a full sync of a few dozen members stays far below a datagram's limit. Images need no cut:
    /// a reference is refused over 255 + 128 characters where it enters (``ImageReference``).
    public static let maximumText = 300

    /// A copy relayed by a peerd that predates ``configuration`` or ``revocations`` lacks them: that is not another
    /// status.
    public func differs(from mine: AppStatus) -> Bool {
        var copy = self
        if copy.configuration == nil { copy.configuration = mine.configuration }
        if copy.revocations == nil { copy.revocations = mine.revocations }
        return copy.bounded() != mine.bounded()
    }

    public func bounded() -> AppStatus {
        var status = self
        status.address = address?.cut(toBytes: 64)
        status.configuration = configuration?.cut(toBytes: 64)
        status.revocations = revocations?.cut(toBytes: 64)
        status.runningDeploy?.reason = runningDeploy?.reason?.cut(toBytes: Self.maximumText)
        status.lastDeploy?.reason = lastDeploy?.reason?.cut(toBytes: Self.maximumText)
        status.rollout?.requestedBy = rollout?.requestedBy.cut(toBytes: 128) ?? ""
        status.rollout?.cancelled = rollout?.cancelled?.cut(toBytes: Self.maximumText)
        status.rolloutReport?.reason = rolloutReport?.reason?.cut(toBytes: Self.maximumText)
        return status
    }
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

/// What this node's services announce about it, each its own part: the app check its health, image and deploys
/// (``AppReport``), the rollout service its intent and report, the origin service the certificate it serves. The
/// mesh gossips them together, with what only it knows (address, certificate days), as this node's ``AppStatus``.
public struct Announcement: Sendable, Hashable {
    public var app: AppReport
    public var rollout: RolloutIntent?
    public var rolloutReport: RolloutReport?
    public var origin: OriginMark?
    /// The digest of the certificate revocations this node holds (the revocation service's).
    public var revocations: String?

    public init(
        app: AppReport = .none, rollout: RolloutIntent? = nil, rolloutReport: RolloutReport? = nil, origin: OriginMark? = nil,
        revocations: String? = nil
    ) {
        self.app = app
        self.rollout = rollout
        self.rolloutReport = rolloutReport
        self.origin = origin
        self.revocations = revocations
    }

    /// This node's gossiped status: the announcements with its public address (nil for a witness) and the days
    /// its mesh certificate has left.
    public func status(address: String?, certificateDaysLeft: Int?) -> AppStatus {
        var status = AppStatus(
            healthy: app.healthy, image: app.image, address: address, runningDeploy: app.runningDeploy, lastDeploy: app.lastDeploy,
            certificateDaysLeft: certificateDaysLeft)
        status.rollout = rollout
        status.rolloutReport = rolloutReport
        status.origin = origin
        status.revocations = revocations
        return status
    }
}

/// What this node's app check observed: health (nil on a witness), image, and its deploys.
public struct AppReport: Sendable, Hashable {
    public var healthy: Bool?
    public var image: String?
    public var runningDeploy: DeployMark?
    public var lastDeploy: DeployMark?

    public init(healthy: Bool?, image: String?, runningDeploy: DeployMark? = nil, lastDeploy: DeployMark? = nil) {
        self.healthy = healthy
        self.image = image
        self.runningDeploy = runningDeploy
        self.lastDeploy = lastDeploy
    }

    public static let none = AppReport(healthy: nil, image: nil)
}
