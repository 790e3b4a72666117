import PeerCore

/// The local blue/green swap of one node, as a pure state machine.
///
/// The machine does no I/O: every event goes in through ``handle(_:now:)`` with the current time and
/// comes out as ``Action``s for the shell to carry out, one at a time. Timers are actions too
/// (`probeHealth(after:)`), and what the shell saw comes back as the next event.
///
/// The order is the safety argument:
/// pull → start new → probe health until healthy (or deadline) → route the proxy to new → verify the proxy
/// serves new → drain old (until the proxy has nothing in flight to it, or timeout) → stop old.
/// The proxy is only ever routed to a container whose health passed, the old container is only stopped
/// after the proxy verifiably serves the new one and old in-flight requests drained, and every failure
/// ends with the proxy on the old container and the new one stopped.
public struct Swap: Sendable {
    /// The most bytes of a failed container's output kept as evidence (its end): a crash that printed a megabyte
    /// must not make a megabyte of state file, control answer or notification.
    public static let maximumEvidence = 8192

    public struct Settings: Sendable, Hashable {
        /// Time between health probes (≤ 100 ms keeps "ready" to "serving" short).
        public var healthInterval: Duration
        /// How long the new container may take to pass its health check, counted from its start.
        public var healthTimeout: Duration
        /// How long the proxy may take to serve the new container after a reload.
        public var verifyTimeout: Duration
        public var verifyInterval: Duration
        /// Upper bound on waiting for requests in flight to the old container.
        public var drainTimeout: Duration
        public var drainInterval: Duration
        /// SIGTERM → SIGKILL grace when stopping a container.
        public var stopGrace: Duration

        public init(
            healthInterval: Duration = .milliseconds(100), healthTimeout: Duration = .seconds(60),
            verifyTimeout: Duration = .seconds(5), verifyInterval: Duration = .milliseconds(20),
            drainTimeout: Duration = .seconds(30), drainInterval: Duration = .milliseconds(50),
            stopGrace: Duration = .seconds(10)
        ) {
            self.healthInterval = healthInterval
            self.healthTimeout = healthTimeout
            self.verifyTimeout = verifyTimeout
            self.verifyInterval = verifyInterval
            self.drainTimeout = drainTimeout
            self.drainInterval = drainInterval
            self.stopGrace = stopGrace
        }
    }

    public enum Step: String, Sendable, Hashable, Codable, CaseIterable {
        case pull, start, health, `switch`, verify, drain, stop, restore
    }

    public struct Progress: Sendable, Hashable, Codable {
        public enum Status: String, Sendable, Hashable, Codable { case started, done, failed, warning }
        public var step: Step
        public var status: Status
        /// Time spent in the step so far (0 when it starts).
        public var elapsed: Duration
        /// Time since the swap began.
        public var total: Duration
        public var detail: String

        public init(step: Step, status: Status, elapsed: Duration, total: Duration, detail: String) {
            self.step = step
            self.status = status
            self.elapsed = elapsed
            self.total = total
            self.detail = detail
        }
    }

    public struct Failure: Sendable, Hashable, Error {
        public var step: Step
        public var reason: String
        /// The last health observation or container output, for the operator.
        public var evidence: String

        public init(step: Step, reason: String, evidence: String = "") {
            self.step = step
            self.reason = reason
            self.evidence = evidence
        }
    }

    public enum Outcome: Sendable, Hashable {
        /// The new instance serves. `retired` is the old one, stopped; `warnings` lists what went wrong after the
        /// switch without endangering traffic (a drain that timed out, an old container that would not stop).
        case succeeded(new: AppInstance, retired: AppInstance?, warnings: [String])
        /// Nothing changed for traffic: the old instance (if any) still serves and the new one is gone.
        case failed(Failure, cleanupWarnings: [String])
    }

