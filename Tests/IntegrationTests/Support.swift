import AsyncHTTPClient
import Deployment
import Docker
import Foundation
import Logging
import Nginx
import PeerCore
import PeerDaemon
import PeerTestKit
import Testing

/// An in-process engine wired to the real dockerd and the node's real nginx, running while `body` runs.
@discardableResult
func withEngine<T: Sendable>(
    _ node: TestNode, dockerSocket: String = TestBed.dockerSocket, startNginx: Bool = true,
    waitUntilReady: Bool = true, _ body: @Sendable (NodeEngine) async throws -> T
) async throws -> T {
    try await TestBed.require()
    if startNginx { try node.startNginx() }
    let config = try node.config()
    var logger = Logger(label: "test.\(node.name)")
    logger.logLevel = .warning
    let docker = DockerClient(
        socketPath: dockerSocket, credentials: try Daemon.registryCredentials(config), http: TestBed.http, logger: logger)
    let nginx = NginxProxy(settings: config.nginxSettings, http: TestBed.http, logger: logger)
    let engine = NodeEngine(config: config, runtime: docker, proxy: nginx, http: TestBed.http, logger: logger)
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await engine.run() }
        defer { group.cancelAll() }
        if waitUntilReady {
            for _ in 0..<300 {
                if await engine.status().starting == nil { break }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        return try await body(engine)
    }
}

/// Submits a deploy (or rollback) and waits for its record.
func deploy(_ engine: NodeEngine, _ image: String?, kind: DeployRecord.Kind = .deploy) async throws -> DeployRecord {
    let (_, events) = try await engine.submit(kind, image: try image.map { try ImageReference(parsing: $0) })
    for await event in events {
        if case .result(let record) = event { return record }
    }
    throw TestBed.NotReady(description: "the event stream ended without a result")
}

/// Sequential GETs on fresh connections until stopped; counts answers that are not 2xx (and which bodies came back).
actor TrafficProbe {
    private(set) var ok = 0
    private(set) var failures: [String] = []
    private(set) var bodies: Set<String> = []
    private var running = true

    func record(_ result: Result<TestBed.Answer, any Error>) {
        switch result {
        case .success(let answer) where (200..<300).contains(answer.status):
            ok += 1
            bodies.insert(answer.body)
        case .success(let answer): failures.append("\(answer.status) \(answer.body)")
        case .failure(let error): failures.append("\(error)")
        }
    }

    func stop() { running = false }
    var isRunning: Bool { running }

    /// Runs request loops against `node` while `body` runs, and returns what they saw.
    static func during(_ node: TestNode, _ body: () async throws -> Void) async throws -> TrafficProbe {
        let probe = TrafficProbe()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await run(probe, node: node) }
            do {
                try await body()
            } catch {
                await probe.stop()
                throw error
            }
            await probe.stop()
            try await group.waitForAll()
        }
        return probe
    }

    /// Runs `connections` parallel request loops against `node` until ``stop()``.
    static func run(_ probe: TrafficProbe, node: TestNode, connections: Int = 4) async {
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<connections {
                group.addTask {
                    while await probe.isRunning {
                        let result: Result<TestBed.Answer, any Error>
                        do { result = .success(try await node.get("/")) } catch { result = .failure(error) }
                        await probe.record(result)
                    }
                }
            }
        }
    }
}
