import ArgumentParser
import Foundation
import Logging
import Control
import PeerConfiguration
import PeerDaemon

@main
struct Peerd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peerd",
        abstract: "The peer daemon: zero-downtime blue/green deploys of one app behind nginx on this node.",
        version: ControlAPI.version)

    @Option(name: .long, help: "The node's config file.")
    var config: String = PeerConfig.defaultPath

    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = ProcessInfo.processInfo.environment["PEER_LOG_LEVEL"] ?? "info"

    @Option(name: .long, help: "text, or json (one object per line, for journald/Loki).")
    var logFormat: String = ProcessInfo.processInfo.environment["PEER_LOG_FORMAT"] ?? "text"

    func validate() throws {
        guard ["text", "json"].contains(logFormat) else {
            throw ValidationError("--log-format \(logFormat) is not text or json")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level \(logLevel) is not one of trace, debug, info, notice, warning, error, critical")
        }
    }

    func run() async throws {
        // Everything peerd creates is private unless it sets a mode itself (the nginx site: 0644): the control
        // socket is root-only from the moment it is bound, state and secrets are never readable by others.
        umask(0o077)
        let onEventLoops = EventLoopExecutor.install()
        let level = Logger.Level(rawValue: logLevel) ?? .info
        let json = logFormat == "json"
        LoggingSystem.bootstrap { label in
            if json { return JSONLogHandler(label: label, level: level) }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "peerd")
        logger.debug("Swift concurrency on NIO's event loops", metadata: ["installed": "\(onEventLoops)"])
        let loaded: PeerConfig
        do {
            loaded = try PeerConfig.load(path: config)
        } catch {
            FileHandle.standardError.write(Data("peerd: config error: \(error)\n".utf8))
            throw ExitCode(78)  // EX_CONFIG: systemd does not restart-loop on a config that cannot work
        }
        let releasing = ResidentPages.releasePeriodically(logger: logger)
        defer { releasing.cancel() }
        do {
            try await Daemon.run(config: loaded, logger: logger, metrics: loaded.metrics == nil ? nil : PeerMetrics.bootstrap())
        } catch {
            FileHandle.standardError.write(Data("peerd: \(error)\n".utf8))
            throw ExitCode.failure
        }
    }
}
