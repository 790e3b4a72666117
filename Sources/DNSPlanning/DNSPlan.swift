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
    /// Its public address (`node.address`): the content of its A or AAAA record. nil while no live node has heard
    /// it (the member has been down since this node started): its record is then known by the record's comment.
    public var address: String?
    /// Alive in the membership and its app healthy.
    public var serving: Bool

    public init(name: String, address: String?, serving: Bool) {
        self.name = name
        self.address = address
        self.serving = serving
    }
}

/// One `/batch` call. The provider runs it as one transaction — deletes, patches, posts — so a batch that deletes
/// also patches a record it keeps (`guarded`, its comment set to this write's): if someone removed that record in
/// the meantime (a hand edit, a late write), the provider refuses the whole batch and nothing is deleted. A batch
/// never deletes without keeping a record of the name that it has just checked is there.
public struct DNSBatch: Sendable, Hashable {
    public struct Create: Sendable, Hashable {
        public var member: String
        public var address: String
        public init(member: String, address: String) {
            self.member = member
            self.address = address
        }
    }

    public var deletes: [DNSRecord]
    /// Whose record each delete removes, by record id.
    public var owners: [String: String]
    /// The record the batch keeps and patches (present when it deletes), with the member it belongs to.
    public var guarded: (record: DNSRecord, member: String)?
    /// New records (A for IPv4, AAAA for IPv6).
    public var creates: [Create]

    public init(
        deletes: [DNSRecord] = [], owners: [String: String] = [:], guarded: (record: DNSRecord, member: String)? = nil, creates: [Create] = []
    ) {
        self.deletes = deletes
        self.owners = owners
        self.guarded = guarded
        self.creates = creates
    }

    public var isEmpty: Bool { deletes.isEmpty && creates.isEmpty }

    public static func == (a: DNSBatch, b: DNSBatch) -> Bool {
        a.deletes == b.deletes && a.owners == b.owners && a.creates == b.creates && a.guarded?.record == b.guarded?.record
            && a.guarded?.member == b.guarded?.member
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(deletes)
        hasher.combine(creates)
        hasher.combine(guarded?.record)
        hasher.combine(guarded?.member)
    }
}

/// What the records of the app's name should be, from the members' state — a pure planner.
///
/// - Desired: the address of every member that serves (alive, app healthy). Removal is immediate; a member that
///   comes back must serve for ``holdDown`` before its record returns (no flapping).
/// - Only records the cluster manages are touched: A/AAAA records of the name whose content is the address of a
///   member, or whose comment names a member (``comment(member:term:)``). Anything else on the name is left alone.
/// - Never zero: when no member serves (a shared database is down, say), nothing is removed and the plan says
///   `failOpen` so the leader alerts — like Cloudflare's own load balancer, which serves from every origin when
///   all are unhealthy. A batch deletes only while it keeps one of ours that the records show (and patches it, so
///   the provider checks it is still there); a replacement posts first and deletes in a later batch.
public struct DNSPlanner: Sendable {
    /// The comment of records made by peer before the comment named the member and the term.
    public static let comment = "managed by peer"

    /// `managed by peer · node web-2 · term 7`: whose record it is, and the leader's term that wrote it last.
    public static func comment(member: String, term: UInt64) -> String { "\(comment) · node \(member) · term \(term)" }

    /// The member and term a comment of ``comment(member:term:)`` names.
    public static func parse(comment: String?) -> (member: String, term: UInt64?)? {
        guard let comment, comment.hasPrefix(Self.comment) else { return nil }
        var member: String?
        var term: UInt64?
        for part in comment.split(separator: "·").map({ String($0.drop { $0 == " " }.reversed().drop { $0 == " " }.reversed()) }) {
            if part.hasPrefix("node ") { member = String(part.dropFirst(5)) }
            if part.hasPrefix("term ") { term = UInt64(part.dropFirst(5)) }
        }
        return member.map { ($0, term) }
    }

    public struct Plan: Sendable, Hashable {
        /// The next call to make, if any; what follows it is planned again after it (from the records it left).
        public var batch: DNSBatch?
        /// Deletes that wait: nothing of ours would be left to keep (they follow once a new record is in).
        public var withheldDeletes: Int
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

    /// Plans from `records` — which, for a plan that deletes, must be a listing made just now.
    public mutating func plan(members: [DNSMember], records: [DNSRecord], name: String, now: Instant) -> Plan {
        // One form for every address: a config's `2001:DB8:0::1` and the provider's `2001:db8::1` are one record,
        // not a record to delete and another to create on every pass.
        let members = members.map { m in DNSMember(name: m.name, address: m.address.map(canonicalIPAddress), serving: m.serving) }
        let records = records.map { r in
            var r = r
            r.content = canonicalIPAddress(r.content)
            return r
        }
        for member in members {
            if member.serving {
                if servingSince[member.name] == nil { servingSince[member.name] = now }
            } else {
                servingSince[member.name] = nil
            }
        }
        let byAddress = Dictionary(members.compactMap { m in m.address.map { ($0, m.name) } }, uniquingKeysWith: { a, _ in a })
        let names = Set(members.map(\.name))
        // Ours: records of the name that point at a member's address, or that a member's comment names.
        func owner(_ record: DNSRecord) -> String? {
            if let name = byAddress[record.content] { return name }
            if let named = Self.parse(comment: record.comment)?.member, names.contains(named) { return named }
            return nil
        }
        let ofName = records.filter { ($0.type == "A" || $0.type == "AAAA") && $0.name.lowercased() == name.lowercased() }
        let ours = ofName.compactMap { record in owner(record).map { (record: record, member: $0) } }
        let present = Set(ours.map(\.record.content))
        var desired: [String: String] = [:]  // address → member
        var heldDown: [String] = []
        var heldDownUntil: Instant?
        for member in members where member.serving {
            guard let address = member.address else { continue }
            // A record that is there stays; a new one waits out the hold-down.
            let until = (servingSince[member.name] ?? now) + holdDown
            if present.contains(address) || now >= until {
                desired[address] = member.name
            } else {
                heldDown.append(member.name)
                heldDownUntil = min(heldDownUntil ?? until, until)
            }
        }
        var plan = Plan(batch: nil, withheldDeletes: 0, failOpen: false, heldDown: heldDown.sorted(), heldDownUntil: heldDownUntil)
        guard !desired.isEmpty else {
            plan.failOpen = members.allSatisfy { !$0.serving }
            return plan
        }
        let leaving = ours.filter { desired[$0.record.content] == nil }
        let deletes = leaving.map(\.record).sorted { $0.content < $1.content }
        let owners = Dictionary(leaving.map { ($0.record.id, $0.member) }, uniquingKeysWith: { a, _ in a })
        let creates = desired.filter { !present.contains($0.key) }.map { DNSBatch.Create(member: $0.value, address: $0.key) }
            .sorted { $0.address < $1.address }
        let kept = ours.filter { desired[$0.record.content] != nil }.min { $0.record.content < $1.record.content }
        switch (deletes.isEmpty, kept) {
        case (true, _):
            plan.batch = creates.isEmpty ? nil : DNSBatch(creates: creates)
        case (false, let kept?):
            plan.batch = DNSBatch(deletes: deletes, owners: owners, guarded: kept, creates: creates)
        case (false, nil):
            // Nothing of ours is left to keep: post the new records first, delete once they are listed.
            plan.batch = creates.isEmpty ? nil : DNSBatch(creates: creates)
            plan.withheldDeletes = deletes.count
        }
        return plan
    }

    /// Forgets who served since when: a node that starts leading counts every hold-down from its own first look.
    public mutating func reset() { servingSince = [:] }
}
