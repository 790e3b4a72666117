import PeerCore

/// One node's part in cluster deploys, as a pure state machine: what it adopts, when it swaps, what it reports
/// and persists, what it keeps after a restart — and, on the leader, how a request becomes the next intent.
/// Every event returns the directives the shell carries out (persist before announce, start a swap). The
/// rollout service in peerd is the shell; the rollout simulation runs this same code on many nodes.
public struct RolloutNode: Sendable {
    /// `rollout.json`: the intent this node holds, its report on it, and whether it has seen a majority hold it.
    public struct Persisted: Codable, Sendable, Hashable {
        public var intent: RolloutIntent?
        public var report: RolloutReport?
        /// nil in files of versions before intents were replicated: taken as replicated.
        public var committed: Bool?

        public init(intent: RolloutIntent?, report: RolloutReport?, committed: Bool? = nil) {
            self.intent = intent
            self.report = report
            self.committed = committed
        }
    }

    /// An app node as this node's membership sees it: alive or not, and the intent and report it gossips.
    public struct Member: Sendable, Hashable {
        public var name: String
        public var alive: Bool
        public var intent: RolloutIntent?
        public var report: RolloutReport?

        public init(name: String, alive: Bool, intent: RolloutIntent?, report: RolloutReport?) {
            self.name = name
            self.alive = alive
            self.intent = intent
            self.report = report
        }
    }

    /// This node's leadership while it leads: its lease's term now (it may rise while the leadership goes on: a
    /// leader renews above a term a voter promised to a rival whose campaign lost), and the term it began under.
    public struct Leadership: Sendable, Hashable {
        public var term: UInt64
        public var since: UInt64
        public init(term: UInt64, since: UInt64) {
            self.term = term
            self.since = since
        }
    }

    /// What the node knows when it steps.
    public struct View: Sendable, Hashable {
        public var members: [Member]
        /// The highest leader term this node knows of: an intent of an older term that no majority holds is not
        /// taken up (its leader is gone; it was never acknowledged).
        public var term: UInt64
        /// The membership has had its start-up grace: the others' reports are in.
        public var settled: Bool
        public var now: Instant
        /// This node's leadership, while it leads.
        public var leading: Leadership?
        /// The leader this node knows (itself, or the member it granted its lease to), if any: the only member a
        /// new intent is taken from (``RolloutNode/authoritative(in:leader:holding:)``).
        public var leader: String?

        public init(members: [Member], term: UInt64, settled: Bool, now: Instant, leading: Leadership? = nil, leader: String? = nil) {
            self.members = members
            self.term = term
            self.settled = settled
            self.now = now
            self.leading = leading
            self.leader = leader
        }
    }

    /// A blue/green swap this node runs for an intent: its result is filed under that intent only.
    public struct Swap: Sendable, Hashable {
        public var intent: String
        public var image: String
        /// `.swapping` (forward to the intent's image) or `.rollingBack`.
        public var phase: RolloutReport.Phase

        public init(intent: String, image: String, phase: RolloutReport.Phase) {
            self.intent = intent
            self.image = image
            self.phase = phase
        }
    }

    public enum Directive: Sendable, Hashable {
        /// Write `rollout.json` (before the announcement that follows it).
        case persist(Persisted)
        /// Gossip this node's intent and report.
        case announce(intent: RolloutIntent?, report: RolloutReport?)
        case startSwap(Swap)
        /// For the log.
        case adopted(RolloutIntent)
        case dropped(RolloutIntent, why: String)
    }

    /// Why the leader did not make a request an intent.
    public enum Refusal: Error, Sendable, Hashable, CustomStringConvertible {
        /// Another rollout runs: requests are refused, not queued (a queued deploy would run long after the CI
        /// job that asked for it has moved on, and two queued ones would race for the same version).
        case busy(RolloutIntent, done: Int)
        case nothingToRollBack
        case noAppNodes
        /// An intent of this term already carries an absurd sequence number (a broken or hostile member).
        case sequenceExhausted

