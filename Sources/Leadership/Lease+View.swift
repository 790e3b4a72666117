import PeerCore

extension Lease {
    /// The lease as one node holds and knows it.
    public struct View: Sendable, Hashable {
        public struct Holding: Sendable, Hashable {
            public var term: UInt64
            /// This node leads until then (its own clock, drift and margin already taken off).
            public var validUntil: Instant
            /// When the round of messages that a majority granted, and that gave `validUntil`, was sent: a leader
            /// that asks its voters at `t` knows they still back it once this is at or after `t`.
            public var confirmedAt: Instant
            /// Someone asked for a higher term since this node's term began: until a renewal under a higher term
            /// succeeds, this node takes no fenced action (a node resumed from a pause learns of the new leader
            /// this way before it acts).
            public var contested: Bool
            /// The term this leadership began under: it goes on unbroken through renewals under higher terms.
            public var since: UInt64
            public init(term: UInt64, validUntil: Instant, confirmedAt: Instant, contested: Bool = false, since: UInt64? = nil) {
                self.term = term
                self.validUntil = validUntil
                self.confirmedAt = confirmedAt
                self.contested = contested
                self.since = since ?? term
            }
        }

        public struct Grant: Sendable, Hashable {
            public var to: MemberID
            public var term: UInt64
            public var until: Instant
            public init(to: MemberID, term: UInt64, until: Instant) {
                self.to = to
                self.term = term
                self.until = until
            }
        }

        public var me: MemberID
        public var voters: [MemberID]
        /// The highest term this node promised.
        public var promised: UInt64
        /// The lease this node holds as leader (possibly run out: ask ``validTerm(now:)``).
        public var holding: Holding?
        /// This node's vote.
        public var grant: Grant?
        /// This node stepped down and does not campaign before then.
        public var standingDownUntil: Instant?

        public init(me: MemberID, voters: [MemberID], promised: UInt64, holding: Holding? = nil, grant: Grant? = nil) {
            self.me = me
            self.voters = voters
            self.promised = promised
            self.holding = holding
            self.grant = grant
        }

        public var majority: Int { voters.count / 2 + 1 }

        public func validTerm(now: Instant) -> UInt64? {
            guard let holding, now < holding.validUntil else { return nil }
            return holding.term
        }

        public func remaining(now: Instant) -> Duration? {
            guard let holding, now < holding.validUntil else { return nil }
            return holding.validUntil - now
        }

        public func knownLeader(now: Instant) -> Leader? {
            if let term = validTerm(now: now) { return Leader(id: me, term: term) }
            // A grant to itself that did not make it leader (a campaign under way or lost) names no leader.
            if let grant, now < grant.until, grant.to != me { return Leader(id: grant.to, term: grant.term) }
            return nil
        }
    }
}
