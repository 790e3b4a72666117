import Foundation
import PeerDaemon
import Testing

@Suite struct ConfigTests {
    static let minimal = """
        node:
          name: web-1
          address: 203.0.113.10
        app:
          port: 8080
        nginx:
          server_name: shop.example.com
        """

    func parse(_ yaml: String, environment: [String: String] = [:]) throws(ConfigError) -> PeerConfig {
        try PeerConfig.parse(yaml, path: "/etc/peer/peer.yml", environment: environment)
    }

    func error(_ yaml: String, environment: [String: String] = [:]) -> ConfigError? {
        do {
            _ = try parse(yaml, environment: environment)
            return nil
        } catch {
            return error
        }
    }

    @Test func minimalConfigGetsTheDocumentedDefaults() throws {
        let config = try parse(Self.minimal)
        #expect(config.app.name == "app")
        #expect(config.app.health.path == "/health")
        #expect(config.app.health.interval == .milliseconds(100))
        #expect(config.app.health.timeout == .seconds(60))
        #expect(config.app.restart == "unless-stopped")
        #expect(config.app.drainTimeout == .seconds(30))
        #expect(config.nginx.site == "/etc/nginx/conf.d/peer-app.conf")
        #expect(config.nginx.listen == "80")
        #expect(config.nginx.pidFile == "/run/nginx.pid")
        #expect(config.dockerSocket == "/var/run/docker.sock")
        #expect(config.stateDirectory == "/var/lib/peer")
        #expect(config.controlSocket == "/run/peer/peerd.sock")
    }

    @Test func theShippedExampleIsValid() throws {
        var root = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { root.deleteLastPathComponent() }
        let text = try String(contentsOf: root.appendingPathComponent("deploy/peer.example.yml"), encoding: .utf8)
        // The example names files that exist on a real node only; check everything else.
        let portable = text.replacingOccurrences(of: "  env_file: /etc/peer/shop.env # KEY=value lines, read at every deploy (keep it 0600)\n", with: "")
            .replacingOccurrences(of: "password_file: /etc/peer/ghcr-token", with: "password_env: GHCR_TOKEN")
        let config = try parse(portable, environment: ["GHCR_TOKEN": "x"])
        #expect(config.app.image == "ghcr.io/acme/shop:1.4.2")
        #expect(config.registries.first?.server == "ghcr.io")
        #expect(config.app.volumes == ["/srv/shop/uploads:/app/uploads"])
    }

    @Test func errorsNameTheFileTheKeyTheLineAndTheFix() throws {
        let bad = Self.minimal.replacingOccurrences(of: "port: 8080", with: "port: 99999")
        let e = try #require(error(bad))
        #expect(e.key == "app.port")
        #expect(e.line == 5)
        #expect(e.description.hasPrefix("/etc/peer/peer.yml:5: app.port:"))
        #expect(e.description.contains("\"99999\" is not a whole number from 1 to 65535"))
        #expect(e.description.contains("Fix:"))
    }

    @Test func typosAreCaughtWithASuggestion() throws {
        let typo = Self.minimal.replacingOccurrences(of: "  port: 8080", with: "  port: 8080\n  helth:\n    path: /up")
        let e = try #require(error(typo))
        #expect(e.key == "app.helth")
        #expect(e.description.contains("did you mean health?"))
    }

    @Test(arguments: [
        ("node:\n  name: Web_1\n  address: 203.0.113.10\napp:\n  port: 80\nnginx:\n  server_name: x", "node.name"),
        ("node:\n  name: web-1\n  address: example.com\napp:\n  port: 80\nnginx:\n  server_name: x", "node.address"),
        ("node:\n  name: web-1\n  address: 203.0.113.10\nnginx:\n  server_name: x", "app"),
        ("node:\n  name: web-1\n  address: 203.0.113.10\napp:\n  port: 80\n  image: Shop:1\nnginx:\n  server_name: x", "app.image"),
        ("node:\n  name: web-1\n  address: 203.0.113.10\napp:\n  port: 80\n  drain_timeout: soon\nnginx:\n  server_name: x", "app.drain_timeout"),
        ("node:\n  name: web-1\n  address: 203.0.113.10\napp:\n  port: 80\n  restart: sometimes\nnginx:\n  server_name: x", "app.restart"),
        ("node:\n  name: web-1\n  address: 203.0.113.10\napp:\n  port: 80\n  labels:\n    dev.peer.app: x\nnginx:\n  server_name: x", "app.labels.dev.peer.app"),
        ("node:\n  name: web-1\n  address: 203.0.113.10\napp:\n  port: 80\nnginx:\n  server_name: x\n  listen: 1.2.3:80", "nginx.listen"),
        ("node:\n  name: web-1\n  address: 203.0.113.10\napp:\n  port: 80\n  env_file: /nonexistent/app.env\nnginx:\n  server_name: x", "app.env_file"),
        ("node:\n  name: web-1\n  address: 203.0.113.10\napp:\n  port: 80\nnginx:\n  server_name: x\nregistries:\n  - server: ghcr.io\n    username: bot", "registries[0]"),
        ("node:\n  name: web-1\n  address: 203.0.113.10\napp:\n  port: 80\nnginx:\n  server_name: x\nregistries:\n  - server: ghcr.io\n    username: bot\n    password_env: NOT_SET", "registries[0].password_env"),
    ])
    func badValuesNameTheirKey(yaml: String, key: String) throws {
        let e = try #require(error(yaml))
        #expect(e.key == key, "\(e)")
        #expect(!e.fix.isEmpty, "\(e)")
    }

    @Test func invalidYAMLSaysWhere() throws {
        let e = try #require(error("node:\n  name: [unclosed\n"))
        #expect(e.description.contains("not valid YAML"))
        #expect(e.line != nil)
    }

    @Test func inlinePasswordsRequireAPrivateFile() throws {
        let path = NSTemporaryDirectory() + "peer-config-\(UUID().uuidString).yml"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let yaml = Self.minimal + "\nregistries:\n  - server: ghcr.io\n    username: bot\n    password: s3cret\n"
        FileManager.default.createFile(atPath: path, contents: Data(yaml.utf8), attributes: [.posixPermissions: 0o644])
        do {
            _ = try PeerConfig.load(path: path)
            Issue.record("a world-readable secret was accepted")
        } catch {
            #expect(error.key == "registries[0].password")
            #expect(error.fix.contains("chmod 600"))
            #expect(!error.description.contains("s3cret"), "the secret itself is never printed")
        }
        chmod(path, 0o600)
        #expect(try PeerConfig.load(path: path).registries.count == 1)
    }

    @Test func missingFileSaysHowToFixIt() {
        do {
            _ = try PeerConfig.load(path: "/nonexistent/peer.yml")
            Issue.record("loaded a missing file")
        } catch {
            #expect(error.description.contains("/nonexistent/peer.yml"))
            #expect(error.description.contains("does not exist"))
            #expect(error.fix.contains("--config"))
        }
    }

    @Test func envFileIsReadLikeDockersEnvFile() throws {
        let path = NSTemporaryDirectory() + "peer-env-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "# comment\nA=1\n\nB = two words\nC=x=y\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try EnvFile.read(path) == ["A=1", "B= two words", "C=x=y"])
        try "A=1\nnot a pair\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: EnvFile.Invalid.self) { try EnvFile.read(path) }
    }
}
