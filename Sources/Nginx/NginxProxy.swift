import AsyncHTTPClient
import Deployment
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PKI
import PeerCore
import PeerFiles

#if canImport(Glibc)
    import Glibc
#endif

/// The real front proxy: one nginx server block peer owns, switched by atomic rewrite → `nginx -t` → SIGHUP.
public actor NginxProxy: FrontProxy {
    public struct Settings: Sendable, Hashable {
        public var site: NginxSite
        /// The server block file peer owns (e.g. /etc/nginx/conf.d/peer-app.conf).
        public var sitePath: String
        public var binary: String
        /// Extra arguments for every nginx call (`-p PREFIX -c FILE` for a non-system nginx).
        public var arguments: [String]
        /// nginx's master pid file (`pid` in nginx.conf).
        public var pidFile: String

        public init(site: NginxSite, sitePath: String, binary: String = "nginx", arguments: [String] = [], pidFile: String = "/run/nginx.pid") {
            self.site = site
            self.sitePath = sitePath
            self.binary = binary
            self.arguments = arguments
            self.pidFile = pidFile
        }
    }

    public nonisolated let settings: Settings
    private let http: HTTPClient
    private let logger: Logger
    private var workersBeforeLastRoute: Set<Int32> = []
    /// The HTTPS listener as last rendered (set at start from the installed origin certificate, then by ``setTLS(_:)``).
    private var tls: NginxSite.TLS?
    /// What the last render routed to (nil before the first one: read back from the file).
    private var lastRouted: AppInstance??

    public init(settings: Settings, http: HTTPClient, logger: Logger = Logger(label: "peer.nginx")) {
        self.settings = settings
        self.http = http
        self.logger = logger
        self.tls = settings.site.tls
    }

    // MARK: - FrontProxy

    public func route(to instance: AppInstance?) async throws {
        try await render(routingTo: instance, tls: tls)
        lastRouted = .some(instance)
        logger.debug(
            "nginx reloaded",
            metadata: ["nginx.site": "\(settings.sitePath)", "deploy.generation": "\(instance?.generation ?? 0)"])
    }

    /// Writes the server block, has nginx test it and reloads; a rejected config is put back as it was.
    private func render(routingTo instance: AppInstance?, tls: NginxSite.TLS?) async throws {
        let master = try masterPID()
        if let include = settings.site.customInclude, !FileManager.default.fileExists(atPath: include) {
            // The user's file: created empty once so the include resolves, never written again.
            try AtomicFile.write(Data("# Your own directives for the peer-managed server block.\n".utf8), to: include, mode: 0o644)
        }
        let previous = FileManager.default.contents(atPath: settings.sitePath)
        var site = settings.site
        site.tls = tls
        let rendered = Data(site.render(routingTo: instance).utf8)
        try AtomicFile.write(rendered, to: settings.sitePath, mode: 0o644)
        let test = try await Command.run(settings.binary, settings.arguments + ["-t", "-q"])
        guard test.status == 0 else {
            try restore(previous)
            throw NginxError.configRejected(output: test.output.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        workersBeforeLastRoute = Self.workers(of: master)
        guard kill(master, SIGHUP) == 0 else {
            let reason = String(cString: strerror(errno))
            try restore(previous)
            throw NginxError.reloadFailed("signal to master \(master): \(reason)")
        }
    }

    /// Serves HTTPS with the certificate and key at `tls`'s paths (or stops serving it, for nil), keeping the
    /// route as it is: rewrite, `nginx -t`, reload, then check that the listener presents the certificate
    /// whose SHA-256 is `fingerprint`. On failure the previous server block is back in place and reloaded.
    public func setTLS(_ tls: NginxSite.TLS?, fingerprint: String?, serverName: String?) async throws {
        let instance: AppInstance?
        if let lastRouted {
            instance = lastRouted
        } else {
            instance = FileManager.default.contents(atPath: settings.sitePath).flatMap {
                NginxSite.parseInstance(String(decoding: $0, as: UTF8.self))
            }
        }
        let previousTLS = self.tls
        // Requests on old workers finish: the drain of a swap under way also waits for these.
        let draining = workersBeforeLastRoute.filter(Self.isAlive)
        try await render(routingTo: instance, tls: tls)
        workersBeforeLastRoute.formUnion(draining)
        self.tls = tls
        guard let tls, let fingerprint else { return }
        let (host, port) = tls.localEndpoint
        var seen = "nothing"
        for _ in 0..<30 {
            do {
                let presented = try await Self.presentedCertificate(host: host, port: port, serverName: serverName)
                if presented == fingerprint {
                    logger.info(
                        "nginx serves the origin certificate",
                        metadata: ["nginx.tls_listen": "\(tls.listen)", "tls.fingerprint": "\(fingerprint.prefix(16))"])
                    return
                }
                seen = "certificate \(presented.prefix(16))…"
            } catch {
                seen = "\(error)"
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        // Not serving what was installed: go back to what served before.
        try? await render(routingTo: instance, tls: previousTLS)
        self.tls = previousTLS
        throw NginxError.notServingCertificate(listen: tls.listen, expected: String(fingerprint.prefix(16)), seen: seen)
    }

    /// Takes `tls` as what the server block on disk already serves (after a restart: nothing to reload).
    public func adoptTLS(_ tls: NginxSite.TLS?) { self.tls = tls }

    /// The SHA-256 (hex) of the certificate a TLS listener presents.
    static func presentedCertificate(host: String, port: Int, serverName: String?) async throws -> String {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .none
        let context = try NIOSSLContext(configuration: configuration)
        let group = MultiThreadedEventLoopGroup.singleton
        let seen = group.any().makePromise(of: String.self)
        let connecting = ClientBootstrap(group: group)
            .connectTimeout(.seconds(2))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = try NIOSSLClientHandler(
                        context: context, serverHostname: serverName,
                        customVerificationCallback: { certificates, promise in
                            if let leaf = certificates.first, let der = try? leaf.toDERBytes() {
                                seen.succeed(OriginCertificate.fingerprint(der: der))
                            } else {
                                seen.fail(NginxError.notServingCertificate(listen: "\(host):\(port)", expected: "", seen: "no certificate"))
                            }
                            promise.succeed(.certificateVerified)
                        })
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .connect(host: host, port: port)
        let channel: any Channel
        do {
            channel = try await connecting.get()
        } catch {
            seen.fail(error)  // a promise must be completed before it goes away
            throw error
        }
        defer { channel.close(promise: nil) }
        let timeout = channel.eventLoop.scheduleTask(in: .seconds(2)) {
            seen.fail(NginxError.notServingCertificate(listen: "\(host):\(port)", expected: "", seen: "no TLS handshake within 2 s"))
        }
        defer { timeout.cancel() }
        return try await seen.futureResult.get()
    }

    public func verify(_ instance: AppInstance) async throws {
        let (host, port) = settings.site.localEndpoint
        var request = HTTPClientRequest(url: "http://\(host):\(port)\(NginxSite.verifyPath)")
        request.headers.add(name: "Host", value: settings.site.serverName.split(separator: " ").first.map(String.init) ?? "localhost")
        // A fresh connection each time: a kept-alive one could land on an old worker with the old config.
        request.headers.add(name: "Connection", value: "close")
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: .seconds(2))
        } catch {
            throw NginxError.notServing(expected: instance.generation, seen: "no answer on \(host):\(port) (\(error))")
        }
        _ = try? await response.body.collect(upTo: 1 << 16)
        let generation = response.headers.first(name: NginxSite.generationHeader)
        guard generation == String(instance.generation), (200..<300).contains(response.status.code) else {
            throw NginxError.notServing(
                expected: instance.generation,
                seen: "\(host):\(port)\(NginxSite.verifyPath) answered \(response.status.code) with generation \(generation ?? "none")")
        }
    }

    public func workersFromBeforeLastRoute() async -> Int {
        workersBeforeLastRoute = workersBeforeLastRoute.filter(Self.isAlive)
        return workersBeforeLastRoute.count
    }

    public func routed() async -> (generation: Int, hostPort: Int)? {
        guard let data = FileManager.default.contents(atPath: settings.sitePath) else { return nil }
        return NginxSite.parseRoute(String(decoding: data, as: UTF8.self))
    }

    /// Whether the nginx master named by the pid file runs.
    public func isRunning() -> Bool { (try? masterPID()) != nil }

    // MARK: - Processes

    private func masterPID() throws -> Int32 {
        guard let text = try? String(contentsOfFile: settings.pidFile, encoding: .utf8) else {
            throw NginxError.notRunning(pidFile: settings.pidFile, reason: "no pid file")
        }
        guard let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0 else {
            throw NginxError.notRunning(pidFile: settings.pidFile, reason: "pid file holds no pid")
        }
        guard Self.isAlive(pid) else {
            throw NginxError.notRunning(pidFile: settings.pidFile, reason: "no process \(pid)")
        }
        return pid
    }

    private func restore(_ previous: Data?) throws {
        if let previous {
            try AtomicFile.write(previous, to: settings.sitePath, mode: 0o644)
        } else {
            try? FileManager.default.removeItem(atPath: settings.sitePath)
        }
    }

    /// The worker processes (children) of an nginx master, from /proc.
    static func workers(of master: Int32) -> Set<Int32> {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var result: Set<Int32> = []
        for entry in entries {
            guard let pid = Int32(entry), let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { continue }
            // Fields after the parenthesised command: state ppid …
            guard let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, Int32(fields[1]) == master { result.insert(pid) }
        }
        return result
    }

    static func isAlive(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return false }
        let state = stat[stat.index(after: close)...].split(separator: " ").first
        return state != "Z" && state != "X"
    }
}
