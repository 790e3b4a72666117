import PeerCore

/// The leader lease bound to the cluster's configuration, and the protocol that changes the configuration, as one
/// pure state machine per node.
///
/// - Every node holds a committed ``Configuration`` and, while a change is under way, the proposed one
///   (`pending`). Both are persisted (directive ``Directive/persistConfiguration(committed:pending:)``) before
///   anything that follows is sent. Lease majorities are counted over the committed voters and, while a change is
///   pending, over the proposed voters as well; a voter grants only to a candidate whose configuration is at
///   least as new as its own (``Lease/reconfigure(quorums:position:appNode:now:)``).
/// - Only the leader changes the configuration, one voter at a time (``propose(_:now:)``), and only once a lease
///   round confirmed it under the configuration it holds. It sends the proposal, tagged with its term, to the old
///   and new voters; a voter takes it only from the holder of its grant, persists it and accepts. With a majority
///   of the old voters and a majority of the new ones, the leader commits and tells everyone; a node that missed
///   it learns the committed configuration from the first message that shows it is behind.
/// - A leader that finds a proposal it did not commit (its own from before a lapse, or a previous leader's)
///   proposes it again under its term before anything else: a change a majority may already have committed is
///   never replaced by another (the Raft rule for the last entry, with `(epoch, term)` as the log position).
public struct ConfiguredLease: Sendable {
    public enum Message: Sendable, Hashable, Codable {
        /// `committed`: the epoch of the sender's committed configuration (its lease message carries the newest
        /// it holds, which may be a proposal): whoever is behind is sent the committed configuration.
        case lease(Lease.Message, committed: UInt64)
        /// The leader's proposal: the next epoch, tagged with its term.
        case propose(Configuration)
        /// A voter persisted the proposal at this position.
        case accept(Configuration.Position)
        /// A committed configuration: the leader's announcement, or an answer to a node that is behind.
        case commit(Configuration)
        /// A proposal not yet committed, for a candidate that lacks it: a voter that holds it grants only to a
        /// candidate that holds it too, and a witness cannot lead — without it nobody might ever win.
        case proposed(Configuration)
        /// The sender saw this node's committed configuration is newer than its own: send it.
        case fetch

        public var isPlausible: Bool {
            switch self {
            case .lease(let message, let committed): message.isPlausible && Counter.isPlausible(committed)
            case .propose(let configuration), .commit(let configuration), .proposed(let configuration): Self.plausible(configuration.position)
            case .accept(let position): Self.plausible(position)
            case .fetch: true
            }
        }

        private static func plausible(_ position: Configuration.Position) -> Bool {
            Counter.isPlausible(position.epoch) && Counter.isPlausible(position.term)
        }
    }

    public enum Directive: Sendable, Hashable {
        /// Persist the highest promised term before sending anything that follows.
        case persistTerm(UInt64)
        /// Persist the configurations before sending anything that follows (an acceptance a restart forgets is no
        /// acceptance).
        case persistConfiguration(committed: Configuration, pending: Configuration?)
        case send(to: MemberID, Message)
        /// This node became leader (a term) or stopped being it (nil).
        case leadership(term: UInt64?)
        /// The committed configuration changed: members, their addresses and roles follow it.
        case committed(Configuration)
    }

    public enum Refusal: Error, Sendable, Hashable, CustomStringConvertible {
        case notLeader
        /// A change is under way: one at a time.
        case changeUnderWay(Configuration.Position)
        /// The leader has not confirmed its lease under the configuration it holds yet: retry in a moment.
        case notConfirmed
        case moreThanOneVoter(added: [MemberID], removed: [MemberID])
        case noAppNode
        case unchanged

