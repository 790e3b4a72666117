import Deployment
import Foundation
import Logging
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import PeerFiles
import PKI

/// The control API on a root-only unix socket: what `peerctl` talks to.
///
///     GET  /v1/status     this node's status (JSON)
///     GET  /v1/deploys    deploy history, oldest first (JSON)
///     GET  /v1/members    the cluster's members as this node sees them (JSON)
///     GET  /v1/who        the leader, its term and lease, the voters (JSON)
///     POST /v1/deploy     {"image": "…"} → NDJSON stream: accepted, progress…, result
///     POST /v1/rollback   → the same stream, swapping back to the previous image
///     POST /v1/tls        {"certificatePEM": "…", "keyPEM": "…"} → the installed origin certificate (JSON)
enum ControlServer {
    static func server(
        engine: NodeEngine, membership: MembershipService?, rollouts: RolloutService?, origin: OriginTLSService?, socketPath: String,
        logger: Logger
    ) throws -> HTTPServer {
        try prepareSocket(socketPath)
        var serverLogger = logger
        serverLogger[metadataKey: "peer.component"] = "control"
        return HTTPServer(
            address: .unix(path: socketPath), maxBodyBytes: 1 << 20,
            // Root-only: whoever can talk to this socket can deploy.
            onBound: { chmod(socketPath, 0o600) },
            logger: serverLogger
        ) { request in
            do {
                return try await route(request, engine: engine, membership: membership, rollouts: rollouts, origin: origin)
            } catch {
                return (try? json(ControlAPI.ErrorBody(error: "\(error)"), status: .internalServerError))
                    ?? HTTPServer.Response(status: .internalServerError, contentType: "text/plain", body: .bytes(Array("\(error)\n".utf8)))
            }
        }
    }

    private static func route(
        _ request: HTTPServer.Request, engine: NodeEngine, membership: MembershipService?, rollouts: RolloutService?, origin: OriginTLSService?
    ) async throws -> HTTPServer.Response {
        switch (request.method, request.path) {
        case (.GET, "/v1/status"):
            var status = await engine.status()
            status.originCertificate = await origin?.current()
            return try json(status)
        case (.POST, "/v1/tls"):
            guard let origin else {
                return try json(ControlAPI.ErrorBody(error: "this node is a witness: it runs no nginx; send the certificate to an app node"), status: .notFound)
            }
            guard let tls = try? ControlAPI.decoder.decode(ControlAPI.TLSRequest.self, from: Data(buffer: request.body)) else {
                return try json(ControlAPI.ErrorBody(error: "expected a JSON body {\"certificatePEM\": \"…\", \"keyPEM\": \"…\"}"), status: .badRequest)
            }
            do {
                let installed = try await origin.set(
                    OriginPair(certificatePEM: tls.certificatePEM, keyPEM: tls.keyPEM), requestedBy: tls.requestedBy ?? "peerctl on \(engine.config.node.name)")
                return try json(installed)
            } catch let refused as OriginTLSService.Refused {
                return try json(ControlAPI.ErrorBody(error: refused.description), status: .badRequest)
            }
        case (.GET, "/v1/deploys"):
            return try json(await engine.history())
        case (.GET, "/v1/members"):
            guard let membership else {
                return try json(
                    ControlAPI.ErrorBody(error: "this node has no mesh: section in its config, so it has no members; see docs/configuration.md"),
                    status: .notFound)
            }
            return try json(await membership.members())
        case (.GET, "/v1/who"):
            guard let membership else {
                return try json(
                    ControlAPI.ErrorBody(error: "this node has no mesh: section in its config, so there is no leader; see docs/configuration.md"),
                    status: .notFound)
            }
            return try json(await membership.who())
        case (.POST, "/v1/deploy"):
            guard request.body.readableBytes <= 64 * 1024,
                let deploy = try? ControlAPI.decoder.decode(ControlAPI.DeployRequest.self, from: Data(buffer: request.body))
            else {
                return try json(ControlAPI.ErrorBody(error: "expected a JSON body {\"image\": \"…\"}"), status: .badRequest)
            }
            if let rollouts { return try await roll(rollouts, image: deploy.image, requestedBy: deploy.requestedBy ?? "peerctl on \(engine.config.node.name)") }
            return try await submit(engine, .deploy, image: deploy.image)
        case (.POST, "/v1/rollback"):
            if let rollouts {
                let by = request.headers.first(name: "X-Peer-Requested-By") ?? "peerctl on \(engine.config.node.name)"
                return try await roll(rollouts, image: nil, requestedBy: by)
            }
            return try await submit(engine, .rollback, image: nil)
        case (_, "/v1/status"), (_, "/v1/tls"), (_, "/v1/deploys"), (_, "/v1/members"), (_, "/v1/who"), (_, "/v1/deploy"), (_, "/v1/rollback"):
            return try json(ControlAPI.ErrorBody(error: "\(request.method) is not allowed on \(request.path)"), status: .methodNotAllowed)
        default:
            return try json(ControlAPI.ErrorBody(error: "no such endpoint: \(request.path)"), status: .notFound)
        }
    }

