import PeerCore

/// A majority-quorum lease with a fencing term (in the spirit of PaxosLease, Trencseni et al. 2010), as a pure
/// state machine. Every voting member runs one; it is both a voter (grants leases) and, unless it is a witness,
/// a candidate.
///
/// - A candidate asks every voter for a lease for term T (higher than any term it has seen). A voter grants it
///   when T is not below the highest term it promised and it holds no unexpired grant for someone else; it
///   persists the promise before answering (directive order) and starts its own timer of ``LeaseSettings/duration``
///   when the request arrives.
/// - With grants from a majority, the candidate leads until `sent + duration × (1 − maxDrift) − margin` on its
///   own clock, where `sent` is when it sent the request. Every grant it counted was started after that, on a
///   clock that runs at most `maxDrift` faster: no voter of that majority can grant to anyone else before the
///   leader's lease is over, and any other majority needs one of them. No synchronized clocks, only bounded
///   drift.
/// - The leader renews every ``LeaseSettings/renewInterval`` under the same term. A voter that restarts grants
///   nothing for one lease duration (it forgot whom it granted to).
/// - The term is the fencing token: ``validTerm(now:)`` says whether this node leads right now and under which
///   term; the shell asks it immediately before every DNS write and notification.
public struct Lease: Sendable {
    /// `position`: the sender's configuration (``Configuration/Position``); nil stands for the initial one (and is
    /// what a peerd from before configurations sends, and what is sent while a cluster never changed its own).
    public enum Message: Sendable, Hashable, Codable {
        case request(term: UInt64, attempt: UInt64, position: Configuration.Position? = nil)
        case grant(term: UInt64, attempt: UInt64, position: Configuration.Position? = nil)
        /// `promised`: the highest term the voter promised; `holder`: whom it currently grants to, if anyone.
        case reject(term: UInt64, attempt: UInt64, promised: UInt64, holder: MemberID?, position: Configuration.Position? = nil)
        /// A campaign that did not reach a majority gives its grants back, so the voters can back someone else
        /// at once instead of after a lease duration.
        case release(term: UInt64)

        /// Every number in it is within ``Counter/limit``: a term of `UInt64.max` from a broken or hostile voter
        /// would otherwise be promised, persisted, and overflow the next campaign's `+ 1` on every node.
        public var isPlausible: Bool {
            let numbers =
                switch self {
                case .request(let term, let attempt, _), .grant(let term, let attempt, _):
                    Counter.isPlausible(term) && Counter.isPlausible(attempt)
                case .reject(let term, let attempt, let promised, _, _):
                    Counter.isPlausible(term) && Counter.isPlausible(attempt) && Counter.isPlausible(promised)
                case .release(let term): Counter.isPlausible(term)
                }
            return numbers && position.map { Counter.isPlausible($0.epoch) && Counter.isPlausible($0.term) } ?? true
        }

        /// The configuration the sender holds (nil: the initial one, or a release, which carries none).
        public var position: Configuration.Position? {
            switch self {
            case .request(_, _, let position), .grant(_, _, let position), .reject(_, _, _, _, let position): position
            case .release: nil
            }
        }
    }

    public enum Directive: Sendable, Hashable {
        /// Persist the highest promised term before sending anything that follows.
        case persist(term: UInt64)
        case send(to: MemberID, Message)
        /// This node became leader (term) or stopped being it (nil).
        case leadership(term: UInt64?)
    }

    public struct Leader: Sendable, Hashable {
        public var id: MemberID
        public var term: UInt64
    }

    public let settings: LeaseSettings
    public let me: MemberID
    /// Every voter of the configurations this node holds (``quorums``), sorted.
    public private(set) var voters: [MemberID]
    /// The voter sets a majority is needed in: the configuration this node holds, and while a change is not yet
    /// committed, the proposed one as well (joint consensus).
    public private(set) var quorums: [[MemberID]]
    /// The newest configuration this node holds: sent with every request, grant and refusal, and a voter grants
    /// only to a candidate that holds one at least as new (so a node that missed a change cannot win a majority
    /// that includes a voter who took it).
    public private(set) var position: Configuration.Position
    /// Runs the app (a witness does not): it may lead while it is a voter.
    public private(set) var isAppNode: Bool
    public private(set) var canLead: Bool
    private var rng: SplitMix64

    // Voter.
    public private(set) var promised: UInt64
    /// Whom this voter promised `promised` to (unknown after a restart: then only a higher term is granted).
    private var promisedTo: MemberID?
    private var grant: (to: MemberID, term: UInt64, until: Instant)?
    private let quietUntil: Instant