        public var description: String {
            switch self {
            case .notLeader: "this node does not lead: ask the leader (peerctl who)"
            case .changeUnderWay(let position): "a change to \(position) is under way: one change at a time, retry when it is committed"
            case .notConfirmed: "the leader has not confirmed its lease under the current configuration (or its term) yet: retry in a second"
            case .moreThanOneVoter(let added, let removed):
                "a change adds or removes one member at a time (this one adds \(added.map(\.name)) and removes \(removed.map(\.name))): make it in steps"
            case .noAppNode: "a configuration needs at least one app node (a witness cannot lead)"
            case .unchanged: "the configuration is unchanged"
            }
        }
    }

    public private(set) var lease: Lease
    public private(set) var committed: Configuration {
        didSet { appNodes = Self.appNodes(committed, pending) }
    }
    public private(set) var pending: Configuration? {
        didSet { appNodes = Self.appNodes(committed, pending) }
    }
    /// The app nodes of the configurations held: the lease's candidates (asked on every tick, kept as they change).
    public private(set) var appNodes: Set<MemberID> = []
    /// Leader: the voters that accepted `pending`.
    private var accepted: Set<MemberID> = []
    /// Leader: when `pending` is next sent again to the voters that have not accepted it.
    private var resendAt: Instant?
    /// The earliest lease confirmation a proposal may rely on: set when the configuration changes, so that the next
    /// change waits for a round counted over the voters it holds now.
    private var confirmAfter: Instant
    /// When this node last asked its voters for a round to that end: asked again only once that round could have
    /// been answered (a round asked for replaces the one in flight: asking at every retry would starve renewals).
    private var confirmAskedAt: Instant?

    public var me: MemberID { lease.me }
    public var position: Configuration.Position { (pending ?? committed).position }

    /// `committed`, `pending`: what this node persisted (for a new node, the cluster's initial configuration).
    public init(
        me: MemberID, committed: Configuration, pending: Configuration? = nil, promised: UInt64, settings: LeaseSettings, seed: UInt64,
        now: Instant
    ) {
        self.committed = committed
        self.pending = pending.flatMap { $0.epoch == committed.epoch + 1 ? $0 : nil }
        appNodes = Self.appNodes(committed, self.pending)
        // Voters, role and position come from the configurations (reconfigure, below).
        lease = Lease(me: me, voters: committed.voters, canLead: false, promised: promised, settings: settings, seed: seed, now: now)
        confirmAfter = now
        _ = lease.reconfigure(quorums: quorums, position: position, appNode: isAppNode, now: now)
    }

    private var quorums: [[MemberID]] { [committed.voters] + (pending.map { [$0.voters] } ?? []) }

    /// Whether this node runs the app in the newest configuration that names it (one that proposes its removal does
    /// not: a leader removing itself leads on until the change is committed).
    private var isAppNode: Bool { (pending?.member(me) ?? committed.member(me))?.appNode ?? false }

    /// The app nodes of the configurations this node holds (the lease's candidates).
    private static func appNodes(_ committed: Configuration, _ pending: Configuration?) -> Set<MemberID> {
        Set(committed.appNodes + (pending?.appNodes ?? []))
    }

    public func nextDeadline(now: Instant) -> Instant? {
        [lease.nextDeadline(now: now), isDueToSend(now: now) ? now : resendAt].compactMap { $0 }.min()
    }

    /// A leader holding a proposal sends it (again) to the voters that have not accepted it: at once when it has not
    /// yet (one it took from a peer while leading), then every renewal interval.
    private func isDueToSend(now: Instant) -> Bool {
        guard pending != nil, lease.validTerm(now: now) != nil else { return false }
        return resendAt.map { now >= $0 } ?? true
    }

    // MARK: - Events

    public mutating func tick(now: Instant, aliveCandidates: [MemberID]) -> [Directive] {
        var directives: [Directive] = []
        absorb(lease.tick(now: now, aliveCandidates: aliveCandidates), now: now, into: &directives)
        if isDueToSend(now: now) { sendPending(now: now, into: &directives) }
        return directives
    }