    /// A cluster rollout: the same NDJSON stream, with `node` lines and a `rollout` result.
    private static func roll(_ rollouts: RolloutService, image: String?, requestedBy: String) async throws -> HTTPServer.Response {
        if let image {
            do { _ = try ImageReference(parsing: image) } catch {
                return try json(ControlAPI.ErrorBody(error: "\(image) is not an image reference: \(error.reason)"), status: .badRequest)
            }
        }
        let events: AsyncStream<ControlAPI.Event>
        do {
            events = try await rollouts.submit(image: image, requestedBy: requestedBy)
        } catch let busy as RolloutService.Busy {
            return try json(ControlAPI.ErrorBody(error: busy.description), status: .conflict)
        }
        return ndjson(events)
    }

    private static func submit(_ engine: NodeEngine, _ kind: DeployRecord.Kind, image: String?) async throws -> HTTPServer.Response {
        let events: AsyncStream<ControlAPI.Event>
        do {
            events = try await engine.submit(kind, image: image).events
        } catch let busy as NodeEngine.Busy {
            return try json(ControlAPI.ErrorBody(error: busy.description), status: .conflict)
        } catch let refused as NodeEngine.Refused {
            return try json(ControlAPI.ErrorBody(error: refused.description), status: .badRequest)
        }
        return ndjson(events)
    }

    /// A deploy's events as NDJSON, one line as each happens. The deploy runs in the engine or the rollout
    /// service, not here: a client that goes away only stops reading progress.
    private static func ndjson(_ events: AsyncStream<ControlAPI.Event>) -> HTTPServer.Response {
        HTTPServer.Response(
            contentType: "application/x-ndjson",
            body: .stream { write in
                for await event in events {
                    var line = try ControlAPI.encoder.encode(event)
                    line.append(UInt8(ascii: "\n"))
                    try await write(Array(line))
                }
            })
    }

    private static func json(_ value: some Encodable, status: HTTPResponseStatus = .ok) throws -> HTTPServer.Response {
        HTTPServer.Response(status: status, contentType: "application/json", body: .bytes(Array(try ControlAPI.encoder.encode(value))))
    }

    /// Creates the socket's folder (0700) and refuses to take over the socket of a peerd that still runs.
    static func prepareSocket(_ path: String) throws {
        let folder = (path as NSString).deletingLastPathComponent
        if !folder.isEmpty, !FileManager.default.fileExists(atPath: folder) {
            try AtomicFile.makeDirectory(folder, mode: 0o700)
        }
        if FileManager.default.fileExists(atPath: path), socketAnswers(path) {
            throw StartupError(description: "another peerd already listens on \(path); stop it first (systemctl stop peerd)")
        }
    }

    static func socketAnswers(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8.prefix(MemoryLayout.size(ofValue: address.sun_path) - 1))
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        return result == 0
    }
}

public struct StartupError: Error, CustomStringConvertible {
    public var description: String
}
