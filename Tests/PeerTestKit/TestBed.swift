import Deployment
import AsyncHTTPClient
import Foundation
import NIOCore

/// The real services the integration tests use, started by `cluster/testbed up` (CI runs it first).
public enum TestBed {
    public static let registry = ProcessInfo.processInfo.environment["PEER_REGISTRY"] ?? "127.0.0.1:5000"
    public static let dockerSocket = "/var/run/docker.sock"

    /// `127.0.0.1:5000/peer-testapp:TAG`: v1, v2, v3 (healthy), bad (health 404), crash (exit 3), slowstart (3 s),
    /// crashlater (exit 3 after 1 s).
    public static func image(_ tag: String) -> String { "\(registry)/peer-testapp:\(tag)" }
    /// The same, parsed (what the engine takes).
    public static func reference(_ tag: String) -> ImageReference {
        // The test images' names are valid references: a failure here is a bug in the test bed.
        try! ImageReference(parsing: image(tag))
    }

    /// A registry that requires a login (`cluster/testbed up` starts it and pushes `private-app:v1`).
    public static let authRegistry = ProcessInfo.processInfo.environment["PEER_AUTH_REGISTRY"] ?? "127.0.0.1:5001"
    public static let authRegistryUser = "peer"
    public static let authRegistryPassword = "testbed-secret"

    /// The repository root (for binaries and scripts).
    public static let root: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    public static let http = HTTPClient(
        eventLoopGroupProvider: .singleton,
        configuration: .init(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(2))))

    public struct NotReady: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// Fails (does not skip) when the test bed is not up: a test that silently skips proves nothing.
    /// Polls `condition` every 100 ms until it holds or `timeout` passes; returns whether it held.
    public static func eventually(within timeout: Duration, _ condition: () -> Bool) async -> Bool {
        let end = ContinuousClock.now + timeout
        while ContinuousClock.now < end {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return condition()
    }

    public static func require() async throws {
        guard FileManager.default.fileExists(atPath: dockerSocket) else {
            throw NotReady(description: "no dockerd at \(dockerSocket): run cluster/testbed up first")
        }
        let registryUp = (try? await get("http://\(registry)/v2/"))?.status == 200
        guard registryUp else { throw NotReady(description: "no registry at \(registry): run cluster/testbed up first") }
        guard Shell.which("nginx") != nil else { throw NotReady(description: "nginx is not installed: run cluster/testbed up first") }
    }

    public struct Answer: Sendable {
        public var status: Int
        public var body: String
        public var headers: [(String, String)]
        public func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
    }

    /// One GET on a fresh connection.
    public static func get(_ url: String, host: String? = nil, timeout: Duration = .seconds(5)) async throws -> Answer {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Connection", value: "close")
        if let host { request.headers.add(name: "Host", value: host) }
        let response = try await http.execute(request, timeout: .milliseconds(Int64(timeout.components.seconds * 1000)))
        let body = try await response.body.collect(upTo: 1 << 20)
        return Answer(
            status: Int(response.status.code), body: String(buffer: body).trimmingCharacters(in: .whitespacesAndNewlines),
            headers: response.headers.map { ($0.name, $0.value) })
    }
}

/// Runs commands for tests and test fixtures.
public enum Shell {
    public struct Result: Sendable {
        public var status: Int32
        public var output: String
    }

    /// Runs to completion and returns the exit status and output (see ``Spawn`` for why not Process).
    @discardableResult
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws -> Result {
        let path = executable.contains("/") ? executable : (which(executable) ?? executable)
        let outputPath = NSTemporaryDirectory() + "peer-shell-\(getpid())-\(UInt64.random(in: 0...UInt64.max)).out"
        defer { unlink(outputPath) }
        let status = Spawn.wait(try Spawn.start(path, arguments, output: outputPath, environment: environment))
        return Result(status: status, output: (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "")
    }

    public static func which(_ name: String) -> String? {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "") + ":/usr/sbin:/sbin"
        return path.split(separator: ":").map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}
