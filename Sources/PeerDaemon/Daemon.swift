import AsyncHTTPClient
import Cluster
import PeerConfiguration
import Control
import Docker
import Foundation
import Leadership
import Logging
import Membership
import Notify
import Nginx
import PKI
import PeerCore
import Prometheus
import ServiceLifecycle

/// `peerd`: loads the config, wires the adapters, runs the engine and the control API until SIGTERM.
///
/// The composition root. The service graph is a tree: the mesh publishes the ``ClusterState`` and reads this
/// node's ``Announcement``s; every other service reads the one and writes its part of the other. Nobody calls
/// into the mesh.
public enum Daemon {
    /// `metrics`: the registry swift-metrics was bootstrapped with (peerd's), served at `metrics.listen`.
    public static func run(config: PeerConfig, logger: Logger, metrics: PrometheusCollectorRegistry? = nil) async throws {
        let http = HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: .init(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(2))))
        do {
            try await run(config: config, http: http, logger: logger, metrics: metrics)
        } catch {
            try? await http.shutdown()
            throw error
        }
        try await http.shutdown()
    }

    private static func run(config: PeerConfig, http: HTTPClient, logger: Logger, metrics: PrometheusCollectorRegistry?) async throws {
        let clock = EventLoopClock()
        let docker = DockerClient(socketPath: config.dockerSocket, credentials: try registryCredentials(config), http: http, logger: logger)
        let nginx = NginxProxy(settings: config.nginxSettings, http: http, logger: logger)
        let engine = NodeEngine(config: config, runtime: docker, proxy: nginx, http: http, logger: logger)
        var services: [any Service] = []

        // What the mesh publishes and what this node's services announce, shared by all below.
        let me = MemberID(config.node.name)
        let cluster = Published(ClusterState.unstarted(me: me))
        let announcements = Published(Announcement())
        let leaseRequests = Published(LeaseRequests())
        let links = MemberLinks()
        let stats = MeshStats()

        let backends = try notifiers(config)
        let notices =
            config.mesh == nil || backends.isEmpty
            ? nil : NoticeDispatcher(backends: backends, http: http, logger: logger) { cluster.current.fence(now: clock.now()) != nil }

        // On a mesh, peerctl deploy rolls across the cluster (witnesses run no app and take no part).
        let rollouts =
            config.mesh == nil || config.isWitness
            ? nil
            : RolloutService(
                config: config, engine: engine, cluster: cluster, announcements: announcements, links: links, clock: clock, logger: logger)
        // Certificate revocations, on every node of a mesh: read before the mesh listens.
        let revocations = try config.mesh.map {
            try RevocationService(
                config: config, mesh: $0, cluster: cluster, announcements: announcements, links: links, clock: clock, logger: logger)
        }
        // The origin certificate (HTTPS at nginx), on every node that runs nginx.
        let origin =
            config.isWitness
            ? nil
            : OriginTLSService(
                config: config, nginx: nginx,
                mesh: revocations.map {
                    .init(cluster: cluster, announcements: announcements, links: links, ca: $0.ca, revocations: $0.list)
                }, notices: notices, clock: clock, logger: logger)
        let meshView = config.mesh.map {
            NodeControl.MeshView(cluster: cluster, leaseRequests: leaseRequests, stats: stats, profile: $0.profile, clock: clock)
        }
        let membership = meshView.map { MembershipChanges(mesh: $0, links: links, logger: logger) }
        let control = NodeControl(
            config: config, engine: engine, mesh: meshView, rollouts: rollouts, origin: origin, revoking: revocations, membership: membership)

        // Both there exactly when the config has a mesh: section.
        if let mesh = config.mesh, let revocations {
            let gateway = OperatorGateway(control: control, logger: logger)
            services.append(
                try MeshService(
                    config: config, mesh: mesh, clock: clock, cluster: cluster, revocations: revocations.list,
                    announcements: announcements, leaseRequests: leaseRequests,
                    links: links, stats: stats,
                    logger: logger, operatorHandler: { connection, name in await gateway.serve(connection, operator: name) }))
            services.append(revocations)
            if let membership { services.append(membership) }
            services.append(AppAnnouncer(engine: engine, rollouts: rollouts, announcements: announcements, clock: clock, logger: logger))
            if let notices {
                services.append(NoticeService(dispatcher: notices))
                services.append(LeaderNoticeService(cluster: cluster, dispatcher: notices, clock: clock))
            }
            if let dns = config.dns {
                services.append(
                    DNSService(
                        settings: dns, token: try resolve(dns.token, config, "dns.token"), http: http, cluster: cluster, lease: leaseRequests,
                        leaseSettings: .profile(mesh.profile), notices: notices,
                        clock: clock,
                        logger: logger))
            }
        }
        if let rollouts { services.append(rollouts) }
        if let origin { services.append(origin) }
        if let registry = metrics, let settings = config.metrics {
            services.append(
                MetricsService(
                    registry: registry, settings: settings, mesh: meshView.map { ($0.cluster, $0.stats) }, clock: clock, logger: logger))
        }
        let controlServer = try ControlServer.server(control, socketPath: config.controlSocket, logger: logger)
        logger.info(
            "peerd starting",
            metadata: ["peer.node": "\(config.node.name)", "peer.config": "\(config.path)", "peer.control": "\(config.controlSocket)"])
        // A service whose loop is cancelled by the graceful shutdown ends there: that is not a failure, and must not
        // cut the others short (the engine finishing a deploy). The group stops services in reverse order: the
        // engine last.
        let group = ServiceGroup(
            configuration: .init(
                services: (config.isWitness ? [] : [.init(service: engine)]) + [.init(service: controlServer)]
                    + services.map { .init(service: GracefulEnd(base: $0)) },
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
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
            out.append(
                Pushover(
                    endpoint: p.endpoint, token: try resolve(p.token, config, "notify.pushover.token"),
                    user: try resolve(p.user, config, "notify.pushover.user")))
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
