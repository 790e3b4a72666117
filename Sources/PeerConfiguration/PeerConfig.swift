import Deployment
import Membership
import Foundation
import Nginx
import PeerCore

/// One node's configuration, loaded from `/etc/peer/peer.yml` (or `--config`). Every key is documented in
/// docs/configuration.md; ``PeerConfig/load(path:environment:)`` explains any mistake by file, key and fix.
public struct PeerConfig: Sendable, Hashable {
    public static let defaultPath = "/etc/peer/peer.yml"

    public struct Node: Sendable, Hashable {
        /// Unique in the cluster; used in container names and labels.
        public var name: String
        /// The address this node's DNS record points at (public IPv4 or IPv6).
        public var address: String
    }

    public struct Health: Sendable, Hashable {
        public var path: String
        /// How long a new container may take to pass its health check.
        public var timeout: Duration
        public var interval: Duration
        /// Timeout of one health request.
        public var requestTimeout: Duration
    }

    public struct App: Sendable, Hashable {
        public var name: String
        /// Deployed at first start when nothing of peer's runs yet (optional).
        public var image: String?
        /// The port the app listens on inside the container.
        public var port: Int
        public var health: Health
        public var env: [String: String]
        public var envFile: String?
        public var volumes: [String]
        public var restart: String
        public var labels: [String: String]
        public var stopGrace: Duration
        public var drainTimeout: Duration
    }

    public struct Registry: Sendable, Hashable {
        public var server: String
        public var username: String
        public var password: PeerConfig.Secret
    }

    public struct Nginx: Sendable, Hashable {
        public var site: String
        public var listen: String
        public var serverName: String
        public var binary: String
        /// `-p` for a non-system nginx (the test bed's).
        public var prefix: String?
        /// `-c`: nginx's main config file, when not the default.
        public var config: String?
        public var pidFile: String
        public var customInclude: String?
        public var tls = TLS()
        /// Bare-port listeners also on IPv6 (`nginx.ipv6`; by default when this machine has IPv6).
        public var ipv6 = false

        /// The HTTPS listener, served once an origin certificate is installed (`peerctl tls set`).
        public struct TLS: Sendable, Hashable {
            public var listen = "443"
            /// The name the certificate must cover (default: the first name of `server_name`).
            public var hostname: String?
            public var originPulls: NginxSite.TLS.OriginPulls = .off
            public var originPullCA: String?
        }

        /// The host name an origin certificate must cover, or nil when none is configured.
        public var tlsHostname: String? {
            if let hostname = tls.hostname { return hostname }
            guard let first = serverName.split(separator: " ").first.map(String.init), first != "_", !first.contains("*"), first.contains(".") else {
                return nil
            }
            return first
        }
    }

    /// The mutual-TLS mesh to the other members (absent: this node runs alone).
    public struct Mesh: Sendable, Hashable {
        public struct Member: Sendable, Hashable {
            public enum Role: String, Sendable, Hashable { case node, witness }
            public var name: String
            public var host: String
            public var port: Int
            /// A witness votes in the leader lease but runs no app, has no DNS record and never leads.
            public var role: Role = .node
            /// Its public address (its DNS record), canonical: what the leader writes for it. nil: the address the
            /// member announces about itself (its `node.address`), as before this field.
            public var publicAddress: String?
            public var address: String { PeerConfig.hostPortString(host, port) }
        }
        /// TCP (mutual TLS) and UDP (sealed datagrams) on the same address and port.
        public var host: String
        public var port: Int
        public var ca: String
        public var certificate: String
        public var key: String
        /// Every member of the cluster, this node included.
        public var members: [Member]
        public var profile: String
        public var membership: SWIMSettings
        /// `allow_from`: the networks besides the members' own addresses that may open a connection to the mesh
        /// port (operators, CI). nil: anyone (the certificate check still decides). A connection from elsewhere is
        /// closed as it arrives, before any TLS work.
        public var allowFrom: [NetworkPrefix]? = nil

        /// Whether a connection from the source address `address` may go on to its TLS handshake: a member's mesh
        /// address (an IPv4 one also as an IPv4-mapped IPv6 source, on a dual-stack listener), or in `allow_from`.
        public func admits(_ address: String) -> Bool {
            guard let allowFrom else { return true }
            return members.contains { NetworkPrefix($0.host)?.contains(address) == true } || allowFrom.contains { $0.contains(address) }
        }
    }

    /// A secret: inline (only in a 0600 config), from an environment variable, or from a file.
    public enum Secret: Sendable, Hashable {
        case inline(String)
        case environment(String)
        case file(String)
    }

