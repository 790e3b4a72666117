import Deployment

/// The nginx server block peer manages, rendered from settings and the instance it routes to.
public struct NginxSite: Sendable, Hashable {
    public var appName: String
    /// `80`, `127.0.0.2:80`, `0.0.0.0:8080`, `[::]:80`.
    public var listen: String
    public var serverName: String
    public var healthPath: String
    /// Addresses allowed to call the verify location besides loopback (this node's own address).
    public var verifyAllow: [String]
    /// A file of the user's own directives for this server block, included if it exists; peer never writes it.
    public var customInclude: String?
    /// The HTTPS listener with the origin certificate, once one is installed (`peerctl tls set`).
    public var tls: TLS?
    /// A listener given as a bare port listens on IPv6 too (`listen [::]:PORT`): an AAAA record must reach the app.
    public var ipv6: Bool

    /// nginx's side of Cloudflare → origin TLS.
    public struct TLS: Sendable, Hashable {
        /// Authenticated Origin Pulls: whether nginx asks for Cloudflare's client certificate
        /// (`ssl_verify_client`). `optional` accepts both while AOP is being switched on at Cloudflare.
        public enum OriginPulls: String, Sendable, Hashable, CaseIterable { case off, optional, on }
        /// `443`, `127.0.0.2:443`, `[::]:443`.
        public var listen: String
        public var certificatePath: String
        public var keyPath: String
        public var originPulls: OriginPulls
        /// The CA that signs the client certificate Cloudflare presents (authenticated_origin_pull_ca.pem).
        public var originPullCA: String?

        public init(listen: String, certificatePath: String, keyPath: String, originPulls: OriginPulls = .off, originPullCA: String? = nil) {
            self.listen = listen
            self.certificatePath = certificatePath
            self.keyPath = keyPath
            self.originPulls = originPulls
            self.originPullCA = originPullCA
        }

        /// The host:port to reach the HTTPS listener from this machine.
        public var localEndpoint: (host: String, port: Int) { NginxSite.local(listen, defaultPort: 443) }
    }

    public init(
        appName: String, listen: String, serverName: String, healthPath: String, verifyAllow: [String] = [],
        customInclude: String? = nil, tls: TLS? = nil, ipv6: Bool = false
    ) {
        self.tls = tls
        self.ipv6 = ipv6
        self.appName = appName
        self.listen = listen
        self.serverName = serverName
        self.healthPath = healthPath
        self.verifyAllow = verifyAllow
        self.customInclude = customInclude
    }

    /// The location peer requests through the public listener to prove a reload took effect.
    public static let verifyPath = "/.peer/verify"
    public static let generationHeader = "X-Peer-Generation"
    static let routeMarker = "# peer-route:"

    var upstreamName: String {
        "peer_" + String(appName.map { $0.isLetter || $0.isNumber ? $0 : "_" })
    }

    /// The host:port to reach the listener from this machine.
    public var localEndpoint: (host: String, port: Int) { Self.local(listen, defaultPort: 80) }

    static func local(_ listen: String, defaultPort: Int) -> (host: String, port: Int) {
        let (host, port) = Self.split(listen, defaultPort: defaultPort)
        switch host {
        case nil, "*", "0.0.0.0": return ("127.0.0.1", port)
        case "[::]": return ("[::1]", port)
        case let host?: return (host, port)
        }
    }

    static func split(_ listen: String, defaultPort: Int = 80) -> (host: String?, port: Int) {
        if let colon = listen.lastIndex(of: ":"), !listen.hasSuffix("]") {
            return (String(listen[..<colon]), Int(listen[listen.index(after: colon)...]) ?? defaultPort)
        }
        return (nil, Int(listen) ?? defaultPort)
    }

    /// Whether only Cloudflare gets the app: Authenticated Origin Pulls `on`. The plain listener then serves peer's
    /// own checks and redirects everything else to HTTPS, where nginx asks for Cloudflare's client certificate
    /// (a plain listener serving the app on every interface would bypass it).
    public var onlyCloudflare: Bool { tls?.originPulls == .on && tls?.originPullCA != nil }

    /// The variable holding `CF-Connecting-IP` when the request came from Cloudflare (its client certificate
    /// verified), empty otherwise: anyone can send the header, so it is passed on only when it is Cloudflare's.
    var cloudflareClientIP: String { tls == nil ? "\"\"" : "$" + upstreamName + "_cf_connecting_ip" }