    // Candidate / leader.
    private enum Role: Sendable {
        case follower(nextCampaign: Instant?)
        case candidate(term: UInt64, attempt: UInt64, sent: Instant, grants: Set<MemberID>)
        case leader(
            term: UInt64, validUntil: Instant, renewing: (attempt: UInt64, term: UInt64, sent: Instant, grants: Set<MemberID>)?, nextRenew: Instant)
    }
    private var role: Role = .follower(nextCampaign: nil) {
        didSet {
            switch (oldValue, role) {
            case (.leader, .leader): break  // a renewal, under the same term or a higher one: the same leadership
            case (_, .leader(let term, _, _, _)): leadingSince = term
            default: leadingSince = nil
            }
        }
    }
    /// The term this node's unbroken leadership began under (renewals may raise the term; a lapse ends it).
    private var leadingSince: UInt64?
    /// While leading: when the round that gave the current lease was sent (its grants came from a majority).
    private var confirmedAt: Instant?
    /// This node gave up leading (it cannot do the leader's work): it neither campaigns nor renews before then.
    private var standingDownUntil: Instant?
    /// Set while members run another configuration of the cluster (their majorities are not this node's): no
    /// campaign and no grant, so that a cluster with mixed configurations has no leader rather than two.
    public private(set) var suspended = false
    private var attempt: UInt64 = 0
    private var highestSeen: UInt64
    /// A voter refused our term because it promised this term (or a higher one) without knowing to whom: the
    /// next renewal asks for a term above it.
    private var renewAbove: UInt64 = 0

    /// `promised`: the term persisted by a previous run (0 for a new node). `voters` includes this node if it
    /// votes.
    public init(
        me: MemberID, voters: [MemberID], canLead: Bool, promised: UInt64, settings: LeaseSettings, seed: UInt64, now: Instant,
        position: Configuration.Position = .initial
    ) {
        self.me = me
        self.voters = Array(Set(voters)).sorted()
        self.quorums = [self.voters]
        self.position = position
        self.isAppNode = canLead
        self.canLead = canLead && voters.contains(me)
        self.settings = settings
        self.promised = promised
        self.highestSeen = promised
        self.rng = SplitMix64(seed: seed)
        self.quietUntil = now + settings.duration
    }

    public var majority: Int { voters.count / 2 + 1 }

    /// Whether `grants` hold a majority of every voter set in ``quorums``.
    public func isMajority(_ grants: Set<MemberID>) -> Bool {
        quorums.allSatisfy { Configuration.isMajority(grants, of: $0) }
    }

    /// What goes in this node's messages: nil for the initial configuration (the same bytes as before
    /// configurations, which a peerd from before them reads).
    private var sentPosition: Configuration.Position? { position == .initial ? nil : position }

    /// The configurations this node holds changed (a change proposed, taken or committed): `quorums` are the voter
    /// sets every majority must now be counted in, `position` the newest of them. What it promised and granted
    /// stays: a voter stays bound to its grant, and a leader's lease stays valid — a majority of the old voters
    /// backs it, and one change moves only one voter, so any majority of the new voters includes one of them
    /// (``ConfiguredLease`` asks for a round under a configuration before the next change). A campaign under way is
    /// given up (its grants were counted over other voters); a leader that is no longer a voter stops leading.
    public mutating func reconfigure(quorums: [[MemberID]], position: Configuration.Position, appNode: Bool, now: Instant) -> [Directive] {
        var directives: [Directive] = []
        let before = voters
        isAppNode = appNode
        self.quorums = quorums.map { Array(Set($0)).sorted() }
        self.voters = Array(Set(quorums.joined())).sorted()
        self.position = position
        canLead = isAppNode && voters.contains(me)
        switch role {
        case .candidate(let term, _, _, _):
            abandonCampaign(term: term, now: now, into: &directives, voters: before)
        case .leader where !canLead:
            directives += stepDown(now: now, until: now, voters: before)
        case .leader, .follower:
            break
        }
        if !canLead { role = .follower(nextCampaign: nil) }
        return directives
    }

    /// The term under which this node leads at `now`, or nil: ask immediately before every fenced action.
    public func validTerm(now: Instant) -> UInt64? { view.validTerm(now: now) }

    /// How long this node's lease still holds (nil when it does not lead).
    public func remaining(now: Instant) -> Duration? { view.remaining(now: now) }

    /// Whom this node's own vote currently backs: the leader as far as it knows (its grant is unexpired).
    public func knownLeader(now: Instant) -> Leader? { view.knownLeader(now: now) }

