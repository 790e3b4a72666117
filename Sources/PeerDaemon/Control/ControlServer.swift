import Control
import Deployment
import Foundation
import Logging
import PeerCore
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
///     GET  /v1/configuration  the cluster's configuration: epoch, members, a change under way (JSON)
///     POST /v1/configuration/members  {"add": {"name", "address", "role", "publicAddress"}} or {"remove": "NAME"}
///                         → on the leader: the change proposed, and the configuration once committed (JSON)
///     POST /v1/deploy     {"image": "…"} → NDJSON stream: accepted, progress…, result
///     POST /v1/rollback   → the same stream, swapping back to the previous image
///     POST /v1/rollout/follow  {"id": "…"} (optional) → the stream of a running (or ended) rollout
///     POST /v1/rollout/cancel  {"id": "…"} (optional) → {"id": "…"}: stops the current rollout
///     POST /v1/tls        {"certificatePEM": "…", "keyPEM": "…"} → the installed origin certificate (JSON)
///     GET  /v1/revocations → the certificate revocations this node holds (JSON)
///     POST /v1/revocations {"revocations": […]} → takes those the cluster CA signed, hands them on (JSON)
enum ControlServer {
    static func server(_ control: NodeControl, socketPath: String, logger: Logger) throws -> HTTPServer {
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
                return try await route(request, control)
            } catch let refusal as NodeControl.Refusal {
                let status: HTTPResponseStatus =
                    switch refusal {
                    case .notFound: .notFound
                    case .badRequest: .badRequest
                    case .conflict: .conflict
                    case .unavailable: .serviceUnavailable
                    case .forbidden: .forbidden
                    }
                return (try? json(ControlAPI.ErrorBody(error: refusal.description), status: status))
                    ?? HTTPServer.Response(status: status, contentType: "text/plain", body: .bytes(Array("\(refusal)\n".utf8)))
            } catch {
                return (try? json(ControlAPI.ErrorBody(error: "\(error)"), status: .internalServerError))
                    ?? HTTPServer.Response(status: .internalServerError, contentType: "text/plain", body: .bytes(Array("\(error)\n".utf8)))
            }
        }
    }

    private static func route(_ request: HTTPServer.Request, _ control: NodeControl) async throws -> HTTPServer.Response {
        switch (request.method, request.path) {
        case (.GET, "/v1/status"):
            return try json(await control.status())
        case (.POST, "/v1/tls"):
            guard let tls = try? ControlAPI.decoder.decode(ControlAPI.TLSRequest.self, from: Data(buffer: request.body)) else {
                throw NodeControl.Refusal.badRequest("expected a JSON body {\"certificatePEM\": \"…\", \"keyPEM\": \"…\"}")
            }
            return try json(
                try await control.setOriginTLS(
                    OriginPair(certificatePEM: tls.certificatePEM, keyPEM: tls.keyPEM), requestedBy: tls.requestedBy, authority: tls.authority))
        case (.GET, "/v1/revocations"):
            return try json(try control.revocations())
        case (.POST, "/v1/revocations"):
            guard request.body.readableBytes <= 1 << 20,
                let body = try? ControlAPI.decoder.decode(ControlAPI.RevocationRequest.self, from: Data(buffer: request.body))
            else {
                throw NodeControl.Refusal.badRequest("expected a JSON body {\"revocations\": […]} (peerctl cert revoke makes them)")
            }
            return try json(try await control.revoke(body.revocations, requestedBy: body.requestedBy))
        case (.GET, "/v1/deploys"):
            return try json(await control.history())
        case (.GET, "/v1/members"):
            return try json(try control.members())
        case (.GET, "/v1/who"):
            return try json(try control.who())
        case (.GET, "/v1/configuration"):
            return try json(try control.configuration())
        case (.POST, "/v1/configuration/members"):
            guard request.body.readableBytes <= 64 * 1024,
                let change = try? ControlAPI.decoder.decode(ControlAPI.MemberChange.self, from: Data(buffer: request.body))
            else {
                throw NodeControl.Refusal.badRequest("expected a JSON body {\"add\": {\"name\", \"address\", \"role\"}} or {\"remove\": \"NAME\"}")
            }
            return try json(try await control.changeMembers(change))
        case (.POST, "/v1/deploy"):
            guard request.body.readableBytes <= 64 * 1024,
                let deploy = try? ControlAPI.decoder.decode(ControlAPI.DeployRequest.self, from: Data(buffer: request.body))
            else {
                throw NodeControl.Refusal.badRequest("expected a JSON body {\"image\": \"…\"}")
            }
            return ndjson(try await control.deploy(image: deploy.image, requestedBy: deploy.requestedBy))
        case (.POST, "/v1/rollback"):
            return ndjson(try await control.deploy(image: nil, requestedBy: request.headers.first(name: "X-Peer-Requested-By")))
        case (.POST, "/v1/rollout/follow"):
            return ndjson(try await control.follow(try rolloutRequest(request).id))
        case (.POST, "/v1/rollout/cancel"):
            let body = try rolloutRequest(request)
            return try json(try await control.cancel(body.id, requestedBy: body.requestedBy))
        case (_, "/v1/status"), (_, "/v1/tls"), (_, "/v1/revocations"), (_, "/v1/deploys"), (_, "/v1/members"), (_, "/v1/who"), (_, "/v1/deploy"),
            (_, "/v1/configuration"), (_, "/v1/configuration/members"),
            (_, "/v1/rollback"),
            (_, "/v1/rollout/follow"), (_, "/v1/rollout/cancel"):
            return try json(ControlAPI.ErrorBody(error: "\(request.method) is not allowed on \(request.path)"), status: .methodNotAllowed)
        default:
            return try json(ControlAPI.ErrorBody(error: "no such endpoint: \(request.path)"), status: .notFound)
        }
    }

    /// An optional `{"id": "…", "requestedBy": "…"}`; an empty body is the current rollout.
    private static func rolloutRequest(_ request: HTTPServer.Request) throws -> ControlAPI.RolloutRequest {
        guard request.body.readableBytes > 0 else { return ControlAPI.RolloutRequest() }
        guard request.body.readableBytes <= 64 * 1024,
            let body = try? ControlAPI.decoder.decode(ControlAPI.RolloutRequest.self, from: Data(buffer: request.body))
        else {
            throw NodeControl.Refusal.badRequest("expected an empty body or a JSON body {\"id\": \"…\"}")
        }
        return body
    }

    /// A deploy's events as NDJSON, one line as each happens. The deploy runs in the engine or the rollout
    /// service, not here: a client that goes away only stops reading progress.
    private static func ndjson(_ events: ControlEvents) -> HTTPServer.Response {
        HTTPServer.Response(
            contentType: "application/x-ndjson",
            body: .stream { write in
                try await events.forEach { event in
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
