import PeerCore

/// What a node reads off the members' gossip: reports, the newest intent, whether one is replicated.
extension RolloutNode {
    /// Every node of the intent but this one has done its part (and there is at least one).
    static func othersDone(_ intent: RolloutIntent, me: String, reports: [String: RolloutReport]) -> Bool {
        let others = intent.order.filter { $0 != me }
        return intent.order.contains(me) && !others.isEmpty && others.allSatisfy { reports[$0]?.intent == intent.id && reports[$0]?.phase == .done }
    }

    /// Every member's report as gossiped, this node's own as it stands (its gossip may lag).
    public func reports(_ members: [Member]) -> [String: RolloutReport] {
        var out: [String: RolloutReport] = [:]
        for member in members { if let r = member.report { out[member.name] = r } }
        if let report { out[me] = report }
        return out
    }

    /// The members seen alive, this node included.
    public func alive(_ members: [Member]) -> Set<String> { Set(members.filter(\.alive).map(\.name)).union([me]) }

    /// Every intent this node knows: its own and each member's.
    public func known(_ members: [Member]) -> [RolloutIntent] { [intent].compactMap { $0 } + members.compactMap(\.intent) }

    /// The newest intent any member gossips.
    public static func newest(in members: [Member]) -> RolloutIntent? {
        members.compactMap(\.intent).filter { Counter.isPlausible($0.term ?? 0) && Counter.isPlausible($0.seq) }.max { $1.isNewer(than: $0) }
    }

    static func isReplicated(_ intent: RolloutIntent, _ reports: [String: RolloutReport]) -> Bool {
        Rollout.replication(of: intent, reports: reports).holders >= intent.majority
    }
}