        public var description: String {
            switch self {
            case .busy(let running, let done):
                "deploy \(running.id) of \(running.image) (requested by \(running.requestedBy)) is still rolling out (\(done) of \(running.order.count) nodes done); deploys are refused, not queued, while one runs: follow it with peerctl deploy --follow \(running.id), or stop it with peerctl rollout cancel"
            case .nothingToRollBack: "nothing to roll back to: the cluster has no previous image"
            case .noAppNodes: "the cluster has no app node to deploy to"
            case .sequenceExhausted:
                "an intent of this leader's term carries a sequence number above any a cluster reaches; wait for the next leader's term (or restart this node) and deploy again"
            }
        }
    }

    /// What a deploy request asks for, and the cluster's rolling settings.
    public struct Request: Sendable, Hashable {
        public var id: String
        /// nil: a rollback to what served before.
        public var image: String?
        public var requestedBy: String
        public var preferredOrder: [String]
        public var settleMs: Int64
        public var nodeTimeoutMs: Int64
        public var parallel: Int
        public var skipDown: Bool

        public init(
            id: String, image: String?, requestedBy: String, preferredOrder: [String] = [], settleMs: Int64, nodeTimeoutMs: Int64, parallel: Int = 1,
            skipDown: Bool = false
        ) {
            self.id = id
            self.image = image
            self.requestedBy = requestedBy
            self.preferredOrder = preferredOrder
            self.settleMs = settleMs
            self.nodeTimeoutMs = nodeTimeoutMs
            self.parallel = parallel
            self.skipDown = skipDown
        }
    }

    public let me: String
    public private(set) var intent: RolloutIntent?
    public private(set) var report: RolloutReport?
    /// This node has seen a majority of the intent's nodes hold it: it may swap for it, and keeps it over a
    /// restart.
    public private(set) var committed: Bool
    /// The swap under way, if any: a newer intent is taken up only once it has ended.
    public private(set) var swap: Swap?
    /// The intent was under way or finished before this node (re)joined it: every other node had done its
    /// part. Such a node serves an older version than the cluster and stays out of DNS until it has caught up.
    public private(set) var missed = false
    private var fresh: Bool
    /// The intent this node proposed as leader (not kept over a restart, which drops an intent not yet held
    /// by a majority anyway).
    private var proposed: String?
    private var doneSince: [String: Instant] = [:]
    private var downSince: [String: Instant] = [:]

    /// A node starting: what it persisted, and what its engine serves now (after a crash mid-swap, that tells
    /// how the swap ended). An intent this node never saw a majority hold is dropped: it was never acknowledged,
    /// and if the cluster did take it up, the gossip brings it back.
    public static func restart(me: String, persisted: Persisted?, serving: String?) -> (RolloutNode, [Directive]) {
        var node = RolloutNode(me: me, intent: persisted?.intent, report: persisted?.report, committed: persisted?.committed ?? true)
        var directives: [Directive] = []
        guard let intent = node.intent else { return (node, directives) }
        if !node.committed, node.report?.phase ?? .waiting == .waiting {
            node.intent = nil
            node.report = nil
            node.committed = false
            directives.append(.dropped(intent, why: "it was never replicated to a majority of the app nodes"))
        } else if let report = node.report, report.intent == intent.id {
            switch report.phase {
            case .swapping: node.report = RolloutReport(intent: intent.id, phase: serving == intent.image ? .done : .waiting)
            case .rollingBack: node.report = RolloutReport(intent: intent.id, phase: serving == intent.previousImage ? .rolledBack : .done)
            default: break
            }
        }
        directives += node.persistAndAnnounce()
        return (node, directives)
    }

    public init(me: String) {
        self.init(me: me, intent: nil, report: nil, committed: true)
    }

    private init(me: String, intent: RolloutIntent?, report: RolloutReport?, committed: Bool) {
        self.me = me
        self.intent = intent
        self.report = report
        self.committed = committed
        self.fresh = intent != nil
    }

    public var persisted: Persisted { Persisted(intent: intent, report: report, committed: committed) }

    // MARK: - Stepping

