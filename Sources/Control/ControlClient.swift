import AsyncHTTPClient
import Deployment
import Foundation
import NIOCore
import PKI

/// `peerctl`'s side of the control API.
public struct ControlClient: Sendable {
    public let socketPath: String
    let http: HTTPClient

    public init(socketPath: String, http: HTTPClient) {
        self.socketPath = socketPath
        self.http = http
    }

    public struct Failure: Error, CustomStringConvertible {
        /// What kind of failure: `peerctl`'s exit code tells them apart.
        public enum Kind: Sendable {
            /// peerd (or, through it, the cluster's leader) could not be reached; nothing was done.
            case unreachable
            /// Refused: busy with another rollout, not replicated, nothing to do.
            case refused
            /// A bad request (an image name that does not parse).
            case badRequest
            case notFound
            case other

            /// From an HTTP status.
            init(status: Int) {
                switch status {
                case 409: self = .refused
                case 503: self = .unreachable
                case 400: self = .badRequest
                case 404: self = .notFound
                default: self = .other
                }
            }

            /// From an error's code over the mesh.
            public init(code: String?) {
                switch code {
                case "refused": self = .refused
                case "unavailable": self = .unreachable
                case "bad-request": self = .badRequest
                case "not-found": self = .notFound
                default: self = .other
                }
            }
        }

        public var description: String
        public var kind: Kind

        public init(description: String, kind: Kind = .other) {
            self.description = description
            self.kind = kind
        }
    }

    public func status() async throws -> ControlAPI.NodeStatus {
        try await get("/v1/status")
    }

    public func members() async throws -> ControlAPI.Members {
        try await get("/v1/members")
    }

    public func who() async throws -> ControlAPI.Who {
        try await get("/v1/who")
    }

    public func configuration() async throws -> ControlAPI.ClusterConfiguration {
        try await get("/v1/configuration")
    }

    /// Adds or removes a member through the leader; returns once the change is committed (or throws why not).
    public func changeMembers(_ change: ControlAPI.MemberChange) async throws -> ControlAPI.ClusterConfiguration {
        try await decoded(try await execute(try post("/v1/configuration/members", json: change), timeout: .seconds(30)), upTo: 1 << 20)
    }

    public func history() async throws -> [DeployRecord] {
        try await get("/v1/deploys")
    }

    /// Starts a deploy (image given) or a rollback (nil) and calls `onEvent` for each event as it arrives.
    public func deploy(image: String?, onEvent: (ControlAPI.Event) -> Void) async throws {
        try await deploy(image: image, requestedBy: nil, onEvent: onEvent)
    }

    public func deploy(image: String?, requestedBy: String?, onEvent: (ControlAPI.Event) -> Void) async throws {
        var request: HTTPClientRequest
        if let image {
            request = try post("/v1/deploy", json: ControlAPI.DeployRequest(image: image, requestedBy: requestedBy))
        } else {
            request = try self.request("/v1/rollback")
            request.method = .POST
            if let requestedBy { request.headers.add(name: "X-Peer-Requested-By", value: requestedBy) }
        }
        try await stream(request, onEvent: onEvent)
    }

    public func follow(id: String?, onEvent: (ControlAPI.Event) -> Void) async throws {
        try await stream(try post("/v1/rollout/follow", json: ControlAPI.RolloutRequest(id: id)), onEvent: onEvent)
    }

    public func cancel(id: String?) async throws -> ControlAPI.Cancelled {
        try await decoded(
            try await execute(try post("/v1/rollout/cancel", json: ControlAPI.RolloutRequest(id: id)), timeout: .seconds(60)), upTo: 1 << 20)
    }