    /// DNS failover (Cloudflare).
    public struct DNS: Sendable, Hashable {
        public var apiBase: String
        public var zone: String
        /// The zone's id (32 hex digits), when given: the token then needs DNS Edit only.
        public var zoneID: String? = nil
        /// The app's name, e.g. shop.example.com: one A/AAAA record per serving node.
        public var name: String
        public var token: Secret
        public var proxied: Bool
        public var ttl: Int
        /// A node that serves again waits this long before its record returns.
        public var holdDown: Duration
        /// The records are listed again at least this often (someone may have edited them).
        public var refresh: Duration
    }

    /// Notification backends (any number of them).
    public struct Notify: Sendable, Hashable {
        public struct Ntfy: Sendable, Hashable {
            public var server: String
            public var topic: String
            public var token: Secret?
        }
        public struct Pushover: Sendable, Hashable {
            public var endpoint: String
            public var token: Secret
            public var user: Secret
        }
        public var ntfy: Ntfy?
        public var pushover: Pushover?
        /// Webhook URLs are secrets (anyone holding one can post).
        public var slack: Secret?
        public var discord: Secret?
    }

    /// How cluster deploys roll (on a mesh).
    public struct RolloutSettings: Sendable, Hashable {
        /// Nodes in this order first (the rest by name after them).
        public var order: [String]
        /// How long a node must have served the new version healthily before the next one starts.
        public var settle: Duration
        /// How long to wait for a node that is down before failing (and undoing) the rollout.
        public var nodeTimeout: Duration
        /// Nodes swapping at the same time.
        public var parallel: Int = 1
        public enum DownNodes: String, Sendable, Hashable { case wait, skip }
        /// A node that is down when its turn comes: wait for it (up to `nodeTimeout`, then fail), or skip it.
        public var downNodes: DownNodes = .wait
    }

    public var path: String
    public var node: Node
    public var app: App
    public var registries: [Registry]
    public var nginx: Nginx
    public var dockerSocket: String
    public var stateDirectory: String
    public var controlSocket: String
    public var mesh: Mesh?
    public var dns: DNS?
    public var notify: Notify?
    public var rollout = RolloutSettings(order: [], settle: .seconds(1), nodeTimeout: .seconds(120))
    /// The Prometheus endpoint (`GET /metrics`); nil when turned off.
    public var metrics: Metrics? = Metrics(host: "127.0.0.1", port: 9464)

    public struct Metrics: Sendable, Hashable {
        public var host: String
        public var port: Int
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
    }

    /// This node only votes in the leader lease (its own `mesh.members` entry says `role: witness`): no app,
    /// no nginx, no DNS record.
    public var isWitness: Bool {
        guard let mesh else { return false }
        let name = node.name
        return mesh.members.contains { $0.name == name && $0.role == .witness }
    }

    /// The swap's timing settings.
    public var swapSettings: Swap.Settings {
        Swap.Settings(
            healthInterval: app.health.interval, healthTimeout: app.health.timeout,
            drainTimeout: app.drainTimeout, stopGrace: app.stopGrace)
    }

    /// The nginx adapter's settings for this node (peerd and the tests wire nginx through this one place).
    public var nginxSettings: NginxProxy.Settings {
        NginxProxy.Settings(
            site: NginxSite(
                appName: app.name, listen: nginx.listen, serverName: nginx.serverName, healthPath: app.health.path,
                verifyAllow: [node.address], customInclude: nginx.customInclude, ipv6: nginx.ipv6),
            sitePath: nginx.site, binary: nginx.binary, arguments: nginxArguments, pidFile: nginx.pidFile)
    }

    /// Where this node keeps the installed origin certificate and key (0600), named by the certificate's
    /// fingerprint so that a new pair never overwrites the one nginx serves until nginx took the new one.
    public func originFiles(fingerprint: String) -> (certificate: String, key: String) {
        let base = stateDirectory + "/tls/origin-" + fingerprint.prefix(16)
        return (base + ".pem", base + "-key.pem")
    }

    /// nginx's TLS settings for an installed origin certificate.
    public func nginxTLS(fingerprint: String) -> NginxSite.TLS {
        let files = originFiles(fingerprint: fingerprint)
        return NginxSite.TLS(
            listen: nginx.tls.listen, certificatePath: files.certificate, keyPath: files.key, originPulls: nginx.tls.originPulls,
            originPullCA: nginx.tls.originPullCA)
    }

    /// The nginx arguments that select a non-system instance.
    public var nginxArguments: [String] {
        (nginx.prefix.map { ["-p", $0] } ?? []) + (nginx.config.map { ["-c", $0] } ?? [])
    }
}

/// A configuration mistake: which file, which key, what is wrong, how to fix it.
public struct ConfigError: Error, CustomStringConvertible, Sendable, Hashable {
    public var file: String
    public var key: String
    public var line: Int?
    public var problem: String
    public var fix: String

    public var description: String {
        let location = line.map { "\(file):\($0)" } ?? file
        let subject = key.isEmpty ? "" : " \(key):"
        return "\(location):\(subject) \(problem)" + (fix.isEmpty ? "" : ". Fix: \(fix)")
    }
}
