import AsyncHTTPClient
import Docker
import Foundation
import Logging
import Membership
import Nginx
import PeerCore
import ServiceLifecycle

/// `peerd`: loads the config, wires the adapters, runs the engine and the control API until SIGTERM.
public enum Daemon {
    public static func run(config: PeerConfig, logger: Logger) async throws {
        let http = HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: .init(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(2))))
        do {
            let docker = DockerClient(
                socketPath: config.dockerSocket, credentials: try registryCredentials(config), http: http, logger: logger)
            let nginx = NginxProxy(settings: config.nginxSettings, http: http, logger: logger)
            let engine = NodeEngine(config: config, runtime: docker, proxy: nginx, http: http, logger: logger)
            let membership = try config.mesh.map { mesh in
                try MembershipService(config: config, mesh: mesh, logger: logger) {
                    let check = await engine.appCheck()
                    return AppStatus(healthy: check.healthy, image: check.image)
                }
            }
            let control = try ControlServer.application(
                engine: engine, membership: membership, socketPath: config.controlSocket, logger: logger)
            logger.info(
                "peerd starting",
                metadata: ["peer.node": "\(config.node.name)", "peer.config": "\(config.path)", "peer.control": "\(config.controlSocket)"])
            let group = ServiceGroup(
                configuration: .init(
                    services: [.init(service: engine), .init(service: control)] + (membership.map { [.init(service: $0)] } ?? []),
                    gracefulShutdownSignals: [.sigterm, .sigint],
                    logger: logger))
            try await group.run()
        } catch {
            try? await http.shutdown()
            throw error
        }
        try await http.shutdown()
    }

    /// Resolves registry secrets from the config, the environment or files. Secrets are never logged.
    public static func registryCredentials(_ config: PeerConfig) throws -> [RegistryCredential] {
        try config.registries.map { registry in
            let password: String
            switch registry.password {
            case .inline(let value): password = value
            case .environment(let name): password = ProcessInfo.processInfo.environment[name] ?? ""
            case .file(let path):
                guard let data = FileManager.default.contents(atPath: path) else {
                    throw StartupError(description: "\(config.path): registries: password_file \(path) cannot be read")
                }
                password = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            }
            return RegistryCredential(server: registry.server, username: registry.username, password: password)
        }
    }
}