    /// Proposes `members` as the next configuration. Only the leader may, one voter at a time, with no other change
    /// under way and its lease confirmed under the configuration it holds.
    public mutating func propose(_ members: [Configuration.Member], now: Instant) throws(Refusal) -> [Directive] {
        var directives: [Directive] = []
        guard let holding = lease.view.holding, now < holding.validUntil else { throw .notLeader }
        if let pending { throw .changeUnderWay(pending.position) }
        let next = committed.next(members: members, term: holding.term)
        guard next.members != committed.members else { throw .unchanged }
        guard committed.isOneStep(to: next.members) else {
            let old = Set(committed.voters)
            let new = Set(next.voters)
            throw .moreThanOneVoter(added: new.subtracting(old).sorted(), removed: old.subtracting(new).sorted())
        }
        guard !next.appNodes.isEmpty else { throw .noAppNode }
        // Contested (someone asked for a higher term): a renewal under a higher term settles it within a round.
        // Refused without a change of state (a refusal returns no directives): ``confirmForChange(now:)`` asks.
        guard holding.confirmedAt >= confirmAfter, !holding.contested else { throw .notConfirmed }
        take(pending: next, now: now, into: &directives)
        accepted = [me]
        sendPending(now: now, into: &directives)
        return directives
    }

    /// After a ``Refusal/notConfirmed``: asks the voters for the round a change needs (one under the configuration
    /// this node holds, and a term nobody contests) — unless one asked for is still under way: a round asked for
    /// replaces the one in flight, so asking at every retry would starve the renewals.
    public mutating func confirmForChange(now: Instant) -> [Directive] {
        var directives: [Directive] = []
        guard let holding = lease.view.holding, now < holding.validUntil, holding.confirmedAt < confirmAfter || holding.contested else {
            return directives
        }
        if let asked = confirmAskedAt, asked >= confirmAfter, now < asked + lease.settings.requestTimeout { return directives }
        confirmAskedAt = now
        absorb(lease.confirm(now: now), now: now, into: &directives)
        return directives
    }

    /// ``Lease/confirm(now:)``.
    public mutating func confirm(now: Instant) -> [Directive] {
        var directives: [Directive] = []
        absorb(lease.confirm(now: now), now: now, into: &directives)
        return directives
    }

    /// ``Lease/stepDown(now:until:)``.
    public mutating func stepDown(now: Instant, until: Instant) -> [Directive] {
        var directives: [Directive] = []
        absorb(lease.stepDown(now: now, until: until), now: now, into: &directives)
        return directives
    }

    /// ``Lease/suspend(_:now:)``.
    public mutating func suspend(_ on: Bool, now: Instant) -> [Directive] {
        var directives: [Directive] = []
        absorb(lease.suspend(on, now: now), now: now, into: &directives)
        return directives
    }

    public mutating func receive(_ message: Message, from: MemberID, now: Instant) -> [Directive] {
        var directives: [Directive] = []
        guard message.isPlausible, from != me else { return directives }
        switch message {
        case .lease(let leaseMessage, let theirCommitted):
            // Whoever is behind learns the committed configuration from whoever is not: every lease message (a
            // leader's requests several times a second) shows it, so a lost commit is made up for at once.
            if theirCommitted < committed.epoch {
                directives.append(.send(to: from, .commit(committed)))
            } else if theirCommitted > committed.epoch {
                // This node is behind (a new node, or one that was down through a change): the lease itself may not
                // even let it answer (the sender is no member of its configuration yet).
                directives.append(.send(to: from, .fetch))
            } else if case .request(_, _, let theirs) = leaseMessage, let pending, theirs ?? .initial < pending.position {
                directives.append(.send(to: from, .proposed(pending)))
            }
            absorb(lease.receive(leaseMessage, from: from, now: now), now: now, into: &directives)
            checkCommit(now: now, into: &directives)

        case .propose(let proposal):
            if proposal.epoch <= committed.epoch { directives.append(.send(to: from, .commit(committed))) }
            guard proposal.epoch == committed.epoch + 1, proposal.position >= position else { break }
            // Only from the leader this voter backs: a deposed leader's late proposal is not taken.
            guard let grant = lease.view.grant, grant.to == from, now < grant.until else { break }
            if proposal != pending { take(pending: proposal, now: now, into: &directives) }
            directives.append(.send(to: from, .accept(proposal.position)))

        case .accept(let position):
            guard let pending, pending.position == position else { break }
            accepted.insert(from)
            checkCommit(now: now, into: &directives)

        case .commit(let configuration):
            guard configuration.epoch > committed.epoch else { break }
            adopt(configuration, now: now, into: &directives)

        case .fetch:
            directives.append(.send(to: from, .commit(committed)))

        case .proposed(let proposal):
            // Taking it cannot raise this node above what some node holds: it never outranks a change a majority
            // committed (that majority holds a higher position and refuses this node all the same).
            guard proposal.epoch == committed.epoch + 1, proposal.position > position else { break }
            take(pending: proposal, now: now, into: &directives)
        }
        return directives
    }

