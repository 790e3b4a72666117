import Deployment
import Membership
import Nginx
import Foundation
import PeerCore
import Yams

extension PeerConfig {
    /// Reads and validates a config file. Throws a ``ConfigError`` naming the file, the key and the fix.
    public static func load(path: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws(ConfigError) -> PeerConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            let exists = FileManager.default.fileExists(atPath: path)
            throw ConfigError(
                file: path, key: "", line: nil, problem: exists ? "cannot be read" : "does not exist",
                fix: exists ? "check its permissions (peerd runs as root)" : "create it (see deploy/peer.example.yml) or pass --config PATH")
        }
        return try parse(String(decoding: data, as: UTF8.self), path: path, environment: environment)
    }

    public static func parse(_ text: String, path: String, environment: [String: String] = [:]) throws(ConfigError) -> PeerConfig {
        let root: Yams.Node
        do {
            guard let node = try Yams.compose(yaml: text) else {
                throw ConfigError(file: path, key: "", line: nil, problem: "is empty", fix: "start from deploy/peer.example.yml")
            }
            root = node
        } catch let error as ConfigError {
            throw error
        } catch let error as YamlError {
            throw ConfigError(file: path, key: "", line: Self.line(of: error), problem: "is not valid YAML (\(Self.describe(error)))", fix: "")
        } catch {
            throw ConfigError(file: path, key: "", line: nil, problem: "is not valid YAML (\(error))", fix: "")
        }
        let top = try Section(file: path, key: "", node: root)
        try top.allowOnly(["node", "app", "registries", "nginx", "docker", "state_dir", "control", "mesh", "dns", "notify", "rollout", "metrics"])

        let nodeSection = try top.section("node", required: true)!
        try nodeSection.allowOnly(["name", "address"])
        let nodeName = try nodeSection.string("name", required: true)!
        try nodeSection.check(
            "name", nodeName, isValidPeerName(nodeName), "must be 1-63 lowercase letters, digits or '-', starting with a letter or digit",
            fix: "e.g. web-1")
        // In the one form DNS providers list it: the content of this node's record (DNSPlanner compares them).
        let address = canonicalIPAddress(try nodeSection.string("address", required: true)!)
        try nodeSection.check(
            "address", address, Self.isIPAddress(address), "is not an IPv4 or IPv6 address", fix: "the public address of this VPS, e.g. 203.0.113.10")

        let mesh = try top.section("mesh").map { section throws(ConfigError) in try Self.mesh(section, node: nodeName) }
        if let listed = mesh?.members.first(where: { $0.name == nodeName })?.publicAddress, listed != address {
            throw nodeSection.error(
                "address", problem: "is \(address), but mesh.members lists \(nodeName) with public_address \(listed)",
                fix: "the same address in both (and the same list on every node)")
        }
        // A witness votes for the leader and runs no app: it needs no app: or nginx: section.
        let isWitness = mesh?.members.first { $0.name == nodeName }?.role == .witness
        var appSection = try Self.placeholder(path, "app", "port: 1")
        if let given = try top.section("app", required: !isWitness) { appSection = given }
        try appSection.allowOnly([
            "name", "image", "port", "health", "env", "env_file", "volumes", "restart", "labels", "stop_grace", "drain_timeout",
        ])
        let appName = try appSection.string("name") ?? "app"
        try appSection.check("name", appName, isValidPeerName(appName), "must be lowercase letters, digits or '-'", fix: "e.g. shop")
        let image = try appSection.string("image")
        if let image {
            do { _ = try ImageReference(parsing: image) } catch {
                throw appSection.error("image", problem: error.reason, fix: "e.g. ghcr.io/acme/shop:1.4.2")
            }
        }
        let port = try appSection.int("port", required: true, range: 1...65535)!
        let healthSection = try appSection.section("health")
        try healthSection?.allowOnly(["path", "timeout", "interval", "request_timeout"])
        let healthPath = try healthSection?.string("path") ?? "/health"
        try healthSection?.check(
            "path", healthPath, healthPath.hasPrefix("/") && !healthPath.contains(where: \.isWhitespace), "must start with / and hold no spaces",
            fix: "e.g. /health")
        let health = Health(
            path: healthPath,
            timeout: try healthSection?.duration("timeout", min: .milliseconds(100)) ?? .seconds(60),
            interval: try healthSection?.duration("interval", min: .milliseconds(10), max: .seconds(10)) ?? .milliseconds(100),
            requestTimeout: try healthSection?.duration("request_timeout", min: .milliseconds(10)) ?? .seconds(2))
        let env = try appSection.stringMap("env")
        for key in env.keys where !Self.isEnvName(key) {
            throw appSection.error("env.\(key)", problem: "is not a valid environment variable name", fix: "use letters, digits and _")
        }
        let envFile = try appSection.string("env_file")
        if let envFile {
            do { _ = try EnvFile.read(envFile) } catch {
                throw appSection.error("env_file", problem: "\(error)", fix: "create the file or remove the key")
            }
        }
        let volumes = try appSection.stringList("volumes")
        for volume in volumes where volume.split(separator: ":").count < 2 {
            throw appSection.error("volumes", problem: "\"\(volume)\" is not SOURCE:TARGET[:ro]", fix: "e.g. /srv/shop/data:/data")
        }
        let restart = try appSection.string("restart") ?? "unless-stopped"
        try appSection.check(
            "restart", restart, ["no", "always", "unless-stopped", "on-failure"].contains(restart),
            "must be one of no, always, unless-stopped, on-failure", fix: "unless-stopped keeps the app up across reboots")
        let labels = try appSection.stringMap("labels")
        if let reserved = labels.keys.first(where: { $0.hasPrefix("dev.peer.") }) {
            throw appSection.error(
                "labels.\(reserved)", problem: "the dev.peer. prefix is reserved for peer's own labels", fix: "choose another label key")
        }
        let app = App(
            name: appName, image: image, port: port, health: health, env: env, envFile: envFile, volumes: volumes,
            restart: restart, labels: labels,
            stopGrace: try appSection.duration("stop_grace") ?? .seconds(10),
            drainTimeout: try appSection.duration("drain_timeout", min: .milliseconds(100)) ?? .seconds(30))

        var registries: [Registry] = []
        for entry in try top.sectionList("registries") {
            try entry.allowOnly(["server", "username", "password", "password_env", "password_file"])
            let server = try entry.string("server", required: true)!
            let username = try entry.string("username", required: true)!
            guard ["password", "password_env", "password_file"].filter({ entry.value($0) != nil }).count == 1 else {
                throw entry.error(
                    "", problem: "needs exactly one of password, password_env, password_file",
                    fix: "password_file: /etc/peer/registry-token (mode 0600) keeps the secret out of this file")
            }
            let secret = try Self.secret(entry, "password", path: path, environment: environment, required: true)!
            registries.append(Registry(server: server, username: username, password: secret))
        }

        var nginxSection = try Self.placeholder(path, "nginx", "server_name: witness.invalid")
        if let given = try top.section("nginx", required: !isWitness) { nginxSection = given }
        try nginxSection.allowOnly(["site", "listen", "server_name", "binary", "prefix", "config", "pid_file", "custom_include", "tls", "ipv6"])
        let listen = try nginxSection.string("listen") ?? "80"
        try nginxSection.check("listen", listen, Self.isListen(listen), "must be PORT, ADDRESS:PORT or [IPv6]:PORT", fix: "e.g. 80 or 127.0.0.2:8080")
        let serverName = try nginxSection.string("server_name", required: true)!
        try nginxSection.check(
            "server_name", serverName, !serverName.contains(";") && !serverName.contains("{") && !serverName.isEmpty,
            "must be host names separated by spaces", fix: "e.g. shop.example.com")
        var nginx = Nginx(
            site: try nginxSection.string("site") ?? "/etc/nginx/conf.d/peer-\(appName).conf",
            listen: listen, serverName: serverName,
            binary: try nginxSection.string("binary") ?? "nginx",
            prefix: try nginxSection.string("prefix"), config: try nginxSection.string("config"),
            pidFile: try nginxSection.string("pid_file") ?? "/run/nginx.pid",
            customInclude: try nginxSection.string("custom_include"))
        // AAAA records reach the app only if nginx listens on IPv6 too; a machine without IPv6 cannot bind it.
        nginx.ipv6 = try nginxSection.bool("ipv6") ?? FileManager.default.fileExists(atPath: "/proc/net/if_inet6")
        if let section = try nginxSection.section("tls") {
            try section.allowOnly(["listen", "hostname", "origin_pulls", "origin_pull_ca"])
            var tls = Nginx.TLS()
            tls.listen = try section.string("listen") ?? "443"
            try section.check("listen", tls.listen, Self.isListen(tls.listen), "must be PORT, ADDRESS:PORT or [IPv6]:PORT", fix: "e.g. 443")
            try section.check("listen", tls.listen, tls.listen != listen, "is also nginx.listen", fix: "HTTPS needs its own port, e.g. 443")
            if let hostname = try section.string("hostname") {
                try section.check(
                    "hostname", hostname,
                    hostname.range(of: "^[A-Za-z0-9*]([-A-Za-z0-9.]*[A-Za-z0-9])?$", options: .regularExpression) != nil && hostname.contains("."),
                    "is not a host name", fix: "the name Cloudflare proxies, e.g. shop.example.com")
                tls.hostname = hostname
            }
            let pulls = try section.string("origin_pulls") ?? "off"
            guard let originPulls = NginxSite.TLS.OriginPulls(rawValue: pulls) else {
                throw section.error(
                    "origin_pulls", problem: "\"\(pulls)\" must be off, optional or on",
                    fix: "optional while you turn on Authenticated Origin Pulls at Cloudflare, then on")
            }
            tls.originPulls = originPulls
            tls.originPullCA = try section.string("origin_pull_ca")
            if originPulls != .off {
                guard let ca = tls.originPullCA else {
                    throw section.error(
                        "origin_pull_ca", problem: "is missing (origin_pulls is \(pulls))",
                        fix: "download https://developers.cloudflare.com/ssl/static/authenticated_origin_pull_ca.pem to /etc/peer/ and name it here")
                }
                try section.check(
                    "origin_pull_ca", ca, FileManager.default.isReadableFile(atPath: ca), "cannot be read",
                    fix: "download https://developers.cloudflare.com/ssl/static/authenticated_origin_pull_ca.pem to that path")
            }
            nginx.tls = tls
        }

        let dockerSection = try top.section("docker")
        try dockerSection?.allowOnly(["socket"])
        let controlSection = try top.section("control")
        try controlSection?.allowOnly(["socket"])

        var dns: DNS?
        if let section = try top.section("dns") {
            guard mesh != nil else {
                throw section.error(
                    "", problem: "needs a mesh: section", fix: "DNS failover is done by the cluster's leader; configure the mesh first")
            }
            try section.allowOnly([
                "provider", "api_base", "zone", "zone_id", "name", "token", "token_env", "token_file", "proxied", "ttl", "hold_down", "refresh",
            ])
            let provider = try section.string("provider") ?? "cloudflare"
            try section.check("provider", provider, provider == "cloudflare", "must be cloudflare", fix: "cloudflare is the only provider so far")
            let zone = try section.string("zone", required: true)!
            let name = try section.string("name", required: true)!
            try section.check(
                "name", name, name.lowercased() == zone.lowercased() || name.lowercased().hasSuffix("." + zone.lowercased()),
                "is not in zone \(zone)", fix: "the app's host name, e.g. shop.\(zone)")
            let apiBase = try section.string("api_base") ?? "https://api.cloudflare.com/client/v4"
            try section.check(
                "api_base", apiBase, Self.isPrivateURL(apiBase),
                "must be https:// (plain http only to a local stand-in)", fix: "leave it out for the real API")
            let ttl = try section.int("ttl", range: 1...86400) ?? 1
            try section.check("ttl", "\(ttl)", ttl == 1 || ttl >= 60, "must be 1 (automatic) or 60–86400", fix: "1")
            dns = DNS(
                apiBase: apiBase.hasSuffix("/") ? String(apiBase.dropLast()) : apiBase, zone: zone, name: name,
                token: try Self.secret(section, "token", path: path, environment: environment, required: true)!,
                proxied: try section.bool("proxied") ?? true, ttl: ttl,
                holdDown: try section.duration("hold_down") ?? .seconds(10),
                refresh: try section.duration("refresh", min: .seconds(5)) ?? .seconds(60))
            if let zoneID = try section.string("zone_id") {
                try section.check(
                    "zone_id", zoneID, zoneID.count == 32 && zoneID.allSatisfy(\.isHexDigit), "is not a zone id (32 hex digits)",
                    fix: "copy it from the zone's overview page in the Cloudflare dashboard (API › Zone ID), or leave it out")
                dns?.zoneID = zoneID.lowercased()
            }
        }
        var notify: Notify?
        if let section = try top.section("notify") {
            try section.allowOnly(["ntfy", "pushover", "slack", "discord"])
            var n = Notify()
            if let s = try section.section("ntfy") {
                try s.allowOnly(["server", "topic", "token", "token_env", "token_file"])
                let topic = try s.string("topic", required: true)!
                try s.check(
                    "topic", topic, topic.range(of: "^[-_A-Za-z0-9]{1,64}$", options: .regularExpression) != nil,
                    "must be 1–64 letters, digits, - or _", fix: "a long random topic: it works like a password")
                let server = try s.string("server") ?? "https://ntfy.sh"
                try s.check(
                    "server", server, Self.isPrivateURL(server),
                    "must be https:// (the topic works like a password; plain http only to this machine)",
                    fix: "https://ntfy.sh or your server's https:// address")
                n.ntfy = .init(
                    server: server, topic: topic,
                    token: try Self.secret(s, "token", path: path, environment: environment, required: false))
            }
            if let s = try section.section("pushover") {
                try s.allowOnly(["endpoint", "token", "token_env", "token_file", "user", "user_env", "user_file"])
                let endpoint = try s.string("endpoint") ?? "https://api.pushover.net/1/messages.json"
                try s.check(
                    "endpoint", endpoint, Self.isPrivateURL(endpoint), "must be https:// (it carries the token; plain http only to this machine)",
                    fix: "leave it out for the real API")
                n.pushover = .init(
                    endpoint: endpoint,
                    token: try Self.secret(s, "token", path: path, environment: environment, required: true)!,
                    user: try Self.secret(s, "user", path: path, environment: environment, required: true)!)
            }
            for kind in ["slack", "discord"] {
                guard let s = try section.section(kind) else { continue }
                try s.allowOnly(["url", "url_env", "url_file"])
                let url = try Self.secret(s, "url", path: path, environment: environment, required: true)!
                if kind == "slack" { n.slack = url } else { n.discord = url }
            }
            notify = n
        }

        var config = PeerConfig(
            path: path, node: Node(name: nodeName, address: address), app: app, registries: registries, nginx: nginx,
            dockerSocket: try dockerSection?.string("socket") ?? "/var/run/docker.sock",
            stateDirectory: try top.string("state_dir") ?? "/var/lib/peer",
            controlSocket: try controlSection?.string("socket") ?? "/run/peer/peerd.sock",
            mesh: mesh, dns: dns, notify: notify)
        if let section = try top.section("metrics") {
            try section.allowOnly(["enabled", "listen"])
            if try section.bool("enabled") == false {
                config.metrics = nil
            } else if let listen = try section.string("listen") {
                guard let (host, port) = Self.hostPort(listen) else {
                    throw section.error(
                        "listen", problem: "\"\(listen)\" is not ADDRESS:PORT with an IP address",
                        fix: "e.g. 127.0.0.1:9464 (loopback: scrape it through an SSH tunnel or a local agent)")
                }
                config.metrics = Metrics(host: host, port: port)
            }
        }
        if let section = try top.section("rollout") {
            try section.allowOnly(["order", "settle", "node_timeout", "parallel", "down_nodes"])
            let downText = try section.string("down_nodes") ?? "wait"
            guard let downNodes = RolloutSettings.DownNodes(rawValue: downText) else {
                throw section.error(
                    "down_nodes", problem: "must be wait or skip",
                    fix:
                        "wait: the rollout waits node_timeout for a node that is down, then fails and is undone; skip: it goes on and the node catches up when back"
                )
            }
            let order = try section.stringList("order")
            if let mesh {
                for name in order where !mesh.members.contains(where: { $0.name == name && $0.role == .node }) {
                    throw section.error(
                        "order", problem: "\(name) is not an app node of mesh.members", fix: "list node names from mesh.members (not witnesses)")
                }
            }
            config.rollout = RolloutSettings(
                order: order, settle: try section.duration("settle") ?? .seconds(1),
                nodeTimeout: try section.duration("node_timeout", min: .seconds(1)) ?? .seconds(120),
                parallel: try section.int("parallel", range: 1...100) ?? 1, downNodes: downNodes)
        }
        return config
    }

    static func placeholder(_ path: String, _ key: String, _ yaml: String) throws(ConfigError) -> Section {
        do {
            return try Section(file: path, key: key, node: try Yams.compose(yaml: yaml)!)
        } catch {
            throw ConfigError(file: path, key: key, line: nil, problem: "internal: \(error)", fix: "")
        }
    }

    /// `KEY`, `KEY_env` or `KEY_file` (exactly one): inline only in a file others cannot read.
    static func secret(_ section: Section, _ key: String, path: String, environment: [String: String], required: Bool) throws(ConfigError) -> Secret?
    {
        let options = try [
            section.string(key).map(Secret.inline), section.string(key + "_env").map(Secret.environment),
            section.string(key + "_file").map(Secret.file),
        ].compactMap { $0 }
        guard options.count <= 1 else {
            throw section.error(key, problem: "is given more than once (\(key), \(key)_env, \(key)_file)", fix: "keep one")
        }
        guard let secret = options.first else {
            if required {
                throw section.error(
                    key, problem: "is missing", fix: "set \(key)_file: (a 0600 file) or \(key)_env: (an environment variable of peerd)")
            }
            return nil
        }
        switch secret {
        case .inline:
            if let mode = Self.mode(of: path), mode & 0o077 != 0 {
                throw section.error(
                    key, problem: "is a secret in a file others can read (mode \(String(mode, radix: 8)))",
                    fix: "chmod 600 \(path), or use \(key)_file / \(key)_env")
            }
        case .environment(let name):
            if environment[name] == nil {
                throw section.error(
                    key + "_env", problem: "names $\(name), which is not set", fix: "set it in peerd's environment (systemd: EnvironmentFile=)")
            }
        case .file(let file):
            if !FileManager.default.isReadableFile(atPath: file) {
                throw section.error(key + "_file", problem: "\(file) cannot be read", fix: "create it with mode 0600")
            }
            if let mode = Self.mode(of: file), mode & 0o077 != 0 {
                throw section.error(
                    key + "_file", problem: "\(file) holds a secret and others can read it (mode \(String(mode, radix: 8)))",
                    fix: "chmod 600 \(file)")
            }
        }
        return secret
    }

    // MARK: - Value rules

    /// An address a secret may be sent to: https, or plain http to this machine (a local stand-in).
    static func isPrivateURL(_ url: String) -> Bool {
        if url.hasPrefix("https://") { return true }
        guard url.hasPrefix("http://"), let host = URLComponents(string: url)?.host?.lowercased() else { return false }
        return host == "localhost" || host == "::1" || host == "[::1]" || (host.hasPrefix("127.") && isIPAddress(host))
    }

    static func isEnvName(_ s: String) -> Bool {
        guard let first = s.first, first == "_" || (first.isASCII && first.isLetter) else { return false }
        return s.allSatisfy { $0 == "_" || ($0.isASCII && ($0.isLetter || $0.isNumber)) }
    }

    public static func isIPAddress(_ s: String) -> Bool { ipAddressBytes(s) != nil }

    static func isListen(_ s: String) -> Bool {
        let (host, port) = (s.lastIndex(of: ":").map { (String(s[..<$0]), String(s[s.index(after: $0)...])) }) ?? (nil, s)
        guard let number = Int(port), (1...65535).contains(number) else { return false }
        guard let host else { return true }
        if host == "*" { return true }
        if host.hasPrefix("[") && host.hasSuffix("]") { return isIPAddress(String(host.dropFirst().dropLast())) }
        return isIPAddress(host)
    }

    static func mode(of path: String) -> Int? {
        (try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? nil
    }

    static func line(of error: YamlError) -> Int? {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _): mark.line
        default: nil
        }
    }

    static func describe(_ error: YamlError) -> String {
        switch error {
        case .scanner(_, let problem, _, _), .parser(_, let problem, _, _), .composer(_, let problem, _, _): problem
        default: "\(error)"
        }
    }
}