    /// An NDJSON stream of events, each passed on as it arrives.
    private func stream(_ request: HTTPClientRequest, onEvent: (ControlAPI.Event) -> Void) async throws {
        let response = try await execute(request, timeout: .hours(2))
        guard response.status == .ok else {
            throw Failure(description: try await errorText(response), kind: .init(status: Int(response.status.code)))
        }
        var pending: [UInt8] = []
        for try await chunk in response.body {
            pending += chunk.readableBytesView
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = pending[..<newline]
                pending.removeSubrange(...newline)
                if let event = try? ControlAPI.decoder.decode(ControlAPI.Event.self, from: Data(line)) {
                    onEvent(event)
                }
            }
        }
    }

    /// Installs an origin certificate on this node, which sends it to the others.
    public func setOriginTLS(_ pair: OriginPair, authority: OriginAuthority?) async throws -> ControlAPI.OriginTLS {
        try await setOriginTLS(pair, requestedBy: nil, authority: authority)
    }

    public func setOriginTLS(_ pair: OriginPair, requestedBy: String?, authority: OriginAuthority?) async throws -> ControlAPI.OriginTLS {
        let request = try post(
            "/v1/tls",
            json: ControlAPI.TLSRequest(certificatePEM: pair.certificatePEM, keyPEM: pair.keyPEM, requestedBy: requestedBy, authority: authority))
        return try await decoded(try await execute(request, timeout: .seconds(60)), upTo: 1 << 20)
    }

    public func revocations() async throws -> ControlAPI.Revocations { try await get("/v1/revocations") }

    /// Hands revocations the cluster CA signed to this node, which sends them to the others.
    public func revoke(_ revocations: [Revocation]) async throws -> ControlAPI.Revocations {
        let request = try post("/v1/revocations", json: ControlAPI.RevocationRequest(revocations: revocations))
        return try await decoded(try await execute(request, timeout: .seconds(30)), upTo: 16 << 20)
    }

    private func get<T: Decodable>(_ path: String) async throws -> T {
        try await decoded(try await execute(try request(path), timeout: .seconds(30)), upTo: 16 << 20)
    }

    /// A POST with a JSON body.
    private func post(_ path: String, json body: some Encodable) throws -> HTTPClientRequest {
        var request = try self.request(path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: try ControlAPI.encoder.encode(body)))
        return request
    }

    /// An answer's JSON, or its error (`{"error": …}` and the status) as a ``Failure``.
    private func decoded<T: Decodable>(_ response: HTTPClientResponse, upTo limit: Int) async throws -> T {
        let body = try await response.body.collect(upTo: limit)
        guard response.status == .ok else {
            let status = Int(response.status.code)
            throw Failure(description: Self.errorMessage(Data(buffer: body), status: status), kind: .init(status: status))
        }
        return try ControlAPI.decoder.decode(T.self, from: Data(buffer: body))
    }

    private func request(_ path: String) throws -> HTTPClientRequest {
        guard let url = URL(httpURLWithSocketPath: socketPath, uri: path) else {
            throw Failure(description: "\(socketPath) is not a usable socket path")
        }
        return HTTPClientRequest(url: url.absoluteString)
    }

    private func execute(_ request: HTTPClientRequest, timeout: TimeAmount) async throws -> HTTPClientResponse {
        do {
            return try await http.execute(request, timeout: timeout)
        } catch {
            let reason = FileManager.default.fileExists(atPath: socketPath) ? "\(error)" : "no such socket"
            throw Failure(
                description:
                    "cannot reach peerd at \(socketPath) (\(reason)); is it running? (systemctl status peerd; as root; or pass --config / --socket)",
                kind: .unreachable)
        }
    }

    private func errorText(_ response: HTTPClientResponse) async throws -> String {
        let body = try await response.body.collect(upTo: 1 << 20)
        return Self.errorMessage(Data(buffer: body), status: Int(response.status.code))
    }

    static func errorMessage(_ data: Data, status: Int) -> String {
        if let error = try? ControlAPI.decoder.decode(ControlAPI.ErrorBody.self, from: data) { return error.error }
        return "peerd answered \(status): \(String(decoding: data, as: UTF8.self))"
    }
}