    // MARK: - Internals

    private mutating func take(pending proposal: Configuration, now: Instant, into directives: inout [Directive]) {
        pending = proposal
        accepted = []
        directives.append(.persistConfiguration(committed: committed, pending: proposal))
        absorb(lease.reconfigure(quorums: quorums, position: position, appNode: isAppNode, now: now), now: now, into: &directives)
    }

    private mutating func adopt(_ configuration: Configuration, now: Instant, into directives: inout [Directive]) {
        committed = configuration
        if let pending, pending.epoch <= configuration.epoch { self.pending = nil }
        accepted = []
        resendAt = nil
        confirmAfter = now
        directives.append(.persistConfiguration(committed: committed, pending: pending))
        absorb(lease.reconfigure(quorums: quorums, position: position, appNode: isAppNode, now: now), now: now, into: &directives)
        directives.append(.committed(committed))
    }

    /// The leader commits once a majority of the old voters and a majority of the new ones accepted — while it
    /// still leads, uncontested.
    private mutating func checkCommit(now: Instant, into directives: inout [Directive]) {
        guard let pending, accepted.contains(me), committed.isMajority(accepted), pending.isMajority(accepted),
            let holding = lease.view.holding, now < holding.validUntil, !holding.contested
        else { return }
        let old = committed
        adopt(pending, now: now, into: &directives)
        for voter in Set(old.voters + committed.voters).sorted() where voter != me { directives.append(.send(to: voter, .commit(committed))) }
    }

    /// Leader: (re)sends the proposal to the voters that have not accepted it, tagged with the current term.
    private mutating func sendPending(now: Instant, into directives: inout [Directive]) {
        resendAt = now + lease.settings.renewInterval
        // Never under a lower term than the proposal's own (one taken from a newer leader while this one lapsed).
        guard var proposal = pending, let holding = lease.view.holding, now < holding.validUntil, holding.term >= proposal.term else { return }
        if proposal.term != holding.term {
            // A proposal from before this leadership (a previous leader's, or this node's before a lapse): proposed
            // again under this term — it may have been committed by a majority this node cannot see.
            proposal.term = holding.term
            take(pending: proposal, now: now, into: &directives)
            accepted = [me]
        }
        for voter in Set(committed.voters + proposal.voters).sorted() where voter != me && !accepted.contains(voter) {
            directives.append(.send(to: voter, .propose(proposal)))
        }
    }

    private mutating func absorb(_ leaseDirectives: [Lease.Directive], now: Instant, into directives: inout [Directive]) {
        for directive in leaseDirectives {
            switch directive {
            case .persist(let term): directives.append(.persistTerm(term))
            case .send(let to, let message): directives.append(.send(to: to, .lease(message, committed: committed.epoch)))
            case .leadership(let term):
                directives.append(.leadership(term: term))
                accepted = term == nil ? [] : accepted
                resendAt = nil
                // A new leader finishes the change it holds before anything else.
                if term != nil, pending != nil { sendPending(now: now, into: &directives) }
            }
        }
    }
}
