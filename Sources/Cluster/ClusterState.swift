import Leadership
import Membership
import PeerCore

/// The cluster as this node sees it: what its mesh publishes after every change of a member's state, of the
/// leadership or of this node's lease — one immutable value that services consume instead of asking the mesh.
///
/// Measurements that change with every datagram (last seen, round-trip times, counters) are not part of it:
/// publishing them would wake every consumer many times a second. They are read where they are shown.
public struct ClusterState: Sendable, Hashable {
    public typealias Member = MemberState<AppStatus>

    public var me: MemberID
    /// Every member, this node included, by name.
    public var members: [Member]
    /// The members that run the app and can lead (not witnesses).
    public var appNodes: Set<MemberID>
    /// The lease as this node holds or knows it.
    public var lease: Lease.View
    /// When this node's membership started, and how long its view takes to fill in.
    public var startedAt: Instant
    public var startupGrace: Duration
    /// Members that announce (or last announced) another cluster configuration than this node's: nobody leads
    /// until every member lists the same members (``MeshNode/configuration``).
    public var otherConfigurations: [MemberID] = []
    /// Members' public addresses as this node's configuration gives them (`public_address` in `mesh.members`): what
    /// their DNS records point at, whatever they announce. A member the configuration gives none for: the address
    /// it announces.
    public var publicAddresses: [MemberID: String] = [:]
    /// The cluster's committed configuration as this node holds it, and a change under way (``ConfiguredLease``).
    public var configuration: Configuration?
    public var pendingConfiguration: Configuration?

    public init(me: MemberID, members: [Member], appNodes: Set<MemberID>, lease: Lease.View, startedAt: Instant, startupGrace: Duration) {
        self.me = me
        self.members = members
        self.appNodes = appNodes
        self.lease = lease
        self.startedAt = startedAt
        self.startupGrace = startupGrace
    }

    /// Before the mesh has started: nobody known, nobody leads.
    public static func unstarted(me: MemberID) -> ClusterState {
        ClusterState(
            me: me, members: [], appNodes: [], lease: Lease.View(me: me, voters: [], promised: 0), startedAt: Instant(nanoseconds: 0),
            startupGrace: .zero)
    }

    /// The term under which this node leads at `now` with at least `atLeast` of its lease left, and how much is
    /// left: ask right before every fenced action (a DNS write, a notification).
    public func fence(now: Instant, atLeast: Duration = .zero) -> (term: UInt64, remaining: Duration)? {
        guard let term = lease.validTerm(now: now), let remaining = lease.remaining(now: now), remaining >= atLeast else { return nil }
        return (term, remaining)
    }

    /// The app nodes (not witnesses), in name order.
    public var appMembers: [Member] { members.filter { appNodes.contains($0.id) } }

    public func member(_ id: MemberID) -> Member? { members.first { $0.id == id } }

    /// This node's view has had the start-up grace to fill in (plus `margin`).
    public func settled(now: Instant, margin: Duration = .zero) -> Bool { now >= startedAt + startupGrace + margin }
}
