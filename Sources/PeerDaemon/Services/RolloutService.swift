import PeerConfiguration
import Cluster
import Deployment
import Foundation
import Logging
import Membership
import PeerCore
import ServiceLifecycle

/// Runs this node's part of cluster deploys (``Rollout``): adopts the newest intent it hears of (persisting it
/// before gossiping that it has it), decides its next step from the reports every member gossips (every 100 ms
/// while a rollout runs; otherwise when a member's state changes, or after a second),
/// runs its own blue/green swaps through the ``NodeEngine``, and serves `peerctl deploy` on a node of a mesh.
public actor RolloutService: Service {
    /// `rollout.json`: the intent this node holds and its report on it.
    struct Persisted: Codable, Sendable {
        var intent: RolloutIntent?
        var report: RolloutReport?
    }

    public struct Busy: Error, CustomStringConvertible {
        public var description: String
    }

    nonisolated let engine: NodeEngine
    nonisolated let cluster: Published<ClusterState>
    nonisolated let announcements: Published<Announcement>
    nonisolated let me: String
    nonisolated let state: StateDirectory
    nonisolated let logger: Logger
    nonisolated let clock: any PeerClock
    nonisolated let settle: Duration
    nonisolated let nodeTimeout: Duration
    private var intent: RolloutIntent?
    private var report: RolloutReport?
    private var doneSince: [String: Instant] = [:]
    private var downSince: [String: Instant] = [:]
    private var swapping = false
    private var swapResults: AsyncStream<(image: String, phase: RolloutReport.Phase, record: DeployRecord?)>.Continuation?
    private var watchers: [UUID: AsyncStream<RolloutEvent>.Continuation] = [:]
    private var lastReports: [String: RolloutReport] = [:]
    /// A rollout this node knows of is under way (its steps count time: settle, node timeout).
    private var rolling = false

    nonisolated let preferredOrder: [String]
    nonisolated let parallel: Int
    nonisolated let skipDown: Bool

    init(
        config: PeerConfig, engine: NodeEngine, cluster: Published<ClusterState>, announcements: Published<Announcement>,
        clock: any PeerClock = EventLoopClock(), logger: Logger
    ) {
        let settle = config.rollout.settle
        let nodeTimeout = config.rollout.nodeTimeout
        self.preferredOrder = config.rollout.order
        self.parallel = config.rollout.parallel
        self.skipDown = config.rollout.downNodes == .skip
        self.engine = engine
        self.cluster = cluster
        self.announcements = announcements
        self.me = config.node.name
        self.state = StateDirectory(config.stateDirectory)
        self.logger = logger
        self.clock = clock
        self.settle = settle
        self.nodeTimeout = nodeTimeout
        do {
            let saved = try state.read(.rollout)
            intent = saved?.intent
            report = saved?.report
        } catch {
            // Not fatal: the cluster's intent comes back with the gossip; this node's own report starts over.
            logger.error("the rollout file is unreadable; starting without it", metadata: ["error": "\(error)"])
        }
    }

    // MARK: - peerctl deploy

    /// Starts a cluster deploy of `image` (or a rollback to the previous image when nil) and streams its
    /// progress. Refused while another one runs.
    func submit(image requested: ImageReference?, requestedBy: String) async throws -> AsyncStream<RolloutEvent> {
        let changes = Wakeup()
        cluster.watch(changes) { old, new in old.members != new.members }
        defer { cluster.unwatch(changes) }
        var view = rolloutView()
        var newest = self.newest(in: view)
        // A rollout that just finished elsewhere may still look running here for a gossip round or two.
        let patience = clock.now() + .seconds(3)
        while let n = newest, Rollout.outcome(intent: n, reports: reports(view), alive: Self.alive(view)) == .running, clock.now() < patience {
            await changes.wait(atMost: patience - clock.now(), clock: clock)
            view = rolloutView()
            newest = self.newest(in: view)
        }
        if let newest, Rollout.outcome(intent: newest, reports: reports(view), alive: Self.alive(view)) == .running {
            throw Busy(
                description:
                    "deploy \(newest.id) of \(newest.image) (requested by \(newest.requestedBy)) is still rolling out; wait for it or see peerctl status"
            )
        }
        let status = await engine.status()
        // What the cluster serves now, and what it served before that: from the newest rollout (if it failed,
        // the cluster is back on its previous image), or this node's own history before any rollout.
        let succeeded = newest.map { Rollout.outcome(intent: $0, reports: reports(view), alive: Self.alive(view)) == .succeeded } ?? false
        let current = newest.map { succeeded ? $0.image : $0.previousImage } ?? status.serving?.image
        let before = newest.map { succeeded ? $0.previousImage : $0.olderImage } ?? status.previousImage
        let image: String
        let kind: RolloutIntent.Kind
        if let requested {
            image = requested.given
            kind = .deploy
        } else {
            guard let before else { throw Busy(description: "nothing to roll back to: the cluster has no previous image") }
            image = before
            kind = .rollback
        }
        let nodes = cluster.current.appMembers.map(\.id.name)
        let order = preferredOrder.filter(nodes.contains) + nodes.filter { !preferredOrder.contains($0) }.sorted()
        var new = RolloutIntent(
            id: NodeEngine.newID(), seq: (newest?.seq ?? 0) + 1, kind: kind, image: image, previousImage: current,
            order: order, requestedBy: requestedBy, settleMs: settle.milliseconds, nodeTimeoutMs: nodeTimeout.milliseconds)
        new.olderImage = before
        if parallel > 1 { new.parallel = parallel }
        if skipDown { new.skipDown = true }
        try await adopt(new)
        let (stream, continuation) = AsyncStream.makeStream(of: RolloutEvent.self)
        watchers[UUID()] = continuation
        // Accepted once every member that is alive has it (persisted) — so losing this node loses nothing.
        let deadline = clock.now() + .seconds(5)
        var holders = 0
        var alive = 0
        while true {
            let view = rolloutView().filter(\.alive)
            holders = view.filter { $0.intent?.id == new.id || $0.name == me }.count
            alive = view.count
            if holders == alive || clock.now() >= deadline { break }
            await changes.wait(atMost: deadline - clock.now(), clock: clock)
        }
        continuation.yield(.accepted(id: new.id, image: new.image, holders: holders, alive: alive))
        logger.info(
            "rollout accepted",
            metadata: [
                "deploy.id": "\(new.id)", "deploy.seq": "\(new.seq)", "deploy.image": "\(new.image)", "deploy.order": "\(new.order)",
                "deploy.replaces": "\(newest?.id ?? "-")",
            ])
        return stream
    }

    public func current() -> (intent: RolloutIntent?, report: RolloutReport?) { (intent, report) }

    /// This node serves an older version than the cluster's last finished rollout: keep it out of DNS until it
    /// has caught up.
    public func isBehind() async -> Bool {
        guard let intent, let report, report.intent == intent.id else { return false }
        guard report.phase == .waiting || report.phase == .swapping, await engine.servingImage() != intent.image else { return false }
        // Every other node of the rollout is done: the cluster has moved on without this one (it was down).
        let others = reports(rolloutView())
        return intent.order.filter { $0 != me }.allSatisfy { others[$0]?.intent == intent.id && others[$0]?.phase == .done }
    }

    // MARK: - Running

    public func run() async throws {
        await settleAfterRestart()
        let (results, continuation) = AsyncStream.makeStream(of: (image: String, phase: RolloutReport.Phase, record: DeployRecord?).self)
        swapResults = continuation
        let wakeup = Wakeup()
        // A new intent or a report arrives as a change of a member's state.
        cluster.watch(wakeup) { old, new in old.members != new.members }
        try await cancelWhenGracefulShutdown {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask {
                    for await result in results { await self.finished(result.image, result.phase, result.record) }
                }
                while !Task.isCancelled {
                    if let (image, phase) = await self.step() {
                        group.addTask { await self.runSwap(image: image, phase: phase) }
                    }
                    // A new intent arrives as a change of a member's state: no need to poll while none runs.
                    await wakeup.wait(atMost: await self.rolling ? .milliseconds(100) : .seconds(1), clock: self.clock)
                }
                continuation.finish()
            }
        }
    }

    /// After a crash mid-swap, what the engine serves tells how the swap ended.
    private func settleAfterRestart() async {
        guard let intent, let report, report.intent == intent.id else { return }
        let serving = await engine.servingImage()
        switch report.phase {
        case .swapping: setReport(serving == intent.image ? .done : .waiting)
        case .rollingBack: setReport(serving == intent.previousImage ? .rolledBack : .done)
        default: break
        }
        await publish()
    }

    /// One decision; returns a swap to start.
    private func step() async -> (String, RolloutReport.Phase)? {
        let view = rolloutView()
        let now = clock.now()
        // Adopt a newer intent heard from someone else.
        if let newer = newest(in: view), newer.isNewer(than: intent) {
            logger.info("rollout adopted", metadata: ["deploy.id": "\(newer.id)", "deploy.seq": "\(newer.seq)", "deploy.image": "\(newer.image)"])
            do { try await adopt(newer) } catch {
                logger.error("cannot persist the rollout; not taking part", metadata: ["error": "\(error)"])
                return nil
            }
        }
        guard let intent else { return nil }
        let reports = reports(view)
        for member in view {
            if reports[member.name]?.intent == intent.id, reports[member.name]?.phase == .done {
                if doneSince[member.name] == nil { doneSince[member.name] = now }
            } else {
                doneSince[member.name] = nil
            }
            if member.alive { downSince[member.name] = nil } else if downSince[member.name] == nil { downSince[member.name] = now }
        }
        notifyWatchers(intent: intent, reports: reports, alive: Self.alive(view))
        rolling = swapping || Rollout.outcome(intent: intent, reports: reports, alive: Self.alive(view)) == .running
        guard !swapping else { return nil }
        let decision = Rollout.decide(
            intent: intent, me: me, reports: reports, alive: Set(view.filter(\.alive).map(\.name)), now: now,
            doneSince: doneSince, downSince: downSince)
        switch decision {
        case .wait:
            return nil
        case .report(let phase, let reason):
            setReport(phase, reason: reason)
            await publish()
            return nil
        case .swap(let image, let phase):
            setReport(phase)
            await publish()
            swapping = true
            return (image, phase)
        }
    }

    private func runSwap(image: String, phase: RolloutReport.Phase) async {
        var record: DeployRecord?
        do {
            // The intent's image came over the network: it enters the domain here.
            let (_, events) = try await engine.submit(.deploy, image: try ImageReference(parsing: image))
            for await event in events {
                switch event {
                case .result(let finished): record = finished
                case .progress(let step) where step.status != .done:
                    broadcast(.node(me, phase: step.step.rawValue, reason: step.status == .started ? nil : step.detail))
                default: break
                }
            }
        } catch {
            record = nil
            logger.error("rollout swap could not start", metadata: ["error": "\(error)"])
        }
        swapResults?.yield((image, phase, record))
    }

    private func broadcast(_ event: RolloutEvent) { for w in watchers.values { w.yield(event) } }

    private func finished(_ image: String, _ phase: RolloutReport.Phase, _ record: DeployRecord?) async {
        swapping = false
        let ok = record?.result == .succeeded
        switch phase {
        case .swapping: setReport(ok ? .done : .failed, reason: ok ? nil : record?.reason ?? "the swap did not start")
        default: setReport(ok ? .rolledBack : .failed, reason: ok ? nil : "rollback failed: \(record?.reason ?? "?")")
        }
        await publish()
    }

    /// Takes an intent as this node's: persisted first, then announced.
    private func adopt(_ new: RolloutIntent) async throws {
        intent = new
        report = RolloutReport(intent: new.id, phase: .waiting)
        doneSince = [:]
        try persist()
        lastReports = [:]
        await publish()
    }

    private func setReport(_ phase: RolloutReport.Phase, reason: String? = nil) {
        guard let intent else { return }
        report = RolloutReport(intent: intent.id, phase: phase, reason: reason)
        try? persist()
    }

    private func persist() throws {
        try state.write(Persisted(intent: intent, report: report), to: .rollout)
    }

    /// Announces this node's rollout state (the mesh gossips it at once).
    private func publish() async {
        announcements.update {
            $0.rollout = intent
            $0.rolloutReport = report
        }
    }

    /// One app node's part in rollouts, as gossiped (this node's from its own state).
    struct RolloutMember: Sendable {
        var name: String
        var alive: Bool
        var intent: RolloutIntent?
        var report: RolloutReport?
    }

    private func rolloutView() -> [RolloutMember] {
        cluster.current.appMembers.map {
            RolloutMember(name: $0.id.name, alive: $0.status != .dead, intent: $0.app.rollout, report: $0.app.rolloutReport)
        }
    }

    private func reports(_ view: [RolloutMember]) -> [String: RolloutReport] {
        var out: [String: RolloutReport] = [:]
        for member in view { if let r = member.report { out[member.name] = r } }
        if let report { out[me] = report }
        return out
    }

    /// The newest intent this node knows: its own or one gossiped by a member.
    private func newest(in view: [RolloutMember]) -> RolloutIntent? {
        ([intent] + view.map(\.intent)).compactMap { $0 }.max { ($0.seq, $0.id) < ($1.seq, $1.id) }
    }

    static func alive(_ view: [RolloutMember]) -> Set<String> { Set(view.filter(\.alive).map(\.name)) }

    private func notifyWatchers(intent: RolloutIntent, reports: [String: RolloutReport], alive: Set<String>) {
        for (name, report) in reports where report.intent == intent.id && lastReports[name] != report {
            lastReports[name] = report
            broadcast(.node(name, phase: report.phase.rawValue, reason: report.reason))
        }
        let outcome = Rollout.outcome(intent: intent, reports: reports, alive: alive)
        guard outcome != .running, !watchers.isEmpty else { return }
        switch outcome {
        case .succeeded: broadcast(.finished(id: intent.id, image: intent.image, succeeded: true, reason: nil))
        case .failed(let node, let reason): broadcast(.finished(id: intent.id, image: intent.image, succeeded: false, reason: "\(node): \(reason)"))
        case .running: break
        }
        for w in watchers.values { w.finish() }
        watchers = [:]
    }
}

extension StateDirectory.File where Value == RolloutService.Persisted {
    static var rollout: Self { .init("rollout.json") }
}