    /// What this node holds and has granted, as a value: everything the questions above are answered from, at
    /// any instant.
    public var view: View {
        var view = View(me: me, voters: voters, promised: promised)
        if case .leader(let term, let validUntil, _, _) = role {
            view.holding = .init(
                term: term, validUntil: validUntil, confirmedAt: confirmedAt ?? .zero, contested: highestSeen > term, since: leadingSince ?? term)
        }
        view.standingDownUntil = standingDownUntil
        view.grant = grant.map { .init(to: $0.to, term: $0.term, until: $0.until) }
        return view
    }

    public var isCandidate: Bool { if case .candidate = role { true } else { false } }

    /// For logs and debugging: this node's role and what it holds.
    public func describe(now: Instant) -> String {
        let g = grant.map { "grant \($0.to)#\($0.term) for \(($0.until - now).compactDescription)" } ?? "no grant"
        switch role {
        case .follower(let next):
            return
                "follower (next campaign in \(next.map { ($0 - now).compactDescription } ?? "-")), \(g), promised \(promised), quiet \(now < quietUntil)"
        case .candidate(let t, let a, let sent, let grants):
            return "candidate #\(t) attempt \(a) sent \((now - sent).compactDescription) ago, grants \(grants.sorted()), \(g)"
        case .leader(let t, let until, _, _): return "leader #\(t) for \((until - now).compactDescription), \(g)"
        }
    }

    /// `aliveCandidates`: the members that can lead and that membership sees alive, this one included. The
    /// first of them by name campaigns first; the others wait a stagger each, so they rarely collide.
    public mutating func tick(now: Instant, aliveCandidates: [MemberID]) -> [Directive] {
        var directives: [Directive] = []
        switch role {
        case .leader(let term, let validUntil, let renewing, let nextRenew):
            if now >= validUntil {
                role = .follower(nextCampaign: nil)
                confirmedAt = nil
                directives.append(.leadership(term: nil))
                // A follower from now on: it plans its next campaign in this same tick.
                followerStep(now: now, aliveCandidates: aliveCandidates, into: &directives)
                break
            }
            if now >= nextRenew { renew(term: term, validUntil: validUntil, now: now, into: &directives) }
            _ = renewing
        case .candidate(let term, _, let sent, _):
            if now >= sent + settings.requestTimeout { abandonCampaign(term: term, now: now, into: &directives) }
        case .follower:
            followerStep(now: now, aliveCandidates: aliveCandidates, into: &directives)
        }
        return directives
    }

    /// A round of lease requests under our term (or a higher one, if someone promised a higher term to another: a
    /// voter that did would refuse ours forever, and our own voters accept a higher term from us).
    private mutating func renew(term: UInt64, validUntil: Instant, now: Instant, into directives: inout [Directive]) {
        let above = max(highestSeen > term ? highestSeen : 0, renewAbove >= term ? renewAbove : 0)
        let renewTerm = above > 0 ? above + 1 : term
        attempt += 1
        var grants: Set<MemberID> = []
        if vote(for: me, term: renewTerm, position: position, now: now, into: &directives) { grants.insert(me) }
        role = .leader(term: term, validUntil: validUntil, renewing: (attempt, renewTerm, now, grants), nextRenew: now + settings.renewInterval)
        for voter in voters where voter != me {
            directives.append(.send(to: voter, .request(term: renewTerm, attempt: attempt, position: sentPosition)))
        }
        checkRenewal(now: now, into: &directives)
    }

    /// Before a fenced action: asks the voters at once whether they still back this leader (a renewal round sent
    /// now). The action may go ahead once ``View/Holding/confirmedAt`` is at or after `now` — one round trip, so
    /// that no pause or clock anomaly of this node can stretch an old answer over a new leader's term.
    public mutating func confirm(now: Instant) -> [Directive] {
        var directives: [Directive] = []
        guard case .leader(let term, let validUntil, let renewing, _) = role, now < validUntil else { return directives }
        if let renewing, renewing.sent >= now { return directives }
        renew(term: term, validUntil: validUntil, now: now, into: &directives)
        return directives
    }

    /// Gives up leading (or campaigning) until `until`: this node cannot do the leader's work (its DNS writes keep
    /// failing). Its voters are told, so another candidate can win at once rather than after the lease runs out.
    public mutating func stepDown(now: Instant, until: Instant) -> [Directive] { stepDown(now: now, until: until, voters: voters) }

