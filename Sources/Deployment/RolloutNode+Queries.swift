import PeerCore

/// What a node reads off the members' gossip: reports, the newest intent, whether one is replicated.
extension RolloutNode {
    /// Every node of the intent but this one has done its part (and there is at least one). A node the intent
    /// does not name (it joined after the rollout began) is behind once they all have.
    static func othersDone(_ intent: RolloutIntent, me: String, reports: [String: RolloutReport]) -> Bool {
        let others = intent.order.filter { $0 != me }
        return !others.isEmpty && others.allSatisfy { reports[$0]?.intent == intent.id && reports[$0]?.phase == .done }
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

    /// Every intent this node knows with authority: its own and those the members gossip that it would take
    /// (``authoritative(in:leader:holding:)``).
    public func known(_ members: [Member], leader: String?) -> [RolloutIntent] {
        [intent].compactMap { $0 } + Self.authoritative(in: members, leader: leader, holding: intent)
    }

    /// The intents the members gossip that have authority (`members`: every app node; `holding`: this node's own):
    /// - what `leader` gossips: intents are made, re-stamped under a renewed term and cancelled by the leader;
    /// - a copy that a majority of the app nodes gossip as it is: a node that missed it while it ran, the leader that
    ///   made it gone since, catches up (a majority of all app nodes, not of the copy's own `order`, which a member
    ///   could write as itself alone);
    /// - the cancellation of this node's intent by the leader that made it, which may have lost its lease since —
    ///   that intent with `cancelled` set, nothing else changed.
    /// Any other member's copy, a new intent or a changed one (another image, a cancellation), is not taken from it: a
    /// member cannot deploy or stop a deploy on its own. (Each member's gossip is its own, signed: see `MeshNode`.)
    public static func authoritative(in members: [Member], leader: String?, holding: RolloutIntent?) -> [RolloutIntent] {
        let majority = members.count / 2 + 1
        return members.compactMap { member in
            guard let intent = member.intent, Counter.isPlausible(intent.term ?? 0), Counter.isPlausible(intent.seq) else { return nil }
            if member.name == leader { return intent }
            if let holding, intent.cancelled != nil, holding.cancelled == nil, let proposer = holding.proposer, member.name == proposer {
                // Its cancellation only: the same intent in every other field (not another image to go back to, not
                // a term that would outrank every later intent).
                var uncancelled = intent
                uncancelled.cancelled = nil
                if uncancelled == holding { return intent }
            }
            return members.filter { $0.intent.map { $0.isCopy(of: intent) } == true }.count >= majority ? intent : nil
        }
    }

    /// The newest of them.
    public static func newest(in members: [Member], leader: String?, holding: RolloutIntent?) -> RolloutIntent? {
        authoritative(in: members, leader: leader, holding: holding).max { $1.isNewer(than: $0) }
    }

    static func isReplicated(_ intent: RolloutIntent, _ reports: [String: RolloutReport]) -> Bool {
        Rollout.replication(of: intent, reports: reports).holders >= intent.majority
    }
}