    public enum Action: Sendable, Hashable {
        case pull(image: String)
        case startContainer(image: String, generation: Int)
        case probeHealth(AppInstance, after: Duration)
        /// Write the proxy config for `to` (nil: serve nothing), validate it, reload.
        case routeProxy(to: AppInstance?)
        case verifyProxy(AppInstance, after: Duration)
        /// Ask how many proxy workers that may still hold requests to the old instance are alive.
        case checkDrain(after: Duration)
        case stopContainer(AppInstance, grace: Duration)
        /// Read the tail of a container's output (for the operator, before a failed container is removed).
        case readLogs(AppInstance)
        case report(Progress)
        case finished(Outcome)
    }

    public enum Event: Sendable, Hashable {
        case begin
        case pulled
        case pullFailed(String)
        case containerStarted(AppInstance)
        case containerFailed(String)
        case health(HealthObservation)
        case proxyRouted
        case proxyRouteFailed(String)
        case proxyVerified
        case proxyNotServing(String)
        case drainPending(Int)
        case drained
        case containerStopped
        case containerStopFailed(String)
        /// The tail of the container's output (empty when it could not be read).
        case logsRead(String)
    }

    private enum State: Sendable, Hashable {
        case ready
        case pulling
        case starting
        case checkingHealth(new: AppInstance, since: Instant, last: HealthObservation?)
        case routing(new: AppInstance)
        case verifying(new: AppInstance, since: Instant)
        case draining(new: AppInstance, since: Instant)
        case retiring(new: AppInstance)
        // Failure paths.
        case restoring(new: AppInstance, failure: Failure)
        case discarding(new: AppInstance, failure: Failure)
        case collectingLogs(new: AppInstance, failure: Failure)
        case finished
    }

    public let image: String
    public let generation: Int
    /// The instance serving when the swap began, if any.
    public let old: AppInstance?
    public let settings: Settings

    private var state: State = .ready
    private var began: Instant = .zero
    private var stepStarted: Instant = .zero
    private var warnings: [String] = []
    private var cleanupWarnings: [String] = []

    public init(image: String, generation: Int, old: AppInstance?, settings: Settings) {
        self.image = image
        self.generation = generation
        self.old = old
        self.settings = settings
    }

    public var isFinished: Bool { state == .finished }

    /// The new instance once it exists and until the swap ends (what a crash-restart must clean up or adopt).
    public var candidate: AppInstance? {
        switch state {
        case .checkingHealth(let new, _, _), .routing(let new), .verifying(let new, _), .draining(let new, _),
            .retiring(let new), .restoring(let new, _), .discarding(let new, _), .collectingLogs(let new, _):
            new
        case .ready, .pulling, .starting, .finished: nil
        }
    }