    private mutating func stepDown(now: Instant, until: Instant, voters: [MemberID]) -> [Directive] {
        var directives: [Directive] = []
        standingDownUntil = max(standingDownUntil ?? until, until)
        switch role {
        case .leader(let term, _, let renewing, _):
            role = .follower(nextCampaign: until)
            confirmedAt = nil
            directives.append(.leadership(term: nil))
            let terms = Set([term] + (renewing.map { [$0.term] } ?? []))
            if let grant, grant.to == me { self.grant = nil }
            for term in terms.sorted() { for voter in voters where voter != me { directives.append(.send(to: voter, .release(term: term))) } }
        case .candidate(let term, _, _, _):
            abandonCampaign(term: term, now: now, into: &directives, voters: voters)
            role = .follower(nextCampaign: until)
        case .follower:
            role = .follower(nextCampaign: until)
        }
        return directives
    }

    /// Suspends (or resumes) leadership while members run another configuration of the cluster: a leader or a
    /// candidate gives up as in a step-down (its voters are told), and until resumed this node neither
    /// campaigns nor grants. Resumed, it plans a campaign afresh (staggered), as after a start.
    public mutating func suspend(_ on: Bool, now: Instant) -> [Directive] {
        guard on != suspended else { return [] }
        var directives: [Directive] = []
        if on {
            switch role {
            case .leader, .candidate: directives = stepDown(now: now, until: now)
            case .follower: break
            }
        }
        suspended = on
        role = .follower(nextCampaign: nil)
        return directives
    }

    private mutating func followerStep(now: Instant, aliveCandidates: [MemberID], into directives: inout [Directive]) {
        guard case .follower(let nextCampaign) = role, canLead, !suspended, now >= quietUntil else { return }
        if let until = standingDownUntil {
            guard now >= until else { return }
            standingDownUntil = nil
        }
        if knownLeader(now: now) != nil {
            role = .follower(nextCampaign: nil)
            return
        }
        let at: Instant
        if let nextCampaign {
            at = nextCampaign
        } else {
            let rank = aliveCandidates.sorted().firstIndex(of: me) ?? aliveCandidates.count
            at = now + settings.stagger * rank
            role = .follower(nextCampaign: at)
        }
        if now >= at { campaign(now: now, into: &directives) }
    }

    /// The earliest instant at which ``tick(now:aliveCandidates:)`` has something to do (renew, lose the lease,
    /// give up a campaign, start one), nil when it never will (a witness). Before it a tick changes nothing, so
    /// a shell can sleep until then — and must look again after every message, which can bring it closer.
    /// After a tick at `now` it is later than `now`.
    public func nextDeadline(now: Instant) -> Instant? {
        switch role {
        case .leader(_, let validUntil, _, let nextRenew):
            return min(validUntil, nextRenew)
        case .candidate(_, _, let sent, _):
            return sent + settings.requestTimeout
        case .follower(let nextCampaign):
            guard canLead, !suspended else { return nil }
            if now < quietUntil { return quietUntil }
            if let until = standingDownUntil { return max(until, now) }
            if knownLeader(now: now) != nil, let until = grant?.until {
                // A leader is known: nothing until its grant runs out — but a campaign planned before it was
                // known is called off at the next tick.
                return nextCampaign == nil ? until : now
            }
            return nextCampaign ?? now
        }
    }

    public mutating func receive(_ message: Message, from: MemberID, now: Instant) -> [Directive] {
        var directives: [Directive] = []
        guard voters.contains(from), from != me, message.isPlausible else { return directives }
        switch message {
        case .request(let term, let attempt, let theirs):
            highestSeen = max(highestSeen, term)
            // A campaign for a higher term wins over ours: give ours up (its grants back), so the two do not
            // hold each other's votes until both time out.
            if case .candidate(let mine, _, _, _) = role, term > mine { abandonCampaign(term: mine, now: now, into: &directives) }
            if !suspended, vote(for: from, term: term, position: theirs ?? .initial, now: now, into: &directives) {
                directives.append(.send(to: from, .grant(term: term, attempt: attempt, position: sentPosition)))
            } else {
                let holder = grant.flatMap { now < $0.until ? $0.to : nil }
                directives.append(
                    .send(to: from, .reject(term: term, attempt: attempt, promised: promised, holder: holder, position: sentPosition)))
            }
        // Someone else campaigns for a higher term while we lead: our voters may follow it once our lease is
        // over; nothing to do until then (our lease still holds by construction).

        case .grant(let term, let attempt, _):
            switch role {
            case .candidate(let t, let a, let sent, var grants) where t == term && a == attempt:
                grants.insert(from)
                if isMajority(grants) {
                    role = .leader(
                        term: term, validUntil: validity(sent: sent), renewing: nil, nextRenew: sent + settings.renewInterval)
                    confirmedAt = sent
                    directives.append(.leadership(term: term))
                } else {
                    role = .candidate(term: t, attempt: a, sent: sent, grants: grants)
                }
            case .leader(let t, let validUntil, .some(let renewing), let nextRenew) where renewing.term == term && renewing.attempt == attempt:
                var r = renewing
                r.grants.insert(from)
                role = .leader(term: t, validUntil: validUntil, renewing: r, nextRenew: nextRenew)
                checkRenewal(now: now, into: &directives)
            default:
                break
            }

        case .reject(let term, let attempt, let promisedThere, _, _):
            highestSeen = max(highestSeen, promisedThere)
            // Someone else already holds a higher term: this campaign cannot win.
            if case .candidate(let mine, let a, _, _) = role, mine == term, a == attempt, promisedThere > mine {
                abandonCampaign(term: mine, now: now, into: &directives)
            }
            // A voter that restarted remembers the term it promised but not to whom: it grants only a higher one.
            // The next renewal asks for one, or that voter would never back this leader again.
            if case .leader(let mine, _, _, _) = role, promisedThere >= mine { renewAbove = max(renewAbove, promisedThere) }

        case .release(let term):
            if let grant, grant.to == from, grant.term == term { self.grant = nil }
        }
        return directives
    }

