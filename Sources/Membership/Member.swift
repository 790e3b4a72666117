import PeerCore

/// What a member says about itself beyond liveness, gossiped with it (the app's health and version, in peer). The
/// protocol only compares and carries it; `none` is what a member says before it has said anything.
public protocol SWIMPayload: Sendable, Hashable, Codable {
    static var none: Self { get }
    /// The payload cut to the sizes gossip carries: applied to what this node announces and to every update it
    /// takes, so no member's state can grow a datagram past what receivers accept.
    func bounded() -> Self
    /// Whether a copy of this node's own payload (`self`, as another member holds it under this node's current
    /// incarnation) is another payload than `mine` — a previous life's, to refute — rather than `mine` as an
    /// older peer relays it (without the fields it does not know).
    func differs(from mine: Self) -> Bool
}

extension SWIMPayload {
    public func bounded() -> Self { self }
    public func differs(from mine: Self) -> Bool { self != mine }
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
public struct MemberState<App: SWIMPayload>: Sendable, Hashable, Codable {
    public var id: MemberID
    /// Where its mesh listener is, `host:port`.
    public var address: String
    public var incarnation: UInt64
    public var status: MemberStatus
    public var app: App
    /// For a suspicion: who raised it. Lifeguard counts independent suspicions to shorten the timeout, so the
    /// originator has to travel with the gossip.
    public var suspectedBy: MemberID?
    /// The member's own signature over its claim at this incarnation (its id, incarnation and app), so that a
    /// member relaying it cannot change what it says: the protocol carries it and never reads it; the shell signs
    /// this node's state on the way out and checks the others' where it takes them (``MeshNode``). nil from a
    /// member that does not sign (a peerd before it), and for a state never heard first-hand.
    public var proof: String?

    public init(
        id: MemberID, address: String, incarnation: UInt64 = 0, status: MemberStatus = .alive, app: App = .none,
        suspectedBy: MemberID? = nil, proof: String? = nil
    ) {
        self.id = id
        self.address = address
        self.incarnation = incarnation
        self.status = status
        self.app = app
        self.suspectedBy = suspectedBy
        self.proof = proof
    }

    /// SWIM's precedence: a higher incarnation wins; at the same incarnation dead > suspect > alive.
    public func supersedes(_ other: MemberState) -> Bool {
        if incarnation != other.incarnation { return incarnation > other.incarnation }
        return status.rawValue > other.status.rawValue
    }
}
