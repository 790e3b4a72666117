import PeerCore

/// The leader's DNS work as a pure state machine: when to check the token, list, ask the voters, write, and
/// give up leading. The shell (peerd's DNS service, or a simulation) carries out its directives one at a time
/// and reports each outcome back; ``step(_:now:)`` is called after every outcome and every change of the
/// cluster's state.
///
/// Every write is fenced at the last moment:
/// - a new leader first waits out ``Settings/commitAllowance`` (the old leader's last write may still land);
/// - a batch that deletes is planned from a listing made for it, and patches a record it keeps, so the provider
///   refuses it whole if that record is gone (a hand edit, a late write): never zero records;
/// - before each write the voters are asked once more whether they back this leader — the lease round must have
///   been sent after the decision (``Lease/confirmedAt``) and no higher term may have been asked for since — and
///   the write's absolute deadline is the lease's end less the commit allowance;
/// - a leader whose writes or token check fail ``Settings/stepDownAfter`` times in a row for want of means (no
///   way out, a refused token, a provider that throttles it) steps down for ``Settings/standDown``.
public struct DNSReconciler: Sendable {
    public struct Settings: Sendable, Hashable {
        public var name: String
        public var holdDown: Duration
        /// The records are listed again at least this often (someone may have edited them).
        public var refresh: Duration
        /// Minimum lease left to start anything.
        public var writeWindow: Duration = .milliseconds(900)
        /// How long after its request was cut off a write may still be committed by the provider: a write must
        /// be answered this long before the lease ends, and a new leader waits this long before its first write.
        public var commitAllowance: Duration = .milliseconds(500)
        /// How long to wait for the voters' answer to a confirmation before asking again.
        public var confirmTimeout: Duration = .seconds(1)
        /// A write is not sent with less than this left before its deadline.
        public var minimumWrite: Duration = .milliseconds(300)
        public var stepDownAfter = 3
        public var standDown: Duration = .seconds(30)
        /// After a failed call, the next one waits this long.
        public var retryDelay: Duration = .seconds(1)

        public init(name: String, holdDown: Duration, refresh: Duration) {
            self.name = name
            self.holdDown = holdDown
            self.refresh = refresh
        }
    }

    /// This node's lease as its mesh publishes it (nil: it does not lead).
    public struct Lease: Sendable, Hashable {
        public var term: UInt64
        public var validUntil: Instant
        /// When the round that gave `validUntil` was sent.
        public var confirmedAt: Instant
        /// A higher term was asked for since this one began.
        public var contested: Bool

        public init(term: UInt64, validUntil: Instant, confirmedAt: Instant, contested: Bool) {
            self.term = term
            self.validUntil = validUntil
            self.confirmedAt = confirmedAt
            self.contested = contested
        }
    }

    /// What the cluster state says now.
    public struct View: Sendable, Hashable {
        public var members: [DNSMember]
        public var lease: Lease?
        /// This node's view has had the start-up grace to fill in.
        public var settled: Bool
        /// Other nodes that could lead if this one stepped down (alive app nodes besides this one). A node that is
        /// the only one left keeps leading, however its writes go: it still watches and tells.
        public var otherCandidates: Int

        public init(members: [DNSMember], lease: Lease?, settled: Bool, otherCandidates: Int) {
            self.members = members
            self.lease = lease
            self.settled = settled
            self.otherCandidates = otherCandidates
        }
    }

    public enum Directive: Sendable, Hashable {
        case verifyToken
        case list
        /// Ask the voters now (a lease round); `step` is called again when the lease changes.
        case confirmLease
        /// Send `batch` under `term`; it must be answered by `deadline` (on this node's clock), and is not sent with
        /// less than ``Settings/minimumWrite`` left.
        case write(DNSBatch, term: UInt64, deadline: Instant)
        case stepDown(until: Instant, reason: String)
        case notice(Notice)
    }

    public enum Notice: Sendable, Hashable {
        case failOpen(members: [String])
        case removed(member: String, record: DNSRecord, term: UInt64)
        case restored(member: String, record: DNSRecord, term: UInt64)
        case writeFailed(String)
        case tokenRejected(String)
        case steppedDown(reason: String, standDown: Duration)
    }

