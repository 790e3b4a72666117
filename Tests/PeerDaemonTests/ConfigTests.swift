import PeerConfiguration
import Deployment
import Foundation
import Leadership
import PeerCore
import Membership
import Nginx
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

    @Test func anIPv6AddressIsKeptInTheFormDNSProvidersListIt() throws {
        let config = try parse(Self.minimal.replacingOccurrences(of: "203.0.113.10", with: "\"2001:DB8:0:0:0:0:0:0A\""))
        #expect(config.node.address == "2001:db8::a")
        #expect(try parse(Self.minimal).node.address == "203.0.113.10")
        #expect(
            error(Self.minimal.replacingOccurrences(of: "203.0.113.10", with: "shop.example.com"))?.description.contains(
                "not an IPv4 or IPv6 address") == true)
    }

    @Test func theShippedExampleIsValid() throws {
        var root = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { root.deleteLastPathComponent() }
        let text = try String(contentsOf: root.appendingPathComponent("deploy/peer.example.yml"), encoding: .utf8)
        // The example names files that exist on a real node only; check everything else.
        let pki = try Self.pkiFiles()
        defer { try? FileManager.default.removeItem(atPath: pki) }
        let portable = text.replacingOccurrences(
            of: "  env_file: /etc/peer/shop.env # KEY=value lines, read at every deploy (keep it 0600)\n", with: ""
        )
        .replacingOccurrences(of: "password_file: /etc/peer/ghcr-token", with: "password_env: GHCR_TOKEN")
        .replacingOccurrences(of: "/etc/peer/pki/", with: pki + "/")
        .replacingOccurrences(of: "token_file: /etc/peer/cloudflare-token", with: "token_env: CF_TOKEN")
        let config = try parse(portable, environment: ["GHCR_TOKEN": "x", "CF_TOKEN": "y"])
        #expect(config.dns?.name == "shop.example.com")
        #expect(config.notify?.ntfy?.topic == "shop-alerts-8f3k2c9q")
        #expect(config.app.image == "ghcr.io/acme/shop:1.4.2")
        #expect(config.registries.first?.server == "ghcr.io")
        #expect(config.app.volumes == ["/srv/shop/uploads:/app/uploads"])
        #expect(config.mesh?.members.map(\.name) == ["web-1", "web-2", "web-3"])
        #expect(config.mesh?.port == 7946)
        #expect(config.mesh?.profile == "lan")
        #expect(config.nginx.tls.listen == "443")
        #expect(config.nginx.tlsHostname == "shop.example.com")
        #expect(config.nginx.tls.originPulls == .off)
    }

    /// deploy/nginx/peer-site.conf.example is what peer writes for the example config (routing to one container,
    /// with an origin certificate installed): the documented template cannot drift from the code.
    @Test func theDocumentedServerBlockIsWhatPeerWrites() throws {
        var root = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { root.deleteLastPathComponent() }
        let text = try String(contentsOf: root.appendingPathComponent("deploy/peer.example.yml"), encoding: .utf8)
        let pki = try Self.pkiFiles()
        defer { try? FileManager.default.removeItem(atPath: pki) }
        let config = try parse(
            text.replacingOccurrences(of: "  env_file: /etc/peer/shop.env # KEY=value lines, read at every deploy (keep it 0600)\n", with: "")
                .replacingOccurrences(of: "password_file: /etc/peer/ghcr-token", with: "password_env: GHCR_TOKEN")
                .replacingOccurrences(of: "/etc/peer/pki/", with: pki + "/")
                .replacingOccurrences(of: "token_file: /etc/peer/cloudflare-token", with: "token_env: CF_TOKEN"),
            environment: ["GHCR_TOKEN": "x", "CF_TOKEN": "y"])
        var site = config.nginxSettings.site
        site.tls = config.nginxTLS(fingerprint: "3f1c9a0e5b7d2c48aa00")
        site.ipv6 = true  // the default on a machine with IPv6
        let rendered = site.render(
            routingTo: AppInstance(
                generation: 7, image: "ghcr.io/acme/shop:1.4.2", containerID: "0123456789ab", containerName: "peer-shop-web-1-g7", hostPort: 49153))
        let documented = try String(contentsOf: root.appendingPathComponent("deploy/nginx/peer-site.conf.example"), encoding: .utf8)
        let body = documented.split(separator: "\n", omittingEmptySubsequences: false).drop { $0.hasPrefix("##") }.joined(separator: "\n")
        #expect(body == rendered, "regenerate deploy/nginx/peer-site.conf.example:\n\(rendered)")
    }

    @Test func bareListenersAlsoListenOnIPv6UnlessTurnedOff() throws {
        let tls = "  tls:\n    hostname: shop.example.com\n"
        var site = try parse(Self.minimal + "\n  ipv6: true\n" + tls).nginxSettings.site
        site.tls = NginxSite.TLS(listen: "443", certificatePath: "/c.pem", keyPath: "/k.pem")
        let both = site.render(routingTo: nil)
        #expect(both.contains("    listen 80;\n    listen [::]:80;\n") && both.contains("    listen 443 ssl;\n    listen [::]:443 ssl;\n"), "\(both)")
        site.ipv6 = false
        #expect(!site.render(routingTo: nil).contains("[::]"))
        // An address given: that address only.
        var one = try parse(
            Self.minimal.replacingOccurrences(of: "  server_name:", with: "  listen: 203.0.113.10:80\n  server_name:") + "\n  ipv6: true\n"
        )
        .nginxSettings.site
        one.tls = nil
        #expect(!one.render(routingTo: nil).contains("[::]"))
        #expect(try !parse(Self.minimal + "\n  ipv6: false\n").nginx.ipv6)
    }

    @Test func metricsListenOnLoopbackUnlessToldOtherwise() throws {
        let base = "node: {name: web-1, address: 203.0.113.10}\napp: {name: shop, port: 8080}\nnginx: {server_name: shop.example.com}\n"
        #expect(try parse(base).metrics == PeerConfig.Metrics(host: "127.0.0.1", port: 9464))
        #expect(try parse(base + "metrics:\n  enabled: false\n").metrics == nil)
        #expect(try parse(base + "metrics:\n  listen: 10.0.0.5:9100\n").metrics == PeerConfig.Metrics(host: "10.0.0.5", port: 9100))
        let bad = #expect(throws: ConfigError.self) { try parse(base + "metrics:\n  listen: localhost\n") }
        #expect(bad?.key == "metrics.listen")
    }

    @Test func tlsMistakesAreExplained() throws {
        let base = "node: {name: web-1, address: 203.0.113.10}\napp: {name: shop, port: 8080}\n"
        let badPulls = #expect(throws: ConfigError.self) {
            try parse(base + "nginx:\n  server_name: shop.example.com\n  tls:\n    origin_pulls: maybe\n")
        }
        #expect(badPulls?.key == "nginx.tls.origin_pulls")
        let noCA = #expect(throws: ConfigError.self) {
            try parse(base + "nginx:\n  server_name: shop.example.com\n  tls:\n    origin_pulls: \"on\"\n")
        }
        #expect(noCA?.key == "nginx.tls.origin_pull_ca")
        #expect(noCA?.fix.contains("authenticated_origin_pull_ca.pem") == true)
        let samePort = #expect(throws: ConfigError.self) {
            try parse(base + "nginx:\n  server_name: shop.example.com\n  listen: \"443\"\n  tls:\n    listen: \"443\"\n")
        }
        #expect(samePort?.key == "nginx.tls.listen")
        // No host name to check a certificate against: nothing fails at load, tls set explains.
        let underscore = try parse(base + "nginx:\n  server_name: _\n")
        #expect(underscore.nginx.tlsHostname == nil)
    }

    /// Placeholder files where a mesh section wants them (the loader checks they can be read, and the key's mode).
    static func pkiFiles(keyMode: mode_t = 0o600) throws -> String {
        let dir = NSTemporaryDirectory() + "peer-config-pki-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for file in ["ca.pem", "web-1.pem", "web-1-key.pem"] {
            #expect(FileManager.default.createFile(atPath: "\(dir)/\(file)", contents: Data("placeholder".utf8)))
        }
        chmod("\(dir)/web-1-key.pem", keyMode)
        return dir
    }

    static func meshYAML(
        _ pki: String,
        members: String = "    - name: web-1\n      address: 10.0.0.5:7946\n    - name: web-2\n      address: \"[2001:db8::6]:7946\"\n",
        extra: String = ""
    ) -> String {
        minimal
            + "\nmesh:\n  listen: 10.0.0.5:7946\n  ca: \(pki)/ca.pem\n  cert: \(pki)/web-1.pem\n  key: \(pki)/web-1-key.pem\n\(extra)  members:\n\(members)"
    }

    /// A join file's list is the cluster's configuration when the issuing node's peerd gives it (a member added
    /// online is in no file: a new witness that did not list it would refuse it at TLS and never catch up), its
    /// own file's list otherwise; the new node comes last, once.
    @Test func aJoinFileListsTheClusterConfigurationWhenGiven() throws {
        let pki = try Self.pkiFiles()
        defer { try? FileManager.default.removeItem(atPath: pki) }
        let text = Self.meshYAML(pki)
        let listed = [
            Configuration.Member(id: MemberID("web-1"), address: "10.0.0.5:7946", appNode: true, publicAddress: "203.0.113.10"),
            Configuration.Member(id: MemberID("web-3"), address: "10.0.0.8:7946", appNode: true, publicAddress: "203.0.113.13"),
            Configuration.Member(id: MemberID("vote-1"), address: "10.0.0.7:7946", appNode: false),
        ]
        let derived = try ClusterSetup.derivedConfig(
            from: text, name: "vote-2", address: "203.0.113.14", meshHost: "10.0.0.9", witness: true, listed: listed)
        // The new nodes' certificate files, where their configs name them.
        for name in ["vote-2", "web-3"] {
            for suffix in [".pem", "-key.pem"] {
                try FileManager.default.copyItem(atPath: "\(pki)/web-1\(suffix)", toPath: "\(pki)/\(name)\(suffix)")
            }
        }
        let mesh = try #require(try parse(derived.config).mesh)
        #expect(mesh.members.map(\.name) == ["web-1", "web-3", "vote-1", "vote-2"])
        #expect(mesh.members.map(\.role) == [.node, .node, .witness, .witness])
        #expect(mesh.members.first { $0.name == "web-3" }?.publicAddress == "203.0.113.13")
        // Without the cluster's list: the file's (web-1, web-2), and a name already there refused.
        let fromFile = try ClusterSetup.derivedConfig(from: text, name: "web-3", address: "203.0.113.13", meshHost: "10.0.0.8", witness: false)
        #expect(try #require(try parse(fromFile.config).mesh).members.map(\.name) == ["web-1", "web-2", "web-3"])
        #expect(throws: (any Error).self) {
            try ClusterSetup.derivedConfig(from: text, name: "web-2", address: "203.0.113.11", meshHost: "10.0.0.6", witness: false)
        }
    }

    @Test func meshSectionIsReadWithTheLANProfileByDefault() throws {
        let pki = try Self.pkiFiles()
        defer { try? FileManager.default.removeItem(atPath: pki) }
        let mesh = try #require(try parse(Self.meshYAML(pki)).mesh)
        #expect(mesh.host == "10.0.0.5")
        #expect(mesh.members.map(\.address) == ["10.0.0.5:7946", "[2001:db8::6]:7946"])
        #expect(mesh.membership == .lan)
        let tuned = try #require(try parse(Self.meshYAML(pki, extra: "  profile: wan\n  membership:\n    probe_interval: 2s\n")).mesh)
        #expect(tuned.membership.probeInterval == .seconds(2))
        #expect(tuned.membership.suspicionMax == SWIMSettings.wan.suspicionMax)
    }

    /// A member's DNS record address can come from the shared member list (`public_address`) instead of from what
    /// the member announces; it is kept in the form DNS providers list, must be this node's own node.address, and a
    /// witness has none.
    /// `mesh.allow_from`: networks besides the members' own addresses that may connect to the mesh port; a bad
    /// entry is named with the fix; without the key, anyone may (the certificate check decides).
    @Test func theMeshPortAllowListTakesNetworksAndAlwaysTheMembers() throws {
        let pki = try Self.pkiFiles()
        defer { try? FileManager.default.removeItem(atPath: pki) }
        let open = try #require(try parse(Self.meshYAML(pki)).mesh)
        #expect(open.allowFrom == nil && open.admits("198.51.100.99"))
        let yaml = Self.meshYAML(pki, extra: "  allow_from:\n    - 192.0.2.0/24\n    - 198.51.100.7\n    - 2001:db8:ff::/48\n")
        let mesh = try #require(try parse(yaml).mesh)
        #expect(mesh.allowFrom?.map(\.description) == ["192.0.2.0/24", "198.51.100.7/32", "2001:db8:ff::/48"])
        let allowed = [
            "10.0.0.5", "::ffff:10.0.0.5", "2001:db8::6", "2001:DB8:0:0:0:0:0:6", "192.0.2.200", "198.51.100.7", "2001:db8:ff:1::9",
            "::ffff:192.0.2.1",
        ]
        for allowed in allowed {
            #expect(mesh.admits(allowed), "\(allowed)")
        }
        for refused in ["192.0.3.1", "198.51.100.8", "2001:db8:fe::1", "10.0.0.6", "not an address"] {
            #expect(!mesh.admits(refused), "\(refused)")
        }
        for bad in ["192.0.2.0/33", "example.com", "10.0.0.0/", "10.0.0.0/-1", "::/129"] {
            let message = error(Self.meshYAML(pki, extra: "  allow_from:\n    - \"\(bad)\"\n"))?.description ?? ""
            #expect(message.contains("allow_from") && message.contains("CIDR"), "\(bad): \(message)")
        }
    }

    @Test func publicAddressesInTheMemberListAreCheckedAndCanonical() throws {
        let pki = try Self.pkiFiles()
        defer { try? FileManager.default.removeItem(atPath: pki) }
        let listed = "    - name: web-1\n      address: 10.0.0.5:7946\n      public_address: 203.0.113.10\n"
        let other = "    - name: web-2\n      address: 10.0.0.6:7946\n      public_address: \"2001:DB8:0:0:0:0:0:0B\"\n"
        let mesh = try #require(try parse(Self.meshYAML(pki, members: listed + other)).mesh)
        #expect(mesh.members.map(\.publicAddress) == ["203.0.113.10", "2001:db8::b"])
        #expect(try parse(Self.meshYAML(pki)).mesh?.members.allSatisfy { $0.publicAddress == nil } == true)
        let cases: [(String, String)] = [
            (
                listed.replacingOccurrences(of: "203.0.113.10", with: "203.0.113.99") + other,
                "mesh.members lists web-1 with public_address 203.0.113.99"
            ),
            (listed + other.replacingOccurrences(of: "\"2001:DB8:0:0:0:0:0:0B\"", with: "web-2.example.com"), "not an IPv4 or IPv6 address"),
            (listed + other + "      role: witness\n", "is set on a witness"),
        ]
        for (members, problem) in cases {
            let text = error(Self.meshYAML(pki, members: members))?.description ?? "accepted"
            #expect(text.contains(problem), "\(text)")
        }
    }

    @Test func dnsAndNotifyMistakesAreExplained() throws {
        let pki = try Self.pkiFiles()
        defer { try? FileManager.default.removeItem(atPath: pki) }
        let mesh = Self.meshYAML(pki)
        let readable = pki + "/readable-token"
        #expect(FileManager.default.createFile(atPath: readable, contents: Data("x\n".utf8), attributes: [.posixPermissions: 0o644]))
        let cases: [(String, [String: String], String, String)] = [
            ("dns:\n  zone: example.com\n  name: shop.example.com\n  token_file: \(readable)\n", [:], "dns.token_file", "others can read"),
            ("notify:\n  ntfy:\n    topic: t1\n    server: http://ntfy.example.com\n", [:], "notify.ntfy.server", "must be https"),
            ("notify:\n  ntfy:\n    topic: t1\n    server: http://localhost.evil.example\n", [:], "notify.ntfy.server", "must be https"),
            (
                "notify:\n  pushover:\n    endpoint: http://api.example.com/1\n    token_env: T\n    user_env: T\n", ["T": "x"],
                "notify.pushover.endpoint", "must be https"
            ),
            (Self.minimal + "\ndns:\n  zone: example.com\n  name: shop.example.com\n  token_env: T\n", ["T": "x"], "dns", "needs a mesh"),
            ("dns:\n  zone: example.com\n  name: shop.example.org\n  token_env: T\n", ["T": "x"], "dns.name", "not in zone"),
            ("dns:\n  zone: example.com\n  name: shop.example.com\n", [:], "dns.token", "is missing"),
            ("dns:\n  zone: example.com\n  name: shop.example.com\n  token_env: NOPE\n", [:], "dns.token_env", "not set"),
            ("dns:\n  zone: example.com\n  name: shop.example.com\n  token_env: T\n  token_file: /x\n", ["T": "x"], "dns.token", "more than once"),
            ("dns:\n  zone: example.com\n  name: shop.example.com\n  token_env: T\n  ttl: 30\n", ["T": "x"], "dns.ttl", "1 (automatic) or 60"),
            (
                "dns:\n  zone: example.com\n  zone_id: example.com\n  name: shop.example.com\n  token_env: T\n", ["T": "x"], "dns.zone_id",
                "32 hex digits"
            ),
            ("notify:\n  ntfy:\n    topic: has spaces\n", [:], "notify.ntfy.topic", "letters, digits"),
        ]
        for (extra, env, key, problem) in cases {
            let yaml = extra.hasPrefix(Self.minimal) ? extra : mesh + extra
            let e = try #require(error(yaml, environment: env), "expected an error about \(key)")
            #expect(e.key == key, "\(e)")
            #expect("\(e)".contains(problem), "\(e)")
        }
    }

    @Test func inlineWebhookURLsRequireAPrivateFile() throws {
        let pki = try Self.pkiFiles()
        defer { try? FileManager.default.removeItem(atPath: pki) }
        let path = pki + "/peer.yml"
        try (Self.meshYAML(pki) + "notify:\n  slack:\n    url: https://hooks.slack.com/services/T/B/x\n").write(
            toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o644)
        do {
            _ = try PeerConfig.load(path: path, environment: [:])
            Issue.record("a webhook URL in a world-readable config was accepted")
        } catch {
            #expect(error.key == "notify.slack.url")
            #expect("\(error)".contains("chmod 600"))
        }
        chmod(path, 0o600)
        #expect(try PeerConfig.load(path: path, environment: [:]).notify?.slack == .inline("https://hooks.slack.com/services/T/B/x"))
    }

    @Test func aWitnessNeedsNoAppOrNginx() throws {
        let pki = try Self.pkiFiles()
        defer { try? FileManager.default.removeItem(atPath: pki) }
        let yaml = """
            node:
              name: web-1
              address: 203.0.113.10
            mesh:
              listen: 10.0.0.5:7946
              ca: \(pki)/ca.pem
              cert: \(pki)/web-1.pem
              key: \(pki)/web-1-key.pem
              members:
                - name: web-1
                  address: 10.0.0.5:7946
                  role: witness
                - name: web-2
                  address: 10.0.0.6:7946
            """
        let config = try parse(yaml)
        #expect(config.isWitness)
        // Not a witness: the app section is required again.
        let e = try #require(error(yaml.replacingOccurrences(of: "      role: witness\n", with: "")))
        #expect(e.key == "app")
    }

    @Test func meshMistakesAreExplained() throws {
        let pki = try Self.pkiFiles()
        defer { try? FileManager.default.removeItem(atPath: pki) }
        let cases: [(String, String, String)] = [
            (Self.meshYAML(pki, members: "    - name: web-2\n      address: 10.0.0.6:7946\n"), "mesh.members", "does not list this node"),
            (Self.meshYAML(pki, members: "    - name: web-1\n      address: example.com:7946\n"), "mesh.members[0].address", "not ADDRESS:PORT"),
            (Self.meshYAML(pki, extra: "  profile: fast\n"), "mesh.profile", "lan or wan"),
            (Self.meshYAML(pki, extra: "  membership:\n    probe_timeout: 100ms\n"), "mesh.membership", "probe_timeout must be longer"),
            (Self.meshYAML(pki).replacingOccurrences(of: "\(pki)/ca.pem", with: "/nonexistent/ca.pem"), "mesh.ca", "cannot be read"),
        ]
        for (yaml, key, problem) in cases {
            let e = try #require(error(yaml), "expected an error about \(key)")
            #expect(e.key == key, "\(e)")
            #expect("\(e)".contains(problem), "\(e)")
        }
        let open = try Self.pkiFiles(keyMode: 0o644)
        defer { try? FileManager.default.removeItem(atPath: open) }
        let e = try #require(error(Self.meshYAML(open)))
        #expect(e.key == "mesh.key")
        #expect("\(e)".contains("chmod 600"))
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
        (
            "node:\n  name: web-1\n  address: 203.0.113.10\napp:\n  port: 80\n  labels:\n    dev.peer.app: x\nnginx:\n  server_name: x",
            "app.labels.dev.peer.app"
        ),
        ("node:\n  name: web-1\n  address: 203.0.113.10\napp:\n  port: 80\nnginx:\n  server_name: x\n  listen: 1.2.3:80", "nginx.listen"),
        (
            "node:\n  name: web-1\n  address: 203.0.113.10\napp:\n  port: 80\n  env_file: /nonexistent/app.env\nnginx:\n  server_name: x",
            "app.env_file"
        ),
        (
            "node:\n  name: web-1\n  address: 203.0.113.10\napp:\n  port: 80\nnginx:\n  server_name: x\nregistries:\n  - server: ghcr.io\n    username: bot",
            "registries[0]"
        ),
        (
            "node:\n  name: web-1\n  address: 203.0.113.10\napp:\n  port: 80\nnginx:\n  server_name: x\nregistries:\n  - server: ghcr.io\n    username: bot\n    password_env: NOT_SET",
            "registries[0].password_env"
        ),
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
        #expect(FileManager.default.createFile(atPath: path, contents: Data(yaml.utf8), attributes: [.posixPermissions: 0o644]))
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