    public mutating func handle(_ event: Event, now: Instant) -> [Action] {
        var actions: [Action] = []
        switch (state, event) {
        case (.ready, .begin):
            began = now
            begin(.pull, "pulling \(image)", now: now, into: &actions)
            state = .pulling
            actions.append(.pull(image: image))

        case (.pulling, .pulled):
            end(.pull, "\(image) present", now: now, into: &actions)
            begin(.start, "starting generation \(generation)", now: now, into: &actions)
            state = .starting
            actions.append(.startContainer(image: image, generation: generation))

        case (.pulling, .pullFailed(let why)):
            fail(Failure(step: .pull, reason: "could not pull \(image): \(why)"), now: now, into: &actions)

        case (.starting, .containerStarted(let new)):
            end(.start, "\(new.containerName) listening on 127.0.0.1:\(new.hostPort)", now: now, into: &actions)
            begin(.health, "waiting for a 2xx health answer", now: now, into: &actions)
            state = .checkingHealth(new: new, since: now, last: nil)
            actions.append(.probeHealth(new, after: .zero))

        case (.starting, .containerFailed(let why)):
            fail(Failure(step: .start, reason: "could not start \(image): \(why)"), now: now, into: &actions)

        case (.checkingHealth(let new, let since, _), .health(let observation)):
            onHealth(observation, new: new, since: since, now: now, into: &actions)

        case (.routing(let new), .proxyRouted):
            end(.switch, "proxy routes to \(new.containerName)", now: now, into: &actions)
            begin(.verify, "checking the proxy serves generation \(new.generation)", now: now, into: &actions)
            state = .verifying(new: new, since: now)
            actions.append(.verifyProxy(new, after: .zero))

        case (.routing(let new), .proxyRouteFailed(let why)):
            // The proxy refused the new config and kept serving the old one: only the new container goes.
            let failure = Failure(step: .switch, reason: "proxy config rejected: \(why)")
            report(.switch, .failed, failure.reason, now: now, into: &actions)
            discard(new, failure, now: now, into: &actions)

        case (.verifying(let new, _), .proxyVerified):
            end(.verify, "proxy serves generation \(new.generation)", now: now, into: &actions)
            guard let old else {
                finish(.succeeded(new: new, retired: nil, warnings: warnings), into: &actions)
                break
            }
            begin(.drain, "draining \(old.containerName)", now: now, into: &actions)
            state = .draining(new: new, since: now)
            actions.append(.checkDrain(after: .zero))

        case (.verifying(let new, let since), .proxyNotServing(let why)):
            if now - since < settings.verifyTimeout {
                actions.append(.verifyProxy(new, after: settings.verifyInterval))
            } else {
                let failure = Failure(
                    step: .verify,
                    reason: "the proxy did not serve generation \(new.generation) within \(settings.verifyTimeout.compactDescription)",
                    evidence: why)
                report(.verify, .failed, failure.reason, now: now, into: &actions)
                begin(.restore, "routing the proxy back to \(old?.containerName ?? "nothing")", now: now, into: &actions)
                state = .restoring(new: new, failure: failure)
                actions.append(.routeProxy(to: old))
            }

        case (.draining(let new, _), .drained):
            end(.drain, "no requests left in flight to the old instance", now: now, into: &actions)
            retire(new, now: now, into: &actions)

        case (.draining(let new, let since), .drainPending(let workers)):
            if now - since < settings.drainTimeout {
                actions.append(.checkDrain(after: settings.drainInterval))
            } else {
                let warning =
                    "drain timed out after \(settings.drainTimeout.compactDescription) with \(workers) old proxy worker(s) still busy; stopping the old instance anyway"
                warnings.append(warning)
                report(.drain, .warning, warning, now: now, into: &actions)
                retire(new, now: now, into: &actions)
            }

        case (.retiring(let new), .containerStopped):
            end(.stop, "\(old?.containerName ?? "old instance") stopped and removed", now: now, into: &actions)
            finish(.succeeded(new: new, retired: old, warnings: warnings), into: &actions)

        case (.retiring(let new), .containerStopFailed(let why)):
            let warning = "could not stop \(old?.containerName ?? "the old instance"): \(why); it will be removed on the next start"
            warnings.append(warning)
            report(.stop, .warning, warning, now: now, into: &actions)
            finish(.succeeded(new: new, retired: old, warnings: warnings), into: &actions)

        case (.restoring(let new, let failure), .proxyRouted):
            end(.restore, "proxy routes to \(old?.containerName ?? "nothing") again", now: now, into: &actions)
            discard(new, failure, now: now, into: &actions)

        case (.restoring(let new, let failure), .proxyRouteFailed(let why)):
            let warning = "could not route the proxy back: \(why)"
            cleanupWarnings.append(warning)
            report(.restore, .failed, warning, now: now, into: &actions)
            discard(new, failure, now: now, into: &actions)

        case (.collectingLogs(let new, var failure), .logsRead(let logs)):
            if !logs.isEmpty { failure.evidence += "\ncontainer output (last lines):\n\(logs.tail(bytes: Self.maximumEvidence))" }
            discard(new, failure, now: now, into: &actions)

        case (.discarding(let new, let failure), .containerStopped):
            end(.stop, "\(new.containerName) removed; nothing changed for traffic", now: now, into: &actions)
            finishFailed(failure, into: &actions)

        case (.discarding(let new, let failure), .containerStopFailed(let why)):
            let warning = "could not remove \(new.containerName): \(why); it will be removed on the next start"
            cleanupWarnings.append(warning)
            report(.stop, .warning, warning, now: now, into: &actions)
            finishFailed(failure, into: &actions)

        default:
            // An event that does not belong to the current state (a late timer, a duplicate answer) changes nothing.
            break
        }
        return actions
    }