    /// One decision on what this node knows now: take up a newer intent, note replication, and report or
    /// start a swap. Called whenever a member's state changes, and every 100 ms while a rollout runs.
    public mutating func step(_ view: View) -> [Directive] {
        var directives: [Directive] = []
        let now = view.now
        if let newer = Self.newest(in: view.members, leader: view.leader, holding: intent), newer.isNewer(than: intent) {
            if newer.id == intent?.id {
                intent = newer  // a cancellation of ours: the report stands
                directives += persistAndAnnounce()
            } else if swap == nil, newer.term ?? 0 >= view.term || Self.isReplicated(newer, reports(view.members)) {
                intent = newer
                report = RolloutReport(intent: newer.id, phase: .waiting)
                committed = false
                doneSince = [:]
                // Heard of it only once every other node had done its part: it ran without us (judged once
                // the view is in, if this node has just started).
                missed = view.settled && Self.othersDone(newer, me: me, reports: reports(view.members))
                fresh = !view.settled
                directives.append(.adopted(newer))
                directives += persistAndAnnounce()
            }
        }
        // The leader renewed under a higher term: the same leadership goes on, and so does the intent it proposed
        // and a majority does not hold yet. It moves to the new term (same id and number), or every node — this
        // one too — would drop it below as an intent of a leadership that ended.
        // Only while the leadership it was proposed in goes on: a node that lost its lease and won it again later
        // does not bring back an intent of its earlier leadership.
        if view.leading == nil { proposed = nil }
        let proposedHere = proposed
        let since = view.leading?.since ?? .max
        func ownLeadership(_ intent: RolloutIntent) -> Bool { intent.id == proposedHere && (intent.term ?? 0) >= since }
        if let term = view.leading?.term, var own = intent, ownLeadership(own), own.term ?? 0 < term, swap == nil,
            !Self.isReplicated(own, reports(view.members))
        {
            own.term = term
            intent = own
            directives += persistAndAnnounce()
        }
        // An intent no majority held, from a leadership that has ended, will never run: drop it (not the one this
        // node proposed while it still leads: its own replication deadline cancels that one).
        if let stale = intent, !committed, stale.term ?? 0 < view.term, swap == nil, report?.phase ?? .waiting == .waiting,
            !Self.isReplicated(stale, reports(view.members)), !ownLeadership(stale)
        {
            intent = nil
            report = nil
            committed = true
            directives.append(.dropped(stale, why: "it was not replicated to a majority before its leader's term ended"))
            directives += persistAndAnnounce()
        }
        guard let intent else { return directives }
        let reports = self.reports(view.members)
        if !committed, Self.isReplicated(intent, reports) {
            committed = true
            directives.append(.persist(persisted))
        }
        // After a (re)start, nothing is decided before the others' reports are in: did it run without us?
        if fresh {
            guard view.settled else { return directives }
            fresh = false
            missed = report?.phase == .waiting && Self.othersDone(intent, me: me, reports: reports)
        }
        // Caught up, or (a node of the intent) back with the others. A node that joined after the intent began and
        // could not catch up stays behind — out of DNS — rather than serve another version than the others.
        if report?.intent == intent.id, report?.phase == .done || (intent.order.contains(me) && [.rolledBack, .failed].contains(report?.phase)) {
            missed = false
        }
        for member in view.members {
            if reports[member.name]?.intent == intent.id, reports[member.name]?.phase == .done {
                if doneSince[member.name] == nil { doneSince[member.name] = now }
            } else {
                doneSince[member.name] = nil
            }
            if member.alive { downSince[member.name] = nil } else if downSince[member.name] == nil { downSince[member.name] = now }
        }
        guard swap == nil else { return directives }
        // Not before a majority holds it (unless it is to be undone), and not while another intent's swap runs
        // anywhere.
        if intent.cancelled == nil, !committed { return directives }
        let busyElsewhere = view.members.contains {
            $0.name != me && $0.alive && $0.report.map { $0.intent != intent.id && [.swapping, .rollingBack].contains($0.phase) } == true
        }
        if busyElsewhere { return directives }
        switch Rollout.decide(
            intent: intent, me: me, reports: reports, alive: alive(view.members), now: now, doneSince: doneSince, downSince: downSince)
        {
        case .wait:
            break
        case .report(let phase, let reason):
            report = RolloutReport(intent: intent.id, phase: phase, reason: reason)
            directives += persistAndAnnounce()
        case .swap(let image, let phase):
            report = RolloutReport(intent: intent.id, phase: phase)
            directives += persistAndAnnounce()
            let started = Swap(intent: intent.id, image: image, phase: phase)
            swap = started
            directives.append(.startSwap(started))
        }
        return directives
    }

