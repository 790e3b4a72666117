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
    var node: RolloutNode
    private var restored: RolloutNode.Persisted?
    private var started = false
    private let ready = Wakeup()
    /// Swaps the node asked for, for the run loop to start.
    private var toStart: [RolloutNode.Swap] = []
    var watchers: [UUID: Watcher] = [:]
    /// Requests forwarded to a leader, by ref: whom they went to, and who waits for the answer.
    var pending: [String: (leader: MemberID, continuation: CheckedContinuation<RolloutMessage.Answer?, Never>)] = [:]

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
            let view = view()
            if let intent = node.known(view.members, leader: view.leader).first(where: { $0.id == target }) {
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

    func untilStarted() async {
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
            let (_, events) = try await submit(try ImageReference(parsing: swap.image))
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

    /// Hands the swap to the engine — which may be busy for a moment: starting (a new node restoring the image its
    /// config names), or a deploy asked on this node. The swap waits for it (at most a minute) rather than fail the
    /// rollout for the whole cluster.
    private func submit(_ image: ImageReference) async throws -> (String, AsyncStream<DeployEvent>) {
        let deadline = clock.now() + .seconds(60)
        var waiting = false
        while true {
            let reason: String
            do {
                return try await engine.submit(.deploy, image: image)
            } catch let error as NodeEngine.Busy where clock.now() < deadline {
                reason = error.description
            } catch let error as NodeEngine.Refused where clock.now() < deadline {
                guard await engine.startingReason != nil else { throw error }
                reason = error.description
            }
            if !waiting { logger.info("rollout swap waits for the engine", metadata: ["reason": "\(reason)"]) }
            waiting = true
            try await clock.sleep(for: .milliseconds(250))
        }
    }

    /// Carries out the node's directives in order. A persist that fails keeps back the announcements after
    /// it: announcing an intent says it is persisted here.
    func carryOut(_ directives: [RolloutNode.Directive]) async {
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

    func view() -> RolloutNode.View {
        let current = cluster.current
        let lease = current.lease
        let now = clock.now()
        return RolloutNode.View(
            members: current.appMembers.map {
                RolloutNode.Member(name: $0.id.name, alive: $0.status != .dead, intent: $0.app.rollout, report: $0.app.rolloutReport)
            },
            term: max(lease.promised, lease.holding?.term ?? 0, lease.grant?.term ?? 0), settled: current.settled(now: now), now: now,
            leading: current.fence(now: now).map { fence in
                RolloutNode.Leadership(term: fence.term, since: lease.holding.map { min($0.since, fence.term) } ?? fence.term)
            }, leader: lease.knownLeader(now: now)?.id.name)
    }

    public func current() -> (intent: RolloutIntent?, report: RolloutReport?) { (node.intent, node.report) }

}

extension StateDirectory.File where Value == RolloutNode.Persisted {
    static var rollout: Self { .init("rollout.json") }
}