    // MARK: - Transitions

    private mutating func onHealth(
        _ observation: HealthObservation, new: AppInstance, since: Instant, now: Instant, into actions: inout [Action]
    ) {
        if observation.isHealthy {
            end(.health, "healthy: \(observation.summary)", now: now, into: &actions)
            begin(.switch, "routing the proxy to \(new.containerName)", now: now, into: &actions)
            state = .routing(new: new)
            actions.append(.routeProxy(to: new))
            return
        }
        if case .exited(_, let logs) = observation {
            let failure = Failure(
                step: .health, reason: "\(new.containerName) \(observation.summary) before it became healthy",
                evidence: logs.tail(bytes: Self.maximumEvidence))
            report(.health, .failed, failure.reason, now: now, into: &actions)
            discard(new, failure, now: now, into: &actions)
            return
        }
        if now - since < settings.healthTimeout {
            state = .checkingHealth(new: new, since: since, last: observation)
            actions.append(.probeHealth(new, after: settings.healthInterval))
            return
        }
        let failure = Failure(
            step: .health,
            reason: "\(new.containerName) did not become healthy within \(settings.healthTimeout.compactDescription)",
            evidence: "last health check: \(observation.summary)")
        report(.health, .failed, failure.reason, now: now, into: &actions)
        // The app's own output usually says why; read it before the container goes.
        state = .collectingLogs(new: new, failure: failure)
        actions.append(.readLogs(new))
    }

    private mutating func retire(_ new: AppInstance, now: Instant, into actions: inout [Action]) {
        guard let old else {
            finish(.succeeded(new: new, retired: nil, warnings: warnings), into: &actions)
            return
        }
        begin(.stop, "stopping \(old.containerName)", now: now, into: &actions)
        state = .retiring(new: new)
        actions.append(.stopContainer(old, grace: settings.stopGrace))
    }

    private mutating func discard(_ new: AppInstance, _ failure: Failure, now: Instant, into actions: inout [Action]) {
        state = .discarding(new: new, failure: failure)
        begin(.stop, "removing \(new.containerName)", now: now, into: &actions)
        actions.append(.stopContainer(new, grace: .zero))
    }

    private mutating func fail(_ failure: Failure, now: Instant, into actions: inout [Action]) {
        report(failure.step, .failed, failure.reason, now: now, into: &actions)
        finishFailed(failure, into: &actions)
    }

    private mutating func finishFailed(_ failure: Failure, into actions: inout [Action]) {
        finish(.failed(failure, cleanupWarnings: cleanupWarnings), into: &actions)
    }

    private mutating func finish(_ outcome: Outcome, into actions: inout [Action]) {
        state = .finished
        actions.append(.finished(outcome))
    }

    private mutating func begin(_ step: Step, _ detail: String, now: Instant, into actions: inout [Action]) {
        stepStarted = now
        actions.append(.report(Progress(step: step, status: .started, elapsed: .zero, total: now - began, detail: detail)))
    }

    private func end(_ step: Step, _ detail: String, now: Instant, into actions: inout [Action]) {
        report(step, .done, detail, now: now, into: &actions)
    }

    private func report(_ step: Step, _ status: Progress.Status, _ detail: String, now: Instant, into actions: inout [Action]) {
        actions.append(
            .report(Progress(step: step, status: status, elapsed: now - stepStarted, total: now - began, detail: detail)))
    }
}
