import PeerConfiguration
import Deployment
import Foundation
import Logging
import PeerCore

extension NodeEngine {
    /// Runs one swap to its end and records it. Never throws: every failure becomes a failed record, and
    /// the instance that served before keeps serving.
    func deploy(_ job: Job) async -> DeployRecord {
        let startedAt = Date()
        let begin = clock.now()
        let generation = state.nextGeneration
        var record = DeployRecord(
            id: job.id, kind: job.kind, image: job.image, previousImage: state.current?.image, generation: generation,
            result: .failed, reason: nil, evidence: nil, warnings: [], startedAt: startedAt, servingAfterMs: nil,
            durationMs: 0, steps: [])
        var log = logger
        log[metadataKey: "deploy.id"] = "\(job.id)"
        log[metadataKey: "deploy.image"] = "\(job.image)"
        log[metadataKey: "deploy.generation"] = "\(generation)"
        log.info("\(job.kind.rawValue) started")

        let spec: ContainerSpec
        do {
            spec = try containerSpec(image: job.image, generation: generation)
            // Record the swap before anything starts: a crash from here on is cleaned up at the next start.
            state.nextGeneration = generation + 1
            state.inProgress = NodeState.InProgress(id: job.id, image: job.image, generation: generation, startedAt: startedAt)
            try store.write(state, to: .node)
        } catch {
            state.inProgress = nil
            record.reason = "\(error)"
            record.durationMs = (clock.now() - begin).milliseconds
            log.error("\(job.kind.rawValue) refused before it started", metadata: ["error": "\(error)"])
            remember(record)
            return record
        }

        var swap = Swap(image: job.image, generation: generation, old: state.current, settings: config.swapSettings)
        let outcome = await runSwap(&swap, spec: spec) { progress in
            job.events?.yield(.progress(progress))
            if progress.status == .done || progress.status == .failed || progress.status == .warning {
                record.steps.append(.init(step: progress.step.rawValue, ms: progress.elapsed.milliseconds, status: progress.status.rawValue))
            }
            if progress.step == .verify && progress.status == .done {
                record.servingAfterMs = progress.total.milliseconds
            }
            log.info(
                "\(progress.step.rawValue) \(progress.status.rawValue): \(progress.detail)",
                metadata: ["deploy.step.ms": "\(progress.elapsed.milliseconds)"])
        }

        state.inProgress = nil
        switch outcome {
        case .succeeded(let new, _, let warnings):
            if state.current?.image != new.image || job.kind == .rollback { state.previousImage = state.current?.image ?? state.previousImage }
            state.current = new
            record.result = .succeeded
            record.warnings = warnings
        case .failed(let failure, let cleanupWarnings):
            record.reason = failure.reason
            record.evidence = failure.evidence.isEmpty ? nil : failure.evidence
            record.warnings = cleanupWarnings
        }
        record.durationMs = (clock.now() - begin).milliseconds
        log.log(
            level: record.result == .succeeded ? .info : .error, "\(job.kind.rawValue) \(record.result.rawValue)",
            metadata: record.reason.map { ["reason": "\($0)"] } ?? [:])
        remember(record)
        return record
    }

    private func remember(_ record: DeployRecord) {
        state.history.append(record)
        if state.history.count > NodeState.historyLimit { state.history.removeFirst(state.history.count - NodeState.historyLimit) }
        do {
            try store.write(state, to: .node)
        } catch {
            // The swap already happened (or nothing changed); what runs stays as it is. The next start adopts it.
            logger.error("could not persist node state", metadata: ["error": "\(error)"])
        }
    }

    /// The shell of the ``Swap`` machine: carries out each action and feeds back what it saw.
    func runSwap(_ swap: inout Swap, spec: ContainerSpec, progress: (Swap.Progress) -> Void) async -> Swap.Outcome {
        var pending = swap.handle(.begin, now: clock.now())
        while !pending.isEmpty {
            let action = pending.removeFirst()
            let event: Swap.Event
            switch action {
            case .report(let line):
                progress(line)
                continue
            case .finished(let outcome):
                return outcome
            case .pull(let image):
                do {
                    try await runtime.pull(image)
                    event = .pulled
                } catch {
                    event = .pullFailed("\(error)")
                }
            case .startContainer:
                do {
                    event = .containerStarted(try await runtime.start(spec))
                } catch {
                    event = .containerFailed("\(error)")
                }
            case .probeHealth(let instance, let delay):
                try? await clock.sleep(for: delay)
                event = .health(await health.probe(instance))
            case .routeProxy(let target):
                do {
                    try await proxy.route(to: target)
                    event = .proxyRouted
                } catch {
                    event = .proxyRouteFailed("\(error)")
                }
            case .verifyProxy(let instance, let delay):
                try? await clock.sleep(for: delay)
                do {
                    try await proxy.verify(instance)
                    event = .proxyVerified
                } catch {
                    event = .proxyNotServing("\(error)")
                }
            case .checkDrain(let delay):
                try? await clock.sleep(for: delay)
                let workers = await proxy.workersFromBeforeLastRoute()
                event = workers == 0 ? .drained : .drainPending(workers)
            case .readLogs(let instance):
                event = .logsRead((try? await runtime.logsTail(of: instance.containerID, lines: 20)) ?? "")
            case .stopContainer(let instance, let grace):
                do {
                    try await runtime.stopAndRemove(instance.containerID, grace: grace)
                    event = .containerStopped
                } catch {
                    event = .containerStopFailed("\(error)")
                }
            }
            pending += swap.handle(event, now: clock.now())
        }
        // The machine always ends with `.finished`; reaching here would be a bug in it.
        return .failed(Swap.Failure(step: .pull, reason: "internal error: the swap ended without an outcome"), cleanupWarnings: [])
    }

    /// The container for a generation: loopback port, peer's labels, the configured env, volumes and restart policy.
    func containerSpec(image: String, generation: Int) throws -> ContainerSpec {
        var env = config.app.env.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        if let envFile = config.app.envFile {
            env += try EnvFile.read(envFile)
        }
        var labels = config.app.labels
        for (key, value) in scopeLabels { labels[key] = value }
        labels[PeerLabels.generation] = String(generation)
        labels[PeerLabels.image] = image
        return ContainerSpec(
            name: "peer-\(config.node.name)-\(config.app.name)-\(generation)", image: image, generation: generation,
            containerPort: config.app.port, env: env, labels: labels, volumes: config.app.volumes,
            restartPolicy: config.app.restart, stopGrace: config.app.stopGrace)
    }
}
