import AsyncHTTPClient
import Deployment
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOFoundationCompat
import PeerCore

/// Credentials for one private registry, sent as `X-Registry-Auth` on pulls from it.
public struct RegistryCredential: Sendable, Hashable {
    /// The registry host as it appears in image names: `ghcr.io`, `registry.example.com:5000`.
    public var server: String
    public var username: String
    public var password: String

    public init(server: String, username: String, password: String) {
        self.server = server
        self.username = username
        self.password = password
    }
}

/// A Docker Engine API client over the unix socket. It negotiates the API version with `GET /_ping`
/// (Engine 20.10 speaks 1.41 at most, Engine 29.0–29.2 nothing below 1.44), never hard-codes one.
public actor DockerClient: ContainerRuntime {
    /// The newest API version whose shapes this client was written against.
    public static let newestKnownAPIVersion = APIVersion(major: 1, minor: 47)
    /// The oldest one whose shapes it relies on (1.41 = Engine 20.10).
    public static let oldestSupportedAPIVersion = APIVersion(major: 1, minor: 41)

    public nonisolated let socketPath: String
    private let http: HTTPClient
    private let credentials: [RegistryCredential]
    private let logger: Logger
    private var negotiated: APIVersion?

    public init(
        socketPath: String = "/var/run/docker.sock", credentials: [RegistryCredential] = [], http: HTTPClient,
        logger: Logger = Logger(label: "peer.docker")
    ) {
        self.socketPath = socketPath
        self.credentials = credentials
        self.http = http
        self.logger = logger
    }

    // MARK: - Version

    public struct APIVersion: Sendable, Comparable, CustomStringConvertible {
        public var major: Int
        public var minor: Int
        public init(major: Int, minor: Int) {
            self.major = major
            self.minor = minor
        }
        public init?(_ text: String) {
            let parts = text.split(separator: ".")
            guard parts.count == 2, let major = Int(parts[0]), let minor = Int(parts[1]) else { return nil }
            self.init(major: major, minor: minor)
        }
        public static func < (a: Self, b: Self) -> Bool { (a.major, a.minor) < (b.major, b.minor) }
        public var description: String { "\(major).\(minor)" }
    }

    /// The version used for every call: min(ours, the daemon's newest), checked against the oldest we support.
    public func apiVersion() async throws -> APIVersion {
        if let negotiated { return negotiated }
        return try await ping()
    }

    /// Asks dockerd now (not from cache) whether it answers, and (re)negotiates the API version.
    @discardableResult
    public func ping() async throws -> APIVersion {
        let response = try await send("GET", "/_ping", operation: "ping dockerd", timeout: .seconds(5))
        guard response.status == 200 else {
            throw DockerError.api(operation: "ping dockerd", status: response.status, message: response.message)
        }
        let daemon = response.headers.first(name: "Api-Version").flatMap(APIVersion.init) ?? Self.oldestSupportedAPIVersion
        let chosen = min(daemon, Self.newestKnownAPIVersion)
        guard chosen >= Self.oldestSupportedAPIVersion else {
            throw DockerError.unexpectedResponse(
                operation: "ping dockerd",
                detail: "dockerd speaks API \(daemon) at most; peer needs \(Self.oldestSupportedAPIVersion) or newer (Docker Engine 20.10+)")
        }
        negotiated = chosen
        logger.debug("negotiated Docker API version", metadata: ["docker.api": "\(chosen)"])
        return chosen
    }

    // MARK: - ContainerRuntime

    public func pull(_ image: String) async throws {
        let ref = try ImageReference(parsing: image)
        var query = URLComponents()
        query.queryItems = [URLQueryItem(name: "fromImage", value: ref.repository), URLQueryItem(name: "tag", value: ref.tag)]
        var headers = HTTPHeaders()
        if let credential = credentials.first(where: { $0.server == ref.registry }) {
            let auth = try JSONSerialization.data(withJSONObject: [
                "username": credential.username, "password": credential.password, "serveraddress": credential.server,
            ])
            headers.add(name: "X-Registry-Auth", value: Self.base64URL(auth))
        }
        let path = "/images/create?" + (query.percentEncodedQuery ?? "")
        let response = try await versioned("POST", path, operation: "pull \(image)", headers: headers, timeout: .seconds(900))
        guard response.status == 200 else {
            throw DockerError.pullFailed(image: image, message: response.message)
        }
        // Errors after the stream started still come with 200, as a line carrying errorDetail / error.
        for line in response.body.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) where !line.isEmpty {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { continue }
            if let detail = object["errorDetail"] as? [String: Any], let message = detail["message"] as? String {
                throw DockerError.pullFailed(image: image, message: message)
            }
            if let message = object["error"] as? String {
                throw DockerError.pullFailed(image: image, message: message)
            }
        }
    }

    public func start(_ spec: ContainerSpec) async throws -> AppInstance {
        let portKey = "\(spec.containerPort)/tcp"
        var hostConfig: [String: Any] = [
            "PortBindings": [portKey: [["HostIp": "127.0.0.1", "HostPort": ""]]],
            "RestartPolicy": ["Name": spec.restartPolicy],
        ]
        if !spec.volumes.isEmpty { hostConfig["Binds"] = spec.volumes }
        if !spec.extraHosts.isEmpty { hostConfig["ExtraHosts"] = spec.extraHosts }
        let body: [String: Any] = [
            "Image": spec.image,
            "Env": spec.env,
            "Labels": spec.labels,
            "ExposedPorts": [portKey: [String: Any]()],
            "StopTimeout": max(0, Int(spec.stopGrace.seconds.rounded(.up))),
            "HostConfig": hostConfig,
        ]
        let json = try JSONSerialization.data(withJSONObject: body)
        let name = spec.name
        var created = try await versioned("POST", "/containers/create?name=\(name)", operation: "create \(name)", body: json)
        if created.status == 409 {
            // A container of that name survived an earlier crash; names are per generation, so it is ours to replace.
            logger.notice("replacing leftover container", metadata: ["container.name": "\(name)"])
            try await stopAndRemove(name, grace: .zero)
            created = try await versioned("POST", "/containers/create?name=\(name)", operation: "create \(name)", body: json)
        }
        guard created.status == 201, let id = created.json?["Id"] as? String else {
            throw DockerError.api(operation: "create container \(name) from \(spec.image)", status: created.status, message: created.message)
        }
        let started = try await versioned("POST", "/containers/\(id)/start", operation: "start \(name)")
        guard started.status == 204 || started.status == 304 else {
            let message = started.message
            try? await stopAndRemove(id, grace: .zero)
            throw DockerError.api(operation: "start container \(name)", status: started.status, message: message)
        }
        let inspected = try await inspect(id, operation: "inspect \(name)")
        let state = inspected["State"] as? [String: Any]
        let ports = (inspected["NetworkSettings"] as? [String: Any])?["Ports"] as? [String: Any]
        let binding = (ports?[portKey] as? [[String: Any]])?.first { ($0["HostIp"] as? String) == "127.0.0.1" }
        guard state?["Running"] as? Bool == true, let portText = binding?["HostPort"] as? String, let hostPort = Int(portText)
        else {
            let code = state?["ExitCode"] as? Int ?? -1
            let logs = (try? await logsTail(of: id, lines: 20)) ?? ""
            try? await stopAndRemove(id, grace: .zero)
            throw DockerError.exitedAtStart(name: name, code: code, logs: logs)
        }
        return AppInstance(generation: spec.generation, image: spec.image, containerID: id, containerName: name, hostPort: hostPort)
    }

    /// nil while the container runs. Its last exit code once it stopped — or once it crashed and its restart
    /// policy is bringing it back (Docker then reports it running again, but it did exit).
    public func exitCode(of containerID: String) async throws -> Int? {
        let object = try await inspect(containerID, operation: "inspect \(containerID.prefix(12))")
        let state = object["State"] as? [String: Any]
        let restarted = state?["Restarting"] as? Bool == true || (object["RestartCount"] as? Int ?? 0) > 0
        let running = state?["Running"] as? Bool == true
        if running && !restarted { return nil }
        // A restarted container's ExitCode is reset to 0 while it runs again: the code is then unknown (-1).
        let code = state?["ExitCode"] as? Int ?? -1
        return running && code == 0 ? -1 : code
    }

    public func logsTail(of containerID: String, lines: Int) async throws -> String {
        let response = try await versioned(
            "GET", "/containers/\(containerID)/logs?stdout=true&stderr=true&tail=\(lines)", operation: "logs of \(containerID.prefix(12))")
        guard response.status == 200 else {
            throw DockerError.api(operation: "read logs of \(containerID.prefix(12))", status: response.status, message: response.message)
        }
        return Self.demultiplex(response.rawBody).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    public func stopAndRemove(_ containerID: String, grace: Duration) async throws {
        let seconds = max(0, Int(grace.seconds.rounded(.up)))
        let stopped = try await versioned(
            "POST", "/containers/\(containerID)/stop?t=\(seconds)", operation: "stop \(containerID.prefix(12))",
            timeout: .seconds(Int64(seconds) + 30))
        guard [204, 304, 404].contains(stopped.status) else {
            throw DockerError.api(operation: "stop \(containerID.prefix(12))", status: stopped.status, message: stopped.message)
        }
        let removed = try await versioned("DELETE", "/containers/\(containerID)?force=true&v=true", operation: "remove \(containerID.prefix(12))")
        // 404: already gone; 409: a removal is already in progress.
        guard [204, 404, 409].contains(removed.status) else {
            throw DockerError.api(operation: "remove \(containerID.prefix(12))", status: removed.status, message: removed.message)
        }
    }

    public func managedContainers(labels: [String: String]) async throws -> [ManagedContainer] {
        let filters = ["label": labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }]
        let filterJSON = String(decoding: try JSONSerialization.data(withJSONObject: filters), as: UTF8.self)
        var query = URLComponents()
        query.queryItems = [URLQueryItem(name: "all", value: "true"), URLQueryItem(name: "filters", value: filterJSON)]
        let encoded = (query.percentEncodedQuery ?? "").replacingOccurrences(of: "+", with: "%2B")
        let response = try await versioned("GET", "/containers/json?" + encoded, operation: "list containers")
        guard response.status == 200, let list = try? JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [[String: Any]] else {
            throw DockerError.api(operation: "list containers", status: response.status, message: response.message)
        }
        return list.compactMap { item in
            guard let id = item["Id"] as? String else { return nil }
            let itemLabels = item["Labels"] as? [String: String] ?? [:]
            let name = ((item["Names"] as? [String])?.first ?? id).trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            let ports = item["Ports"] as? [[String: Any]] ?? []
            let port = ports.first { ($0["IP"] as? String) == "127.0.0.1" && ($0["Type"] as? String) == "tcp" }?["PublicPort"] as? Int
            return ManagedContainer(
                id: id, name: name, image: itemLabels[PeerLabels.image] ?? (item["Image"] as? String ?? ""),
                generation: Int(itemLabels[PeerLabels.generation] ?? "") ?? 0,
                running: (item["State"] as? String) == "running", hostPort: port)
        }
    }

    // MARK: - HTTP over the socket

    struct Response {
        var status: Int
        var headers: HTTPHeaders
        var rawBody: [UInt8]
        var body: String { String(decoding: rawBody, as: UTF8.self) }
        var json: [String: Any]? { try? JSONSerialization.jsonObject(with: Data(rawBody)) as? [String: Any] }
        /// dockerd's `{"message": …}`, or the raw body.
        var message: String {
            (json?["message"] as? String) ?? body.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    private func inspect(_ id: String, operation: String) async throws -> [String: Any] {
        let response = try await versioned("GET", "/containers/\(id)/json", operation: operation)
        guard response.status == 200, let object = response.json else {
            throw DockerError.api(operation: operation, status: response.status, message: response.message)
        }
        return object
    }

    private func versioned(
        _ method: String, _ path: String, operation: String, headers: HTTPHeaders = [:], body: Data? = nil,
        timeout: Duration = .seconds(60)
    ) async throws -> Response {
        let version = try await apiVersion()
        return try await send(method, "/v\(version)\(path)", operation: operation, headers: headers, body: body, timeout: timeout)
    }

    private func send(
        _ method: String, _ path: String, operation: String, headers: HTTPHeaders = [:], body: Data? = nil,
        timeout: Duration
    ) async throws -> Response {
        guard let url = URL(httpURLWithSocketPath: socketPath, uri: path) else {
            throw DockerError.unreachable(socket: socketPath, reason: "not a usable socket path")
        }
        var request = HTTPClientRequest(url: url.absoluteString)
        request.method = .init(rawValue: method)
        request.headers = headers
        request.headers.replaceOrAdd(name: "Host", value: "api.moby.localhost")
        if let body {
            request.headers.replaceOrAdd(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(data: body))
        }
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: .nanoseconds(timeout.nanoseconds))
        } catch {
            if FileManager.default.fileExists(atPath: socketPath) {
                throw DockerError.unreachable(socket: socketPath, reason: "\(operation): \(error)")
            }
            throw DockerError.unreachable(socket: socketPath, reason: "no such socket")
        }
        let collected = try await response.body.collect(upTo: 64 << 20)
        return Response(status: Int(response.status.code), headers: response.headers, rawBody: Array(buffer: collected))
    }

    // MARK: - Helpers

    static func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
    }

    /// Logs of a container without a TTY come as frames: 1 byte stream, 3 zero bytes, 4 bytes big-endian size.
    static func demultiplex(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        var index = 0
        while index + 8 <= bytes.count, bytes[index] <= 2, bytes[index + 1] == 0 {
            let size = Int(bytes[index + 4]) << 24 | Int(bytes[index + 5]) << 16 | Int(bytes[index + 6]) << 8 | Int(bytes[index + 7])
            let start = index + 8
            let end = min(bytes.count, start + size)
            out.append(contentsOf: bytes[start..<end])
            index = end
        }
        if index == 0 { return String(decoding: bytes, as: UTF8.self) }  // a TTY container: plain bytes
        return String(decoding: out, as: UTF8.self)
    }
}
