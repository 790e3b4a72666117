import PeerCore

/// Who the cluster's members are, as one versioned document: the voters every lease majority is counted over.
///
/// It changes only through the lease leader, one voter at a time, and a change is committed by a majority of the
/// old voters and a majority of the new ones (``ConfiguredLease``). The `epoch` counts committed changes; `term`
/// is the lease term of the leader that proposed it, and orders two proposals for the same epoch (only one of
/// which can be committed). A node holds the newest configuration it has taken — committed, or proposed and not
/// yet committed — and its ``position`` is that configuration's `(epoch, term)`.
public struct Configuration: Sendable, Hashable, Codable {
    public struct Member: Sendable, Hashable, Codable, Comparable {
        public var id: MemberID
        /// Its mesh listener, `host:port`.
        public var address: String
        /// Runs the app and can lead (false for a witness, which only votes).
        public var appNode: Bool
        /// Its public address (its DNS record), when the configuration gives it.
        public var publicAddress: String?

        public init(id: MemberID, address: String, appNode: Bool, publicAddress: String? = nil) {
            self.id = id
            self.address = address
            self.appNode = appNode
            self.publicAddress = publicAddress
        }

        public static func < (a: Member, b: Member) -> Bool { a.id < b.id }
    }

    /// Where a node stands: the newest configuration it holds. Ordered by epoch, then by the proposing term: a
    /// node at a higher epoch knows every configuration committed before it.
    public struct Position: Sendable, Hashable, Codable, Comparable, CustomStringConvertible {
        public var epoch: UInt64
        public var term: UInt64
        public init(epoch: UInt64, term: UInt64) {
            self.epoch = epoch
            self.term = term
        }
        public static func < (a: Position, b: Position) -> Bool { (a.epoch, a.term) < (b.epoch, b.term) }
        /// Every node's configuration before any change: the member list each node was set up with.
        public static let initial = Position(epoch: 1, term: 0)
        public var description: String { "epoch \(epoch) (term \(term))" }
    }

    public var epoch: UInt64
    public var term: UInt64
    /// Sorted by id, each id once.
    public private(set) var members: [Member]
    /// The members committed changes took out, as they last were (sorted, none of them a member): their DNS records
    /// are the leader's to take away — nobody else would, once they are no member. A member added again leaves it.
    /// Nil while there are none (a configuration without removals has the same bytes as before there were any).
    public private(set) var removed: [Member]?

    public init(epoch: UInt64, term: UInt64, members: [Member], removed: [Member] = []) {
        self.epoch = epoch
        self.term = term
        var seen = Set<MemberID>()
        self.members = members.sorted().filter { seen.insert($0.id).inserted }
        // The first of an id wins (``next(members:term:)`` puts the newest first), then sorted.
        let gone = removed.filter { seen.insert($0.id).inserted }.sorted()
        self.removed = gone.isEmpty ? nil : gone
    }

    /// The configuration that follows this one with `members`: the next epoch, proposed under `term`; the members it
    /// leaves out join ``removed``.
    public func next(members: [Member], term: UInt64) -> Configuration {
        let kept = Set(members.map(\.id))
        // The newest state of a member first: one removed, added again and removed again is kept as it was last.
        let gone = self.members.filter { !kept.contains($0.id) } + (removed ?? [])
        return Configuration(epoch: epoch + 1, term: term, members: members, removed: gone)
    }

    /// The members that run no app in this configuration: those changes took out, and its witnesses (a node made one
    /// online included). Whatever DNS record one of them has is the leader's to take away.
    public var withoutApp: [Member] { (removed ?? []) + members.filter { !$0.appNode } }

    /// A cluster's first configuration: the member list every node was set up with.
    public static func initial(_ members: [Member]) -> Configuration {
        Configuration(epoch: Position.initial.epoch, term: Position.initial.term, members: members)
    }

    public var position: Position { Position(epoch: epoch, term: term) }
    /// Every member votes, witnesses too.
    public var voters: [MemberID] { members.map(\.id) }
    public var appNodes: [MemberID] { members.filter(\.appNode).map(\.id) }

    public func member(_ id: MemberID) -> Member? { members.first { $0.id == id } }

    /// Whether `members` can follow this configuration in one change: at most one voter added or removed (what
    /// else changes — addresses, roles — does not change who counts).
    public func isOneStep(to members: [Member]) -> Bool {
        let old = Set(voters)
        let new = Set(members.map(\.id))
        return old.symmetricDifference(new).count <= 1
    }

    /// Whether `grants` hold a majority of this configuration's voters.
    public func isMajority(_ grants: Set<MemberID>) -> Bool { Self.isMajority(grants, of: voters) }

    /// Whether `grants` hold a majority of `voters`: more than half of them.
    public static func isMajority(_ grants: Set<MemberID>, of voters: [MemberID]) -> Bool {
        voters.filter(grants.contains).count >= voters.count / 2 + 1
    }
}