    // MARK: - Internals

    private func validity(sent: Instant) -> Instant {
        let d = settings.duration.nanoseconds
        let shrunk = d - Int64(Double(d) * settings.maxDrift)
        return sent + .nanoseconds(shrunk) - settings.margin
    }

    private mutating func checkRenewal(now: Instant, into directives: inout [Directive]) {
        guard case .leader(_, let validUntil, .some(let renewing), let nextRenew) = role, isMajority(renewing.grants) else { return }
        role = .leader(term: renewing.term, validUntil: max(validUntil, validity(sent: renewing.sent)), renewing: nil, nextRenew: nextRenew)
        confirmedAt = max(confirmedAt ?? renewing.sent, renewing.sent)
    }

    /// A campaign that did not win: back to follower, the votes it got given back.
    private mutating func abandonCampaign(term: UInt64, now: Instant, into directives: inout [Directive], voters: [MemberID]? = nil) {
        role = .follower(nextCampaign: now + backoff())
        if let grant, grant.to == me, grant.term == term { self.grant = nil }
        for voter in voters ?? self.voters where voter != me { directives.append(.send(to: voter, .release(term: term))) }
    }

    private mutating func campaign(now: Instant, into directives: inout [Directive]) {
        let term = max(promised, highestSeen) + 1
        attempt += 1
        var grants: Set<MemberID> = []
        guard vote(for: me, term: term, position: position, now: now, into: &directives) else {
            role = .follower(nextCampaign: now + backoff())
            return
        }
        grants.insert(me)
        role = .candidate(term: term, attempt: attempt, sent: now, grants: grants)
        if isMajority(grants) {
            role = .leader(term: term, validUntil: validity(sent: now), renewing: nil, nextRenew: now + settings.renewInterval)
            confirmedAt = now
            directives.append(.leadership(term: term))
            return
        }
        for voter in voters where voter != me { directives.append(.send(to: voter, .request(term: term, attempt: attempt, position: sentPosition))) }
    }

    /// The voter's rule. Returns whether it grants.
    private mutating func vote(
        for candidate: MemberID, term: UInt64, position theirs: Configuration.Position, now: Instant, into directives: inout [Directive]
    ) -> Bool {
        // A candidate that holds an older configuration than this voter missed a change a majority took: it must
        // not lead (it would count majorities over the wrong voters).
        guard theirs >= position else { return false }
        // One candidate per term: the same term again only for the one it was promised to (its renewals).
        guard now >= quietUntil, term > promised || (term == promised && promisedTo == candidate) else { return false }
        if let grant, now < grant.until, grant.to != candidate { return false }
        // A renewal under an older term than one this voter already granted to the same candidate is stale.
        if let grant, now < grant.until, grant.to == candidate, term < grant.term { return false }
        if term > promised {
            promised = term
            directives.append(.persist(term: term))
        }
        promisedTo = candidate
        grant = (candidate, term, now + settings.duration)
        return true
    }

    /// After a lost campaign: random over a whole request timeout, so two candidates that collided (same term,
    /// each holding its own vote) do not collide again however long the messages take.
    private mutating func backoff() -> Duration {
        settings.stagger + .nanoseconds(Int64.random(in: 0...max(1, settings.requestTimeout.nanoseconds), using: &rng))
    }
}
