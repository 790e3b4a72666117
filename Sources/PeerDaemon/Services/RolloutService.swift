import Cluster
import Deployment
import Foundation
import Leadership
import Logging
import Membership
import NIOCore
import PeerConfiguration
import PeerCore
import ServiceLifecycle

/// The shell around this node's ``RolloutNode``: steps it whenever a member's state changes (every 100 ms while
/// a rollout runs), carries out its directives (persist, then announce; run a swap through the ``NodeEngine``),
/// and serves `peerctl deploy`, `--follow` and `rollout cancel` on a node of a mesh.
///
/// Deploy requests are serialized by the lease leader: any node forwards them to it over the members' TLS
/// links (``RolloutMessage``); the leader makes the next intent under its term and answers "accepted" only when
/// a majority of the app nodes holds it.
public actor RolloutService: Service {
    /// A request this service did not carry out, and why.
    public enum Failure: Error, CustomStringConvertible {
        /// Refused: another rollout runs, nothing to roll back to, or not replicated to a majority.
        case refused(String)
        /// No leader to take it, or it did not answer: nothing was started.
        case unavailable(String)
        case notFound(String)

        public var description: String {
            switch self {
            case .refused(let why), .unavailable(let why), .notFound(let why): why
            }
        }
    }

    /// What the leader answers a deploy request.
    struct Accepted: Sendable {
        var id: String
        var image: String
        var holders: Int
        var nodes: Int
    }

    struct Watcher {
        var id: String
        var continuation: AsyncStream<RolloutEvent>.Continuation
        var seen: [String: RolloutReport] = [:]
        /// The intent as last seen: once this node has moved on to a newer one, the watcher hears that.
        var intent: RolloutIntent?
        /// Give up on an intent this node never hears of by then.
        var unknownUntil: Instant
    }

    nonisolated let engine: NodeEngine
    nonisolated let cluster: Published<ClusterState>
    nonisolated let announcements: Published<Announcement>
    nonisolated let links: MemberLinks
    nonisolated let me: String
    nonisolated let state: StateDirectory
    nonisolated let logger: Logger
    nonisolated let clock: any PeerClock
    nonisolated let settings: RolloutNode.Request
    /// How long the leader waits for a majority to hold a new intent.
    nonisolated let replicationTimeout: Duration
    /// How long a request waits for a leader (an election after the last one's lease ran out).
    nonisolated let leaderWait: Duration
    private var node: RolloutNode
    private var restored: RolloutNode.Persisted?
    private var started = false
    private let ready = Wakeup()
    /// Swaps the node asked for, for the run loop to start.
    private var toStart: [RolloutNode.Swap] = []
    private var watchers: [UUID: Watcher] = [:]
    private var pending: [String: CheckedContinuation<RolloutMessage.Answer?, Never>] = [:]

    init(
        config: PeerConfig, engine: NodeEngine, cluster: Published<ClusterState>, announcements: Published<Announcement>, links: MemberLinks,
        clock: any PeerClock = EventLoopClock(), logger: Logger
    ) {
        self.settings = RolloutNode.Request(
            id: "", image: nil, requestedBy: "", preferredOrder: config.rollout.order, settleMs: config.rollout.settle.milliseconds,
            nodeTimeoutMs: config.rollout.nodeTimeout.milliseconds, parallel: config.rollout.parallel, skipDown: config.rollout.downNodes == .skip)
        self.replicationTimeout = .seconds(5)
        let lease = LeaseSettings.profile(config.mesh?.profile ?? "standard")
        self.leaderWait = lease.duration * 3 + .seconds(5)
        self.engine = engine
        self.cluster = cluster
        self.announcements = announcements
        self.links = links
        self.me = config.node.name
        self.state = StateDirectory(config.stateDirectory)
        self.logger = logger
        self.clock = clock
        self.node = RolloutNode(me: config.node.name)
        do {
            restored = try state.read(.rollout)
        } catch {
            // Not fatal: the cluster's intent comes back with the gossip; this node's own report starts over.
            logger.error("the rollout file is unreadable; starting without it", metadata: ["error": "\(error)"])
        }
    }

    // MARK: - peerctl deploy, --follow, rollout cancel

    /// Starts a cluster deploy of `image` (or a rollback to the previous image when nil) through the leader and
    /// streams its progress: `accepted` once a majority holds it, then each node's phase, then the result of
    /// this intent (never another's).
    func submit(image: ImageReference?, requestedBy: String) async throws(Failure) -> AsyncStream<RolloutEvent> {
        await untilStarted()
        let request = RolloutMessage.Request(
            ref: NodeEngine.newID(), op: image == nil ? .rollback : .deploy, image: image?.given, requestedBy: requestedBy)
        let accepted = try await toLeader(request)
        logger.info(
            "rollout accepted",
            metadata: ["deploy.id": "\(accepted.id)", "deploy.image": "\(accepted.image)", "deploy.requested_by": "\(requestedBy)"])
        return watch(accepted.id, first: .accepted(id: accepted.id, image: accepted.image, holders: accepted.holders, alive: accepted.nodes))
    }

    /// Re-attaches to a rollout (the current one when `id` is nil): its node phases from now on, then its result
    /// — at once if it has already ended.
    func follow(_ id: String?) async throws(Failure) -> AsyncStream<RolloutEvent> {
        await untilStarted()
        guard let target = id ?? node.intent?.id else { throw .notFound("no rollout to follow: this cluster has not had one") }
        // Accepted a moment ago through another node: the gossip brings it here within a few rounds.
        let changes = Wakeup()
        cluster.watch(changes) { old, new in old.members != new.members }
        defer { cluster.unwatch(changes) }
        let patience = clock.now() + .seconds(5)
        while true {
            let known = [node.intent].compactMap { $0 } + view().members.compactMap(\.intent)
            if let intent = known.first(where: { $0.id == target }) {
                return watch(target, first: .following(id: intent.id, image: intent.image))
            }
            guard clock.now() < patience else {
                throw .notFound("no rollout \(target) here (the current one is \(node.intent?.id ?? "none")); see peerctl status")
            }
            await changes.wait(atMost: patience - clock.now(), clock: clock)
        }
    }

    /// Stops the current rollout (`id`, if given, must be it): the nodes it reached go back. Carried out by the
    /// leader.
    func cancel(_ id: String?, requestedBy: String) async throws(Failure) -> String {
        await untilStarted()
        let request = RolloutMessage.Request(ref: NodeEngine.newID(), op: .cancel, id: id, requestedBy: requestedBy)
        return try await toLeader(request).id
    }

    /// This node serves an older version than a rollout that went on without it (it was down or cut off when
    /// its turn came): keep it out of DNS until it has caught up. Never during its own turn of a rollout.
    public func isBehind() async -> Bool {
        guard node.missed, let intent = node.intent else { return false }
        return await engine.servingImage() != intent.image
    }

    // MARK: - The leader

    /// Sends a request to the leader (or carries it out here if this node leads) and waits for its answer. A
    /// leader that does not answer (paused, cut off, killed) is given up on for the next one, if one is elected
    /// in time: the request's ref is the intent's id, so a leader that took it already answers "accepted" again.
    private func toLeader(_ request: RolloutMessage.Request) async throws(Failure) -> Accepted {
        let changes = Wakeup()
        cluster.watch(changes) { old, new in old.lease != new.lease }
        defer { cluster.unwatch(changes) }
        // An election may be under way: long enough for a lease to run out and the next to be won.
        let giveUp = clock.now() + leaderWait
        var silent: Lease.Leader?
        while true {
            var leader = cluster.current.lease.knownLeader(now: clock.now())
            while leader == nil || leader == silent, clock.now() < giveUp {
                await changes.wait(atMost: giveUp - clock.now(), clock: clock)
                leader = cluster.current.lease.knownLeader(now: clock.now())
            }
            guard let leader, leader != silent else {
                throw .unavailable(
                    silent.map { "the leader \($0.id) did not answer and no other was elected; nothing was started here; try again" }
                        ?? "no leader: this node cannot see a majority of the voters, so it takes no deploy (a node on the minority side of a partition refuses); see peerctl who and peerctl status"
                )
            }
            if leader.id.name == me {
                switch await lead(request) {
                case .success(let accepted): return accepted
                case .failure(.unavailable) where clock.now() < giveUp: silent = leader  // lost the lease just now
                case .failure(let failure): throw failure
                }
                continue
            }
            guard let answer = await forward(request, to: leader.id) else {
                logger.warning(
                    "the leader did not answer a rollout request", metadata: ["mesh.member": "\(leader.id)", "lease.term": "\(leader.term)"])
                silent = leader
                continue
            }
            if let accepted = answer.accepted {
                return Accepted(id: accepted, image: answer.image ?? "?", holders: answer.holders ?? 0, nodes: answer.nodes ?? 0)
            }
            let why = answer.error ?? "refused"
            if answer.code == "unavailable", clock.now() < giveUp {
                silent = leader
                continue
            }
            throw answer.code == "unavailable" ? .unavailable(why) : answer.code == "not-found" ? .notFound(why) : .refused(why)
        }
    }

    /// The leader's side: one request at a time becomes the next intent (``RolloutNode/propose``, synchronous on
    /// this actor, so two requests never get the same number); accepted once a majority holds it, otherwise
    /// cancelled and refused.
    private func lead(_ request: RolloutMessage.Request) async -> Result<Accepted, Failure> {
        guard let fence = cluster.current.fence(now: clock.now()) else {
            return .failure(.unavailable("this node no longer leads; try again in a few seconds"))
        }
        if request.op == .cancel {
            guard let current = node.intent, request.id == nil || request.id == current.id else {
                return .failure(.notFound("no rollout \(request.id ?? "") to cancel; the current one is \(node.intent?.id ?? "none")"))
            }
            guard let directives = node.cancel(current.id, reason: "cancelled by \(request.requestedBy)", members: view().members) else {
                return .failure(.refused("rollout \(current.id) is not running; nothing to cancel"))
            }
            logger.warning("rollout cancelled", metadata: ["deploy.id": "\(current.id)", "deploy.requested_by": "\(request.requestedBy)"])
            await carryOut(directives)
            return .success(Accepted(id: current.id, image: current.image, holders: 0, nodes: current.order.count))
        }
        let status = await engine.status()
        var ask = settings
        ask.id = request.ref  // the same request twice (a retry through another route) is one intent
        ask.image = request.image
        ask.requestedBy = request.requestedBy
        // A rollout that just finished may still look running here for a gossip round or two.
        let changes = Wakeup()
        cluster.watch(changes) { old, new in old.members != new.members }
        defer { cluster.unwatch(changes) }
        let patience = clock.now() + .seconds(3)
        var proposed: RolloutIntent?
        while proposed == nil {
            if let taken = node.intent, taken.id == ask.id {
                proposed = taken
                break
            }
            do {
                let (intent, directives) = try node.propose(
                    ask, term: fence.term, serving: status.serving?.image, previous: status.previousImage, view: view())
                await carryOut(directives)
                proposed = intent
            } catch .busy where clock.now() < patience {
                await changes.wait(atMost: patience - clock.now(), clock: clock)
            } catch {
                return .failure(.refused(error.description))
            }
        }
        let intent = proposed!
        let deadline = clock.now() + replicationTimeout
        while true {
            let (holders, needed) = Rollout.replication(of: intent, reports: reports())
            if holders >= needed { return .success(Accepted(id: intent.id, image: intent.image, holders: holders, nodes: intent.order.count)) }
            if clock.now() >= deadline {
                let why =
                    "not replicated: \(holders) of \(intent.order.count) app nodes persisted deploy \(intent.id) within \(replicationTimeout) (a majority, \(needed), must); it was cancelled and nothing changed; see peerctl status for nodes that are down"
                if let undo = node.cancel(intent.id, reason: why, members: view().members) { await carryOut(undo) }
                logger.error("rollout not replicated", metadata: ["deploy.id": "\(intent.id)", "deploy.holders": "\(holders)"])
                return .failure(.refused(why))
            }
            await changes.wait(atMost: deadline - clock.now(), clock: clock)
        }
    }

    /// Sends a request to the leader over this node's link to it; nil if it cannot be sent or no answer comes.
    private func forward(_ request: RolloutMessage.Request, to leader: MemberID) async -> RolloutMessage.Answer? {
        guard let message = try? JSONEncoder().encode(RolloutMessage.rolloutRequest(request)) else { return nil }
        let ref = request.ref
        // Registered before the request leaves, so that no answer comes before its waiter; the leader may take
        // up to the replication timeout to answer.
        let sender = Task { [links, clock, replicationTimeout] in
            if await links.send(ByteBuffer(bytes: message), to: leader) { try? await clock.sleep(for: replicationTimeout + .seconds(5)) }
            self.resolve(ref, nil)
        }
        defer { sender.cancel() }
        return await withCheckedContinuation { pending[ref] = $0 }
    }

    private func resolve(_ ref: String, _ answer: RolloutMessage.Answer?) {
        pending.removeValue(forKey: ref)?.resume(returning: answer)
    }

    /// A member's message: a request to this node as leader, or an answer to one of ours.
    private func received(_ message: ByteBuffer, from member: MemberID) async {
        guard let decoded = try? JSONDecoder().decode(RolloutMessage.self, from: Data(buffer: message)) else {
            logger.warning("undecodable rollout message", metadata: ["mesh.member": "\(member)"])
            return
        }
        switch decoded {
        case .rolloutAnswer(let answer):
            resolve(answer.ref, answer)
        case .rolloutRequest(let request):
            logger.info(
                "rollout request forwarded",
                metadata: ["mesh.member": "\(member)", "deploy.op": "\(request.op)", "deploy.requested_by": "\(request.requestedBy)"])
            var answer = RolloutMessage.Answer(ref: request.ref)
            switch await lead(request) {
            case .success(let accepted):
                answer.accepted = accepted.id
                answer.image = accepted.image
                answer.holders = accepted.holders
                answer.nodes = accepted.nodes
            case .failure(let failure):
                answer.error = failure.description
                switch failure {
                case .refused: answer.code = "refused"
                case .unavailable: answer.code = "unavailable"
                case .notFound: answer.code = "not-found"
                }
            }
            if let bytes = try? JSONEncoder().encode(RolloutMessage.rolloutAnswer(answer)) {
                _ = await links.send(ByteBuffer(bytes: bytes), to: member)
            }
        }
    }

    // MARK: - Running

    public func run() async throws {
        let (restarted, directives) = RolloutNode.restart(me: me, persisted: restored, serving: await engine.servingImage())
        node = restarted
        await carryOut(directives)
        started = true
        ready.wake()
        let wakeup = Wakeup()
        // A new intent or a report arrives as a change of a member's state.
        cluster.watch(wakeup) { old, new in old.members != new.members || old.lease.promised != new.lease.promised }
        try await cancelWhenGracefulShutdown {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask {
                    await withDiscardingTaskGroup { requests in
                        for await (from, message) in self.links.inbound(.rollout) {
                            // Each on its own: the leader may take seconds to answer one.
                            requests.addTask { await self.received(message, from: from) }
                        }
                    }
                }
                while !Task.isCancelled {
                    for swap in await self.step() {
                        group.addTask { await self.runSwap(swap) }
                    }
                    // No need to poll while no rollout runs: a new intent arrives as a change of a member's state.
                    await wakeup.wait(atMost: await self.rolling ? .milliseconds(100) : .seconds(1), clock: self.clock)
                }
                group.cancelAll()
            }
        }
    }

    private var rolling: Bool { node.swap != nil || node.outcome(view().members) == .running }

    private func untilStarted() async {
        while !started { await ready.wait(atMost: .seconds(1), clock: clock) }
    }

    /// One step of the node; returns the swaps to start.
    private func step() async -> [RolloutNode.Swap] {
        await carryOut(node.step(view()))
        notifyWatchers()
        defer { toStart = [] }
        return toStart
    }

    private func runSwap(_ swap: RolloutNode.Swap) async {
        var record: DeployRecord?
        do {
            // The intent's image came over the network: it enters the domain here.
            let (_, events) = try await engine.submit(.deploy, image: try ImageReference(parsing: swap.image))
            for await event in events {
                switch event {
                case .result(let finished): record = finished
                case .progress(let step) where step.status != .done:
                    broadcast(to: swap.intent, .node(me, phase: step.step.rawValue, reason: step.status == .started ? nil : step.detail))
                default: break
                }
            }
        } catch {
            record = nil
            logger.error("rollout swap could not start", metadata: ["error": "\(error)"])
        }
        let ok = record?.result == .succeeded
        await carryOut(node.swapFinished(swap, succeeded: ok, reason: record?.reason ?? (record == nil ? "the swap did not start" : nil)))
        notifyWatchers()
    }

    /// Carries out the node's directives in order. A persist that fails keeps back the announcements after
    /// it: announcing an intent says it is persisted here.
    private func carryOut(_ directives: [RolloutNode.Directive]) async {
        var persisted = true
        for directive in directives {
            switch directive {
            case .persist(let value):
                do {
                    try state.write(value, to: .rollout)
                    persisted = true
                } catch {
                    persisted = false
                    logger.error("cannot persist the rollout; not announcing it", metadata: ["error": "\(error)"])
                }
            case .announce(let intent, let report):
                guard persisted else { continue }
                announcements.update {
                    $0.rollout = intent
                    $0.rolloutReport = report
                }
            case .startSwap(let swap):
                toStart.append(swap)
            case .adopted(let intent):
                logger.info(
                    "rollout adopted",
                    metadata: [
                        "deploy.id": "\(intent.id)", "deploy.seq": "\(intent.seq)", "deploy.term": "\(intent.term ?? 0)",
                        "deploy.image": "\(intent.image)",
                        "deploy.order": "\(intent.order)",
                    ])
            case .dropped(let intent, let why):
                logger.warning("rollout dropped", metadata: ["deploy.id": "\(intent.id)", "deploy.image": "\(intent.image)", "reason": "\(why)"])
            }
        }
    }

    // MARK: - Views

    private func view() -> RolloutNode.View {
        let current = cluster.current
        let lease = current.lease
        let now = clock.now()
        return RolloutNode.View(
            members: current.appMembers.map {
                RolloutNode.Member(name: $0.id.name, alive: $0.status != .dead, intent: $0.app.rollout, report: $0.app.rolloutReport)
            },
            term: max(lease.promised, lease.holding?.term ?? 0, lease.grant?.term ?? 0), settled: current.settled(now: now), now: now)
    }

    /// Every member's report (this node's own, not as gossiped, but as it stands).
    private func reports() -> [String: RolloutReport] {
        var out: [String: RolloutReport] = [:]
        for member in cluster.current.appMembers { if let r = member.app.rolloutReport { out[member.id.name] = r } }
        if let report = node.report { out[me] = report }
        return out
    }

    public func current() -> (intent: RolloutIntent?, report: RolloutReport?) { (node.intent, node.report) }

    // MARK: - Watchers

    private func watch(_ id: String, first: RolloutEvent) -> AsyncStream<RolloutEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: RolloutEvent.self)
        continuation.yield(first)
        watchers[UUID()] = Watcher(id: id, continuation: continuation, unknownUntil: clock.now() + .seconds(30))
        notifyWatchers()
        return stream
    }

    private func broadcast(to id: String, _ event: RolloutEvent) {
        for watcher in watchers.values where watcher.id == id { watcher.continuation.yield(event) }
    }

    /// Each watcher hears the phases of its own intent and, once it has ended, its result; a watcher whose
    /// intent was replaced by a newer one hears that.
    private func notifyWatchers() {
        guard !watchers.isEmpty else { return }
        let members = view().members
        let known = [node.intent].compactMap { $0 } + members.compactMap(\.intent)
        let reports = reports()
        let alive = Set(members.filter(\.alive).map(\.name)).union([me])
        let now = clock.now()
        for (key, var watcher) in watchers {
            // The newest copy (a cancellation is newer than the intent it stops).
            guard let intent = known.filter({ $0.id == watcher.id }).max(by: { $1.isNewer(than: $0) }) ?? watcher.intent else {
                if now >= watcher.unknownUntil {
                    watcher.continuation.yield(
                        .finished(
                            id: watcher.id, image: "?", succeeded: false, reason: "this node never heard of rollout \(watcher.id); see peerctl status"
                        ))
                    watcher.continuation.finish()
                    watchers[key] = nil
                }
                continue
            }
            watcher.intent = intent
            for (name, report) in reports.sorted(by: { $0.key < $1.key }) where report.intent == intent.id && watcher.seen[name] != report {
                watcher.seen[name] = report
                watcher.continuation.yield(.node(name, phase: report.phase.rawValue, reason: report.reason))
            }
            watchers[key] = watcher
            var end: RolloutEvent?
            switch Rollout.outcome(intent: intent, reports: reports, alive: alive) {
            case .running:
                if let newer = RolloutNode.newest(in: members), newer.isNewer(than: intent), newer.id != intent.id, node.intent?.id == newer.id {
                    end = .finished(id: intent.id, image: intent.image, succeeded: false, reason: "replaced by rollout \(newer.id) of \(newer.image)")
                }
            case .succeeded: end = .finished(id: intent.id, image: intent.image, succeeded: true, reason: nil)
            case .failed(let node, let reason): end = .finished(id: intent.id, image: intent.image, succeeded: false, reason: "\(node): \(reason)")
            case .cancelled(let reason): end = .finished(id: intent.id, image: intent.image, succeeded: false, reason: reason)
            }
            if let end {
                watcher.continuation.yield(end)
                watcher.continuation.finish()
                watchers[key] = nil
            }
        }
    }
}

/// Rollout requests and their answers between members (over the mesh's TLS links).
enum RolloutMessage: Codable, Sendable {
    struct Request: Codable, Sendable {
        enum Operation: String, Codable, Sendable { case deploy, rollback, cancel }
        /// Matches the answer to the request.
        var ref: String
        var op: Operation
        var image: String?
        /// For `cancel`: the rollout it must be.
        var id: String?
        var requestedBy: String
    }

    struct Answer: Codable, Sendable {
        var ref: String
        /// The rollout's id when accepted (or cancelled).
        var accepted: String?
        var image: String?
        var holders: Int?
        var nodes: Int?
        var error: String?
        /// `refused`, `unavailable` or `not-found`.
        var code: String?
    }

    case rolloutRequest(Request)
    case rolloutAnswer(Answer)
}

extension StateDirectory.File where Value == RolloutNode.Persisted {
    static var rollout: Self { .init("rollout.json") }
}