    /// A swap this node started has ended. Its result counts for the intent it was started for only.
    public mutating func swapFinished(_ finished: Swap, succeeded: Bool, reason: String?) -> [Directive] {
        var directives: [Directive] = []
        guard swap == finished else { return directives }
        swap = nil
        guard intent?.id == finished.intent else { return directives }
        switch finished.phase {
        case .swapping:
            report = RolloutReport(intent: finished.intent, phase: succeeded ? .done : .failed, reason: succeeded ? nil : reason ?? "the swap failed")
        default:
            report = RolloutReport(
                intent: finished.intent, phase: succeeded ? .rolledBack : .failed, reason: succeeded ? nil : "rollback failed: \(reason ?? "?")")
        }
        directives += persistAndAnnounce()
        return directives
    }

    /// The intent runs and this node is in it (swapping included): the leader refuses another one.
    public func outcome(_ members: [Member]) -> Rollout.Outcome? {
        guard let intent else { return nil }
        return Rollout.outcome(intent: intent, reports: reports(members), alive: alive(members))
    }

    // MARK: - The leader's side

    /// The leader makes a request the next intent, under its `term`, and takes it as its own (it is then
    /// replicated like any other). Refused while this node's intent still runs.
    public mutating func propose(
        _ request: Request, term: UInt64, serving: String?, previous: String?, view: View
    ) throws(Refusal) -> (
        RolloutIntent, [Directive]
    ) {
        let reports = self.reports(view.members)
        // An intent of an ended leadership that no majority took up is not the cluster's.
        let known = committed || intent?.term ?? 0 >= term ? intent : nil
        let outcome = known == nil ? nil : outcome(view.members)
        if let known, outcome == .running || swap != nil {
            throw .busy(known, done: known.order.filter { reports[$0]?.intent == known.id && reports[$0]?.phase == .done }.count)
        }
        // What the cluster serves now, and what it served before that: from the newest rollout (if it did not
        // succeed, the cluster is back on its previous image), or this node's own history before any.
        let succeeded = outcome == .succeeded
        let current = known.map { succeeded ? $0.image : $0.previousImage } ?? serving
        let before = known.map { succeeded ? $0.previousImage : $0.olderImage } ?? previous
        let image: String
        let kind: RolloutIntent.Kind
        if let requested = request.image {
            image = requested
            kind = .deploy
        } else {
            guard let before else { throw .nothingToRollBack }
            image = before
            kind = .rollback
        }
        let nodes = view.members.map(\.name)
        guard !nodes.isEmpty else { throw .noAppNodes }
        let order = request.preferredOrder.filter(nodes.contains) + nodes.filter { !request.preferredOrder.contains($0) }.sorted()
        // After every intent of this term (a new term orders after every older one whatever its numbers); never
        // past the bound, so that a hostile number cannot trap the `+ 1`.
        let sameTerm = ([known] + view.members.map(\.intent)).compactMap { $0 }.filter { $0.term == term }.map(\.seq)
        let last = sameTerm.max() ?? 0
        guard Counter.isPlausible(last) else { throw .sequenceExhausted }
        let seq = last + 1
        var new = RolloutIntent(
            id: request.id, seq: seq, kind: kind, image: image, previousImage: current, order: order, requestedBy: request.requestedBy,
            settleMs: request.settleMs, nodeTimeoutMs: request.nodeTimeoutMs)
        new.olderImage = before
        new.term = term
        new.proposer = me
        if request.parallel > 1 { new.parallel = request.parallel }
        if request.skipDown { new.skipDown = true }
        intent = new
        proposed = new.id
        report = RolloutReport(intent: new.id, phase: .waiting)
        committed = false
        doneSince = [:]
        missed = false
        fresh = false
        var directives: [Directive] = [.adopted(new)]
        directives += persistAndAnnounce()
        return (new, directives)
    }

    /// The leader stops this node's intent `id` (it is then replicated like any other change): the nodes it
    /// reached go back. nil when there is nothing of that id left to stop.
    public mutating func cancel(_ id: String, reason: String, members: [Member]) -> [Directive]? {
        guard var stopped = intent, stopped.id == id, stopped.cancelled == nil, outcome(members) == .running else { return nil }
        stopped.cancelled = reason
        intent = stopped
        return persistAndAnnounce()
    }

    // MARK: - Helpers

    private func persistAndAnnounce() -> [Directive] {
        [.persist(persisted), .announce(intent: intent, report: report)]
    }
}
