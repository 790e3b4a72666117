import PeerCore

/// A DNS record as the provider lists it.
public struct DNSRecord: Sendable, Hashable, Codable {
    public var id: String
    public var type: String
    public var name: String
    public var content: String
    public var proxied: Bool?
    public var ttl: Int?
    public var comment: String?

    public init(id: String, type: String, name: String, content: String, proxied: Bool? = nil, ttl: Int? = nil, comment: String? = nil) {
        self.id = id
        self.type = type
        self.name = name
        self.content = content
        self.proxied = proxied
        self.ttl = ttl
        self.comment = comment
    }
}

/// One member as the planner needs it: where its record points and whether it can serve now.
public struct DNSMember: Sendable, Hashable {
    public var name: String
    /// Its public address (`node.address`): the content of its A or AAAA record.
    public var address: String
    /// Alive in the membership and its app healthy.
    public var serving: Bool

    public init(name: String, address: String, serving: Bool) {
        self.name = name
        self.address = address
        self.serving = serving
    }
}

/// The change set to send as one batch call.
public struct DNSChangeSet: Sendable, Hashable {
    public var deletes: [DNSRecord] = []
    /// Addresses to create records for (A for IPv4, AAAA for IPv6).
    public var creates: [String] = []
    public var isEmpty: Bool { deletes.isEmpty && creates.isEmpty }
    public init(deletes: [DNSRecord] = [], creates: [String] = []) {
        self.deletes = deletes
        self.creates = creates
    }
}

/// What the records of the app's name should be, from the members' state — a pure planner.
///
/// - Desired: the address of every member that serves (alive, app healthy). Removal is immediate; a member that
///   comes back must serve for ``holdDown`` before its record returns (no flapping).
/// - Only records the cluster manages are touched: A/AAAA records of the name whose content is the address of a
///   member this node knows. Anything else on the name is left alone.
/// - Never zero: when no member serves (a shared database is down, say), nothing is removed and the plan says
///   `failOpen` so the leader alerts — like Cloudflare's own load balancer, which serves from every origin when
///   all are unhealthy. A plan also never deletes the last record of the name.
public struct DNSPlanner: Sendable {
    public static let comment = "managed by peer"

    public struct Plan: Sendable, Hashable {
        public var changes: DNSChangeSet
        /// No member serves: records are kept as they are.
        public var failOpen: Bool
        /// Members held down (serving again, not yet long enough), by name.
        public var heldDown: [String]
        /// When the first of them has served long enough: plan again then.
        public var heldDownUntil: Instant?
    }

    public var holdDown: Duration
    private var servingSince: [String: Instant] = [:]

    public init(holdDown: Duration) { self.holdDown = holdDown }

    public mutating func plan(members: [DNSMember], records: [DNSRecord], name: String, now: Instant) -> Plan {
        for member in members {
            if member.serving {
                if servingSince[member.address] == nil { servingSince[member.address] = now }
            } else {
                servingSince[member.address] = nil
            }
        }
        // Ours: records of the name that point at a member we know. A record with peer's comment that points
        // elsewhere (a member whose state this node has not heard yet, or one no longer configured) is left alone.
        let addresses = Set(members.map(\.address))
        let ours = records.filter {
            ($0.type == "A" || $0.type == "AAAA") && $0.name.lowercased() == name.lowercased() && addresses.contains($0.content)
        }
        let present = Set(ours.map(\.content))
        var desired: Set<String> = []
        var heldDown: [String] = []
        var heldDownUntil: Instant?
        for member in members where member.serving {
            // A record that is there stays; a new one waits out the hold-down.
            let until = (servingSince[member.address] ?? now) + holdDown
            if present.contains(member.address) || now >= until {
                desired.insert(member.address)
            } else {
                heldDown.append(member.name)
                heldDownUntil = min(heldDownUntil ?? until, until)
            }
        }
        guard !desired.isEmpty else {
            return Plan(
                changes: DNSChangeSet(), failOpen: members.allSatisfy { !$0.serving }, heldDown: heldDown.sorted(),
                heldDownUntil: heldDownUntil)
        }
        var changes = DNSChangeSet()
        changes.deletes = ours.filter { !desired.contains($0.content) }.sorted { $0.content < $1.content }
        changes.creates = desired.subtracting(present).sorted()
        // Never the last record of the name (including records that are not ours).
        let allOfName = records.filter { ($0.type == "A" || $0.type == "AAAA") && $0.name.lowercased() == name.lowercased() }
        if allOfName.count - changes.deletes.count + changes.creates.count <= 0 { changes.deletes = [] }
        return Plan(changes: changes, failOpen: false, heldDown: heldDown.sorted(), heldDownUntil: heldDownUntil)
    }
}