    public func render(routingTo instance: AppInstance?) -> String {
        var lines: [String] = [
            "# Managed by peerd: rewritten on every deploy. Do not edit; put your own directives in",
            "# \(customInclude ?? "(no custom include configured: set nginx.custom_include)").",
        ]
        if let instance {
            lines.append(
                "\(Self.routeMarker) generation=\(instance.generation) port=\(instance.hostPort) container=\(instance.containerName) image=\(instance.image)"
            )
            lines += [
                "upstream \(upstreamName) {",
                "    server 127.0.0.1:\(instance.hostPort) max_fails=0;",
                "    keepalive 32;",
                "}",
            ]
        } else {
            lines.append("\(Self.routeMarker) none")
        }
        if tls != nil {
            lines += [
                "map $ssl_client_verify \(cloudflareClientIP) {",
                "    SUCCESS $http_cf_connecting_ip;",
                "    default \"\";",
                "}",
            ]
        }
        if onlyCloudflare {
            // The plain listener: peer's checks, and a redirect for everyone else.
            lines += ["server {"] + listens(listen) + ["    server_name \(serverName);"]
            lines += verifyLocation(instance)
            let port = tls.map { Self.split($0.listen, defaultPort: 443).port } ?? 443
            let authority = port == 443 ? "$host" : "$host:\(port)"
            lines += ["    location / {", "        return 308 https://\(authority)$request_uri;", "    }", "}"]
            lines += ["server {", "    server_name \(serverName);"]
            lines += tlsDirectives
            lines += customDirectives
            lines += appLocations(instance)
            lines.append("}")
        } else {
            lines += ["server {"] + listens(listen) + ["    server_name \(serverName);"]
            lines += tlsDirectives
            lines += customDirectives
            lines += verifyLocation(instance)
            lines += appLocations(instance)
            lines.append("}")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private var tlsDirectives: [String] {
        guard let tls else { return [] }
        var lines = listens(tls.listen, " ssl")
        lines += [
            "    ssl_certificate \(tls.certificatePath);",
            "    ssl_certificate_key \(tls.keyPath);",
            "    ssl_protocols TLSv1.2 TLSv1.3;",
            "    ssl_session_cache shared:peer_tls:10m;",
            "    ssl_session_timeout 1d;",
        ]
        if tls.originPulls != .off, let ca = tls.originPullCA {
            lines += [
                "    ssl_client_certificate \(ca);",
                "    ssl_verify_client \(tls.originPulls.rawValue);",
            ]
        }
        return lines
    }

    /// `listen` lines for one listener: and its IPv6 twin when it is a bare port and ``ipv6`` is on.
    private func listens(_ listen: String, _ parameters: String = "") -> [String] {
        let both = ipv6 && Self.split(listen).host == nil
        return ["    listen \(listen)\(parameters);"] + (both ? ["    listen [::]:\(listen)\(parameters);"] : [])
    }

    private var customDirectives: [String] { customInclude.map { ["    include \($0);"] } ?? [] }

    /// Where peer proves a reload took effect: this machine and the node's own addresses only.
    private func verifyLocation(_ instance: AppInstance?) -> [String] {
        guard let instance else { return [] }
        var lines = [
            "    location = \(Self.verifyPath) {",
            "        allow 127.0.0.0/8;",
            "        allow ::1;",
        ]
        lines += verifyAllow.map { "        allow \($0);" }
        lines += [
            "        deny all;",
            "        proxy_pass http://\(upstreamName)\(healthPath);",
            "        proxy_http_version 1.1;",
            "        proxy_set_header Connection \"\";",
            "        add_header \(Self.generationHeader) \(instance.generation) always;",
            "    }",
        ]
        return lines
    }

    private func appLocations(_ instance: AppInstance?) -> [String] {
        guard instance != nil else {
            return [
                "    location / {",
                "        return 503 \"no healthy instance deployed yet\\n\";",
                "    }",
            ]
        }
        return [
            "    location / {",
            "        proxy_pass http://\(upstreamName);",
            "        proxy_http_version 1.1;",
            "        proxy_set_header Connection \"\";",
            "        proxy_set_header Host $host;",
            "        proxy_set_header X-Real-IP $remote_addr;",
            "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "        proxy_set_header X-Forwarded-Proto $scheme;",
            "        proxy_set_header CF-Connecting-IP \(cloudflareClientIP);",
            "    }",
        ]
    }

    /// The generation and port a rendered file routes to (nil for none or a file peer did not write).
    public static func parseRoute(_ text: String) -> (generation: Int, hostPort: Int)? {
        parseInstance(text).map { ($0.generation, $0.hostPort) }
    }

    /// The instance a rendered file routes to, as far as the file says (no container ID).
    public static func parseInstance(_ text: String) -> AppInstance? {
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(routeMarker) }) else { return nil }
        var fields: [String: String] = [:]
        for pair in line.dropFirst(routeMarker.count).split(separator: " ") {
            let kv = pair.split(separator: "=", maxSplits: 1)
            if kv.count == 2 { fields[String(kv[0])] = String(kv[1]) }
        }
        guard let generation = fields["generation"].flatMap(Int.init), let port = fields["port"].flatMap(Int.init) else { return nil }
        return AppInstance(
            generation: generation, image: fields["image"] ?? "", containerID: "", containerName: fields["container"] ?? "", hostPort: port)
    }
}
