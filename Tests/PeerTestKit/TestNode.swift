import PeerConfiguration
import Foundation
import PeerDaemon

/// A node of the test bed for one test: a private folder, its own nginx on its own loopback address,
/// and a peer.yml. Every container it leaves behind carries its unique node name and is removed by ``tearDown()``.
public final class TestNode: Sendable {
    public let name: String
    public let address: String
    public let port: Int
    public let directory: String
    public let configPath: String

    nonisolated(unsafe) private static var counter = 0
    private static let lock = NSLock()

    /// `extraApp` / `extraNginx` are YAML lines added to the app / nginx sections (`$ADDRESS` in an nginx line
    /// is this node's address).
    /// `extraTop`: top-level YAML lines (e.g. a `registries:` section).
    public init(
        extraApp: [String] = [], extraNginx: [String] = [], extraTop: [String] = [], healthTimeout: String = "10s",
        stateDir: String? = nil
    ) throws {
        let n = Self.lock.withLock {
            Self.counter += 1
            return Self.counter
        }
        let suffix = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        name = "t\(n)-\(suffix)"
        // 127.0.1.x: away from the addresses the cluster scripts use (127.0.0.x).
        address = "127.0.1.\(10 + (getpid() + Int32(n)) % 200)"
        port = 18000 + Int(n)
        directory = NSTemporaryDirectory() + "peer-test-\(name)"
        configPath = directory + "/peer.yml"
        let fm = FileManager.default
        for sub in ["nginx/sites", "nginx/logs", "nginx/temp", "state", "run"] {
            try fm.createDirectory(atPath: "\(directory)/\(sub)", withIntermediateDirectories: true)
        }
        chmod("\(directory)/nginx/temp", 0o777)
        let nginxConf = """
            pid \(directory)/nginx/nginx.pid;
            error_log \(directory)/nginx/logs/error.log warn;
            worker_processes 2;
            events { worker_connections 1024; }
            http {
                access_log off;
                client_body_temp_path \(directory)/nginx/temp/body;
                proxy_temp_path \(directory)/nginx/temp/proxy;
                fastcgi_temp_path \(directory)/nginx/temp/fastcgi;
                uwsgi_temp_path \(directory)/nginx/temp/uwsgi;
                scgi_temp_path \(directory)/nginx/temp/scgi;
                include \(directory)/nginx/sites/*.conf;
            }
            """
        try nginxConf.write(toFile: "\(directory)/nginx/nginx.conf", atomically: true, encoding: .utf8)
        let yaml =
            """
            node:
              name: \(name)
              address: \(address)
            app:
              name: testapp
              port: 8080
              health:
                path: /health
                timeout: \(healthTimeout)
              stop_grace: 2s
              drain_timeout: 5s
            \(extraApp.map { "  \($0)" }.joined(separator: "\n"))
            nginx:
              site: \(directory)/nginx/sites/peer-testapp.conf
              listen: \(address):\(port)
              server_name: testapp.local
              prefix: \(directory)/nginx
              config: \(directory)/nginx/nginx.conf
              pid_file: \(directory)/nginx/nginx.pid
            \(extraNginx.map { "  " + $0.replacingOccurrences(of: "$ADDRESS", with: address) }.joined(separator: "\n"))
            state_dir: \(stateDir ?? directory + "/state")
            control:
              socket: \(directory)/run/peerd.sock
            metrics:
              listen: \(address):\(port + 2000)
            \(extraTop.joined(separator: "\n"))
            """
        try yaml.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    public func config() throws -> PeerConfig { try PeerConfig.load(path: configPath) }

    /// Adds top-level YAML sections at the end of this node's config.
    public func appendToConfig(_ yaml: String) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: configPath))
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(yaml.utf8))
    }

    /// This node's `mesh:` section for the certificates `peerctl` wrote to `pki`, listening on `port + 1000`.
    /// `members`: the indented `- name: … address: …` entries.
    public func meshSection(pki: String, members: String) -> String {
        """

        mesh:
          listen: \(address):\(port + 1000)
          ca: \(pki)/ca.pem
          cert: \(pki)/\(name).pem
          key: \(pki)/\(name)-key.pem
          members:
        \(members)

        """
    }

    /// This node as an entry of `mesh.members`.
    public var meshMember: String { "    - name: \(name)\n      address: \(address):\(port + 1000)" }

    public var url: String { "http://\(address):\(port)" }

    /// peerd's Prometheus endpoint on this node.
    public var metricsURL: String { "http://\(address):\(port + 2000)/metrics" }

    public func startNginx() throws {
        let result = try Shell.run(
            "nginx", ["-p", "\(directory)/nginx", "-c", "\(directory)/nginx/nginx.conf", "-e", "\(directory)/nginx/logs/error.log"])
        guard result.status == 0 else { throw TestBed.NotReady(description: "nginx did not start: \(result.output)") }
    }

    public func stopNginx() {
        if let pid = try? String(contentsOfFile: "\(directory)/nginx/nginx.pid", encoding: .utf8),
            let n = Int32(pid.trimmingCharacters(in: .whitespacesAndNewlines))
        {
            kill(n, SIGQUIT)
            for _ in 0..<50 where kill(n, 0) == 0 { usleep(20_000) }
        }
    }

    /// GET through this node's nginx, as a client of the app would.
    public func get(_ path: String = "/") async throws -> TestBed.Answer {
        try await TestBed.get(url + path, host: "testapp.local")
    }

    /// The containers of this node (by peer's labels), from the docker CLI, independent of the code under test.
    public func containers(all: Bool = true) throws -> [String] {
        let result = try Shell.run(
            "docker", ["ps", all ? "-a" : "", "-q", "--no-trunc", "--filter", "label=dev.peer.node=\(name)"].filter { !$0.isEmpty })
        return result.output.split(separator: "\n").map(String.init)
    }

    public func tearDown() {
        stopNginx()
        if let ids = try? containers(), !ids.isEmpty {
            _ = try? Shell.run("docker", ["rm", "-f"] + ids)
        }
        // PEER_KEEP_TEST_DIRS=1 keeps the node's files (config, logs) for a post-mortem.
        if ProcessInfo.processInfo.environment["PEER_KEEP_TEST_DIRS"] == nil { try? FileManager.default.removeItem(atPath: directory) }
    }
}
