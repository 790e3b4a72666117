import PeerCore

/// What a member says about its app, gossiped with its liveness so every peer knows every node's app health and
/// version without asking. A witness runs no app: `healthy` is nil.
public struct AppStatus: Sendable, Hashable, Codable {
    public var healthy: Bool?
    /// The image the node serves, if any.
    public var image: String?
    /// The node's public address (`node.address`): what its DNS record points at. nil for a witness.
    public var address: String?

    public init(healthy: Bool?, image: String?, address: String? = nil) {
        self.healthy = healthy
        self.image = image
        self.address = address
    }

    public static let none = AppStatus(healthy: nil, image: nil)
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