    private enum Phase: Sendable, Hashable {
        case idle
        case verifying
        case listing(forDelete: Bool)
        case confirming(asked: Instant, batch: DNSBatch)
        case writing(DNSBatch, term: UInt64)
    }

    public let settings: Settings
    private var planner: DNSPlanner
    private var phase = Phase.idle
    /// What the provider holds, as of the last list or our last write; `fresh` while it is the listing a delete
    /// was asked for.
    private var records: [DNSRecord]?
    private var fetchedAt: Instant?
    private var fresh = false
    private var tokenVerified = false
    /// The term this node writes under, the end of its quiet period, and how long its lease held when last seen.
    private var leading: (term: UInt64, quietUntil: Instant, validUntil: Instant)?
    private var failures = 0
    private var retryAt: Instant?
    private var heldDownUntil: Instant?
    private var lastFailOpen: [String]?
    /// As of the last step: nodes that could take over if this one stepped down.
    private var otherCandidates = 0

    public init(settings: Settings) {
        self.settings = settings
        planner = DNSPlanner(holdDown: settings.holdDown)
    }

    /// Waiting for the shell to report an outcome.
    public var isBusy: Bool {
        switch phase {
        case .verifying, .listing, .writing: true
        case .idle, .confirming: false
        }
    }

    /// Asked the voters before a write and waits for their answer.
    public var awaitsConfirmation: Bool { if case .confirming = phase { true } else { false } }

    /// When ``step(_:now:)`` next has something to do without an outside change (nil: only on a change).
    public func nextWake(now: Instant) -> Instant? {
        var next: [Instant?] = [heldDownUntil, retryAt, leading?.quietUntil]
        if case .confirming(let asked, _) = phase { next.append(asked + settings.confirmTimeout) }
        if let fetchedAt, leading != nil { next.append(fetchedAt + settings.refresh) }
        return next.compactMap { $0 }.filter { $0 > now }.min()
    }

    // MARK: - Steps

    public mutating func step(_ view: View, now: Instant) -> [Directive] {
        var directives: [Directive] = []
        otherCandidates = view.otherCandidates
        guard view.settled else { return directives }
        guard let lease = view.lease, now < lease.validUntil else {
            if !isBusy { forget() }
            return directives
        }
        if let held = leading, held.term != lease.term, now < held.validUntil {
            // The same leadership, renewed under a higher term without a gap (a voter asked for one): no other node
            // can have led in between, so nothing to wait out or forget.
            leading = (lease.term, held.quietUntil, lease.validUntil)
        } else if leading?.term != lease.term, !isBusy {
            // A new term: a fresh list and a fresh hold-down, after the quiet period.
            forget()
            leading = (lease.term, now + settings.commitAllowance, lease.validUntil)
        }
        if let held = leading { leading?.validUntil = max(held.validUntil, lease.validUntil) }
        guard let leading, leading.term == lease.term, now >= leading.quietUntil, now >= retryAt ?? now else { return directives }
        switch phase {
        case .verifying, .listing, .writing:
            return directives
        case .confirming(let asked, let batch):
            if lease.confirmedAt >= asked, !lease.contested {
                let deadline = lease.validUntil - settings.commitAllowance
                phase = .idle
                guard deadline - now > settings.minimumWrite else { return directives }
                phase = .writing(batch, term: lease.term)
                directives.append(.write(batch, term: lease.term, deadline: deadline))
                return directives
            }
            guard now >= asked + settings.confirmTimeout else { return directives }
            phase = .idle  // no answer: plan and ask again
        case .idle:
            break
        }
        guard lease.validUntil - now >= settings.writeWindow else { return directives }
        if !tokenVerified {
            phase = .verifying
            directives.append(.verifyToken)
            return directives
        }
        guard let records, let fetchedAt, now - fetchedAt <= settings.refresh else {
            phase = .listing(forDelete: false)
            directives.append(.list)
            return directives
        }
        let plan = planner.plan(members: view.members, records: records, name: settings.name, now: now)
        // A listing made for a delete serves that plan only: any later delete lists again.
        let listedForThis = fresh
        fresh = false
        heldDownUntil = plan.heldDownUntil
        if plan.failOpen {
            let members = view.members.map(\.name).sorted()
            if lastFailOpen != members { directives.append(.notice(.failOpen(members: members))) }
            lastFailOpen = members
        } else {
            lastFailOpen = nil
        }
        guard let batch = plan.batch else { return directives }
        if !batch.deletes.isEmpty, !listedForThis {
            // A delete is planned from what the provider holds now, not from the cache.
            phase = .listing(forDelete: true)
            directives.append(.list)
            return directives
        }
        phase = .confirming(asked: now, batch: batch)
        directives.append(.confirmLease)
        return directives
    }

