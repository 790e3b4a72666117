import Control
import PeerConfiguration
import AsyncHTTPClient
import Deployment
import Docker
import Foundation
import Logging
import Nginx
import PeerCore
import ServiceLifecycle

/// The node's deploy engine: adopts what runs at start, then runs deploys and rollbacks one at a time.
///
/// It owns the node state; each swap is driven by the pure ``Swap`` machine through ``runSwap``.
public actor NodeEngine: Service {
    public nonisolated let config: PeerConfig
    let runtime: any ContainerRuntime
    let proxy: any FrontProxy
    let health: HealthProbe
    let store: StateDirectory
    let clock: any PeerClock
    let logger: Logger
    let startedAt = Date()

    var state = NodeState()
    /// Set while adoption has not succeeded; deploys are refused with this reason.
    private(set) var startingReason: String? = "peerd is starting"
    private var active: NodeState.InProgress?
    /// Accepted jobs not yet started (at most one: a second deploy is refused while one is active).
    private var queued: [Job] = []
    private var shuttingDown = false
    private let wakeups: AsyncStream<Void>
    private let wake: AsyncStream<Void>.Continuation

    struct Job: Sendable {
        var id: String
        var kind: DeployRecord.Kind
        var image: String
        var events: AsyncStream<DeployEvent>.Continuation?
    }

    /// Refusal of a second deploy while one runs.
    public struct Busy: Error, CustomStringConvertible {
        public var running: NodeState.InProgress
        public var description: String {
            "deploy \(running.id) of \(running.image) is running (started \(running.startedAt.iso8601)); wait for it to finish"
        }
    }

    public struct Refused: Error, CustomStringConvertible {
        public var description: String
    }

    public init(
        config: PeerConfig, runtime: any ContainerRuntime, proxy: any FrontProxy, http: HTTPClient,
        clock: any PeerClock = EventLoopClock(), logger: Logger
    ) {
        self.config = config
        self.runtime = runtime
        self.proxy = proxy
        self.health = HealthProbe(http: http, runtime: runtime, path: config.app.health.path, requestTimeout: config.app.health.requestTimeout)
        self.store = StateDirectory(config.stateDirectory)
        self.clock = clock
        self.logger = logger
        (wakeups, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// peer's labels for this node's app: every container of peer's here carries all of them.
    var scopeLabels: [String: String] {
        [PeerLabels.managed: "true", PeerLabels.node: config.node.name, PeerLabels.app: config.app.name]
    }

    // MARK: - Service

    public func run() async throws {
        state = try store.read(.node) ?? NodeState()
        await adoptUntilDone()
        for await _ in wakeups.cancelOnGracefulShutdown() {
            while !queued.isEmpty {
                await execute(queued.removeFirst())
            }
        }
        // Shutting down: a deploy that was running has finished above. Nothing new starts, and whoever waits
        // for a queued job hears why it will not run (with no await in between, nothing can slip in).
        shuttingDown = true
        for job in queued {
            job.events?.yield(.result(refusedRecord(job, reason: "peerd shut down before this \(job.kind.rawValue) started; nothing changed")))
            job.events?.finish()
        }
        queued = []
        active = nil
    }

    /// Adopts what runs, retrying while dockerd cannot be reached (deploys are refused meanwhile).
    private func adoptUntilDone() async {
        var delay = Duration.milliseconds(500)
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await adopt()
                startingReason = nil
                return
            } catch {
                startingReason = "peerd cannot adopt running containers yet: \(error)"
                logger.error("adoption failed; retrying", metadata: ["error": "\(error)", "retry.in": "\(delay)"])
                try? await clock.sleep(for: delay)
                delay = min(delay * 2, .seconds(10))
            }
        }
    }

    func adopt() async throws {
        let containers = try await runtime.managedContainers(labels: scopeLabels)
        let routed = await proxy.routed()
        let plan = AdoptionPlan.plan(
            containers: containers, routed: routed, recordedCurrent: state.current, nextGeneration: state.nextGeneration)
        for note in plan.notes { logger.info("\(note)", metadata: ["peer.node": "\(config.node.name)"]) }
        if plan.reroute {
            try await proxy.route(to: plan.serving)
        }
        for container in plan.remove {
            do {
                try await runtime.stopAndRemove(container.id, grace: config.app.stopGrace)
            } catch {
                logger.warning("could not remove leftover container", metadata: ["container.name": "\(container.name)", "error": "\(error)"])
            }
        }
        if let interrupted = state.inProgress {
            let adopted = plan.serving?.generation == interrupted.generation
            state.history.append(
                DeployRecord(
                    id: interrupted.id, kind: .deploy, image: interrupted.image, previousImage: state.current?.image,
                    generation: interrupted.generation, result: adopted ? .succeeded : .interrupted,
                    reason: adopted
                        ? nil : "peerd stopped during the swap; the half-started container was removed and the previous version kept serving",
                    evidence: nil, warnings: adopted ? ["peerd restarted after the switch; the new instance was adopted"] : [],
                    startedAt: interrupted.startedAt, servingAfterMs: nil,
                    durationMs: Int64(Date().timeIntervalSince(interrupted.startedAt) * 1000), steps: []))
            if adopted, state.current?.generation != interrupted.generation {
                state.previousImage = state.current?.image
            }
            state.inProgress = nil
        }
        let desired = state.current?.image ?? config.app.image
        state.current = plan.serving
        state.nextGeneration = plan.nextGeneration
        try store.write(state, to: .node)
        if plan.serving == nil, let desired {
            logger.info("nothing of peer's runs; deploying the desired image", metadata: ["deploy.image": "\(desired)"])
            let job = Job(id: Self.newID(), kind: .restore, image: desired, events: nil)
            // Marked active like any deploy, so a `peerctl deploy` meanwhile is refused by name, not queued.
            active = NodeState.InProgress(id: job.id, image: desired, generation: state.nextGeneration, startedAt: Date())
            startingReason = nil
            await execute(job)
        }
    }

    // MARK: - Requests

    /// Queues a deploy (or a rollback) and returns its event stream. Refuses while another runs.
    public func submit(_ kind: DeployRecord.Kind, image requested: ImageReference?) throws -> (id: String, events: AsyncStream<DeployEvent>) {
        if shuttingDown { throw Refused(description: "peerd is shutting down; deploy again once it is back") }
        if config.isWitness {
            throw Refused(description: "\(config.node.name) is a witness (mesh.members role: witness): it votes for the leader and runs no app")
        }
        if let startingReason { throw Refused(description: startingReason) }
        if let active { throw Busy(running: active) }
        let image: String
        switch (kind, requested) {
        case (_, let requested?):
            image = requested.given
        case (.rollback, nil):
            guard let previous = state.previousImage else {
                throw Refused(description: "nothing to roll back to: this node has no previous image recorded yet")
            }
            image = previous
        default:
            throw Refused(description: "no image given")
        }
        let id = Self.newID()
        active = NodeState.InProgress(id: id, image: image, generation: state.nextGeneration, startedAt: Date())
        let (events, continuation) = AsyncStream.makeStream(of: DeployEvent.self, bufferingPolicy: .unbounded)
        continuation.yield(.accepted(id: id, image: image))
        queued.append(Job(id: id, kind: kind, image: image, events: continuation))
        wake.yield()
        return (id, events)
    }

    public func history() -> [DeployRecord] { state.history }

    /// The image this node serves (cheap: no calls to dockerd or nginx).
    public func servingImage() -> String? { state.current?.image }

    /// The running deploy and the last finished one: (id, kind, image, state, reason).
    public func deploys() -> (running: (id: String, image: String)?, last: (id: String, kind: String, image: String, state: String, reason: String?)?)
    {
        let last = state.history.last { $0.kind != .restore }.map { ($0.id, $0.kind.rawValue, $0.image, $0.result.rawValue, $0.reason) }
        return (active.map { ($0.id, $0.image) }, last)
    }

    /// What this node serves and whether it answers its health check right now (for the membership gossip).
    public func appCheck() async -> (image: String?, healthy: Bool) {
        guard let current = state.current else { return (nil, false) }
        if case .healthy = await health.probe(current) { return (current.image, true) }
        return (current.image, false)
    }

    /// What this node serves and how its parts are, for `peerctl status` (asks dockerd and nginx).
    public struct Status: Sendable {
        public var serving: AppInstance?
        public var servingSince: Date?
        public var previousImage: String?
        public var deploying: NodeState.InProgress?
        public var lastDeploy: DeployRecord?
        /// Why this node takes no deploy yet (nil once it does; always nil on a witness).
        public var starting: String?
        public var nginxRunning: Bool
        public var routedGeneration: Int?
        /// dockerd's API version, or why it could not be asked.
        public var docker: Result<String, Failure>
        public var startedAt: Date
        public var rssBytes: Int

        public struct Failure: Error { public var description: String }
    }

    public func status() async -> Status {
        let servingSince = state.history.last { $0.result == .succeeded && $0.generation == state.current?.generation }?.startedAt
        var docker = Result<String, Status.Failure>.failure(.init(description: "not a Docker runtime"))
        if let client = runtime as? DockerClient {
            do {
                docker = .success("\(try await client.ping())")
            } catch {
                docker = .failure(.init(description: "\(error)"))
            }
        }
        let routed = await proxy.routed()
        let nginxRunning = await (proxy as? NginxProxy)?.isRunning() ?? true
        return Status(
            serving: state.current, servingSince: servingSince, previousImage: state.previousImage, deploying: active,
            lastDeploy: state.history.last, starting: config.isWitness ? nil : startingReason, nginxRunning: nginxRunning,
            routedGeneration: routed?.generation, docker: docker, startedAt: startedAt, rssBytes: Self.residentBytes())
    }

    // MARK: - Execution

    private func execute(_ job: Job) async {
        let record = await deploy(job)
        PeerMetrics.finished(record)
        job.events?.yield(.result(record))
        job.events?.finish()
        active = nil
    }

    private func refusedRecord(_ job: Job, reason: String) -> DeployRecord {
        DeployRecord(
            id: job.id, kind: job.kind, image: job.image, previousImage: state.current?.image, generation: 0, result: .failed,
            reason: reason, evidence: nil, warnings: [], startedAt: Date(), servingAfterMs: nil, durationMs: 0, steps: [])
    }

    static func newID() -> String {
        let alphabet = Array("0123456789abcdefghjkmnpqrstvwxyz")
        var generator = SystemRandomNumberGenerator()
        return String((0..<8).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] })
    }

    static func residentBytes() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }
        let kb = line?.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        return kb * 1024
    }
}
