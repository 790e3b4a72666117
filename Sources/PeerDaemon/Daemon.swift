import AsyncHTTPClient
import Docker
import Foundation
import Logging
import Membership
import NIOConcurrencyHelpers
import Notify
import Nginx
import PeerCore
import Prometheus
import ServiceLifecycle

/// `peerd`: loads the config, wires the adapters, runs the engine and the control API until SIGTERM.
public enum Daemon {
    /// `metrics`: the registry swift-metrics was bootstrapped with (peerd's), served at `metrics.listen`.
    public static func run(config: PeerConfig, logger: Logger, metrics: PrometheusCollectorRegistry? = nil) async throws {
        let http = HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: .init(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(2))))
        do {
            let docker = DockerClient(
                socketPath: config.dockerSocket, credentials: try registryCredentials(config), http: http, logger: logger)
            let nginx = NginxProxy(settings: config.nginxSettings, http: http, logger: logger)
            let engine = NodeEngine(config: config, runtime: docker, proxy: nginx, http: http, logger: logger)
            let dispatcher = NIOLockedValueBox<NoticeDispatcher?>(nil)
            let rolloutBox = NIOLockedValueBox<RolloutService?>(nil)
            let membership = try config.mesh.map { mesh in
                try MembershipService(
                    config: config, mesh: mesh, logger: logger,
                    onLeadership: { term in
                        guard let term, let notices = dispatcher.withLockedValue({ $0 }) else { return }
                        await notices.post(Notice(
                            kind: .leaderChanged, title: "\(config.node.name) leads the cluster",
                            body: "\(config.node.name) holds the leader lease (term \(term)): it now edits DNS and sends notifications.",
                            key: "leader/\(term)"))
                    },
                    onNotice: { notice in await dispatcher.withLockedValue({ $0 })?.post(notice) },
                    operatorHandler: { [gateway = OperatorGateway(socketPath: config.controlSocket, http: http, logger: logger)] connection, name in
                        await gateway.serve(connection, operator: name)
                    },
                    appCheck: {
                        let check = await engine.appCheck()
                        let deploys = await engine.deploys()
                        // Behind the cluster's version (back from a crash during a rollout): out of DNS until it caught up.
                        let behind = await rolloutBox.withLockedValue({ $0 })?.isBehind() ?? false
                        return AppStatus(
                            healthy: check.healthy && !behind, image: check.image,
                            runningDeploy: deploys.running.map { DeployMark(id: $0.id, kind: "deploy", image: $0.image, state: "running") },
                            lastDeploy: deploys.last.map { DeployMark(id: $0.id, kind: $0.kind, image: $0.image, state: $0.state, reason: $0.reason) })
                    })
            }
            var extra: [ServiceGroupConfiguration.ServiceConfiguration] = []
            if let membership {
                extra.append(.init(service: membership))
                let backends = try notifiers(config)
                if !backends.isEmpty {
                    let notices = NoticeDispatcher(backends: backends, http: http, logger: logger) { await membership.fence() != nil }
                    dispatcher.withLockedValue { $0 = notices }
                    extra.append(.init(service: NoticeService(dispatcher: notices)))
                }
                if let dns = config.dns {
                    extra.append(.init(service: DNSService(
                        settings: dns, token: try resolve(dns.token, config, "dns.token"), http: http, mesh: membership,
                        notices: dispatcher.withLockedValue { $0 }, logger: logger)))
                }
            }
            // On a mesh, peerctl deploy rolls across the cluster (witnesses run no app and take no part).
            var rollouts: RolloutService?
            if let membership, !config.isWitness {
                let service = RolloutService(config: config, engine: engine, mesh: membership, logger: logger)
                rollouts = service
                rolloutBox.withLockedValue { $0 = service }
                extra.append(.init(service: service))
            }
            // The origin certificate (HTTPS at nginx), on every node that runs nginx.
            var origin: OriginTLSService?
            if !config.isWitness {
                let service = OriginTLSService(
                    config: config, nginx: nginx, mesh: membership, notices: { notice in await dispatcher.withLockedValue({ $0 })?.post(notice) },
                    logger: logger)
                origin = service
                extra.append(.init(service: service))
            }
            if let registry = metrics, let settings = config.metrics {
                extra.append(.init(service: MetricsService(registry: registry, settings: settings, membership: membership, logger: logger)))
            }
            let control = try ControlServer.server(
                engine: engine, membership: membership, rollouts: rollouts, origin: origin, socketPath: config.controlSocket, logger: logger)
            logger.info(
                "peerd starting",
                metadata: ["peer.node": "\(config.node.name)", "peer.config": "\(config.path)", "peer.control": "\(config.controlSocket)"])
            // A service whose loop is cancelled by the graceful shutdown ends there: that is not a failure, and
            // must not cut the others short (the engine finishing a deploy).
            extra = extra.map { .init(service: GracefulEnd(base: $0.service)) }
            let group = ServiceGroup(
                configuration: .init(
                    services: (config.isWitness ? [] : [.init(service: engine)]) + [.init(service: control)] + extra,
                    gracefulShutdownSignals: [.sigterm, .sigint],
                    logger: logger))
            try await group.run()
        } catch {
            try? await http.shutdown()
            throw error
        }
        try await http.shutdown()
    }

    /// A secret's value. Never logged.
    static func resolve(_ secret: PeerConfig.Secret, _ config: PeerConfig, _ key: String) throws -> String {
        switch secret {
        case .inline(let value): return value
        case .environment(let name): return ProcessInfo.processInfo.environment[name] ?? ""
        case .file(let path):
            guard let data = FileManager.default.contents(atPath: path) else {
                throw StartupError(description: "\(config.path): \(key)_file \(path) cannot be read")
            }
            return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    static func notifiers(_ config: PeerConfig) throws -> [any Notifier] {
        guard let n = config.notify else { return [] }
        var out: [any Notifier] = []
        if let ntfy = n.ntfy {
            out.append(Ntfy(server: ntfy.server, topic: ntfy.topic, token: try ntfy.token.map { try resolve($0, config, "notify.ntfy.token") }))
        }
        if let p = n.pushover {
            out.append(Pushover(endpoint: p.endpoint, token: try resolve(p.token, config, "notify.pushover.token"), user: try resolve(p.user, config, "notify.pushover.user")))
        }
        if let slack = n.slack { out.append(SlackWebhook(url: try resolve(slack, config, "notify.slack.url"))) }
        if let discord = n.discord { out.append(DiscordWebhook(url: try resolve(discord, config, "notify.discord.url"))) }
        return out
    }

    /// Resolves registry secrets from the config, the environment or files. Secrets are never logged.
    public static func registryCredentials(_ config: PeerConfig) throws -> [RegistryCredential] {
        try config.registries.map { registry in
            RegistryCredential(
                server: registry.server, username: registry.username,
                password: try resolve(registry.password, config, "registries.password"))
        }
    }
}

/// Runs a service and treats a `CancellationError` it throws once the graceful shutdown has begun as its end.
struct GracefulEnd: Service {
    let base: any Service

    func run() async throws {
        do {
            try await base.run()
        } catch is CancellationError where Task.isShuttingDownGracefully || Task.isCancelled {
            return
        }
    }
}

/// Runs the notice dispatcher as a service of the group.
struct NoticeService: Service {
    let dispatcher: NoticeDispatcher

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await dispatcher.run()
        }
    }
}