    // MARK: - Outcomes

    public mutating func tokenChecked(_ failure: String?, now: Instant) -> [Directive] {
        var directives: [Directive] = []
        guard case .verifying = phase else { return directives }
        phase = .idle
        if let failure {
            directives.append(.notice(.tokenRejected(failure)))
            failed("the Cloudflare token check failed: \(failure)", incapacity: true, now: now, into: &directives)
        } else {
            tokenVerified = true
        }
        return directives
    }

    public mutating func listed(_ listing: [DNSRecord], now: Instant) -> [Directive] {
        guard case .listing(let forDelete) = phase else { return [] }
        phase = .idle
        records = listing
        fetchedAt = now
        fresh = forDelete
        return []
    }

    public mutating func listFailed(_ failure: String, incapacity: Bool, now: Instant) -> [Directive] {
        var directives: [Directive] = []
        guard case .listing = phase else { return directives }
        phase = .idle
        records = nil
        fetchedAt = nil
        directives.append(.notice(.writeFailed(failure)))
        failed("listing the records failed: \(failure)", incapacity: incapacity, now: now, into: &directives)
        return directives
    }

    /// The batch was committed; `created` are the records it made.
    public mutating func written(created: [DNSRecord], now: Instant) -> [Directive] {
        var directives: [Directive] = []
        guard case .writing(let batch, let term) = phase else { return directives }
        phase = .idle
        failures = 0
        let deleted = Set(batch.deletes.map(\.id))
        records = (records ?? []).filter { !deleted.contains($0.id) } + created
        if let guarded = batch.guarded, let index = records?.firstIndex(where: { $0.id == guarded.record.id }) {
            records?[index].comment = DNSPlanner.comment(member: guarded.member, term: term)
        }
        for record in batch.deletes {
            let member = batch.owners[record.id] ?? record.content
            directives.append(.notice(.removed(member: member, record: record, term: term)))
        }
        for create in batch.creates {
            let record =
                created.first { $0.content == create.address }
                ?? DNSRecord(id: "", type: create.address.contains(":") ? "AAAA" : "A", name: settings.name, content: create.address)
            directives.append(.notice(.restored(member: create.member, record: record, term: term)))
        }
        return directives
    }

    /// The write failed or was not sent. `incapacity`: the failure says this node cannot write (no way out, a
    /// refused token, throttling), rather than that the write was refused for cause (a guard record gone).
    public mutating func writeFailed(_ failure: String, incapacity: Bool, now: Instant) -> [Directive] {
        var directives: [Directive] = []
        guard case .writing = phase else { return directives }
        phase = .idle
        records = nil
        fetchedAt = nil
        directives.append(.notice(.writeFailed(failure)))
        failed("DNS writes fail: \(failure)", incapacity: incapacity, now: now, into: &directives)
        return directives
    }

    private mutating func failed(_ reason: String, incapacity: Bool, now: Instant, into directives: inout [Directive]) {
        retryAt = now + settings.retryDelay
        // Stepping down helps only if another node can take over; the only one left keeps watching and telling.
        guard incapacity, otherCandidates > 0 else { return }
        failures += 1
        guard failures >= settings.stepDownAfter else { return }
        // Told while this node still leads (the notifications of a node that does not lead are not sent).
        directives.append(.notice(.steppedDown(reason: reason, standDown: settings.standDown)))
        directives.append(.stepDown(until: now + settings.standDown, reason: reason))
        forget()
    }

    /// Not leading (or leading anew): nothing known is trusted.
    private mutating func forget() {
        phase = .idle
        records = nil
        fetchedAt = nil
        fresh = false
        tokenVerified = false
        leading = nil
        failures = 0
        retryAt = nil
        heldDownUntil = nil
        lastFailOpen = nil
        planner.reset()
    }
}
