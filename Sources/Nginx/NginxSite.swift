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

    public init(
        appName: String, listen: String, serverName: String, healthPath: String, verifyAllow: [String] = [],
        customInclude: String? = nil
    ) {
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
    public var localEndpoint: (host: String, port: Int) {
        let (host, port) = Self.split(listen)
        switch host {
        case nil, "*", "0.0.0.0": return ("127.0.0.1", port)
        case "[::]": return ("[::1]", port)
        case let host?: return (host, port)
        }
    }

    static func split(_ listen: String) -> (host: String?, port: Int) {
        if let colon = listen.lastIndex(of: ":"), !listen.hasSuffix("]") {
            return (String(listen[..<colon]), Int(listen[listen.index(after: colon)...]) ?? 80)
        }
        return (nil, Int(listen) ?? 80)
    }

    public func render(routingTo instance: AppInstance?) -> String {
        var lines: [String] = [
            "# Managed by peerd: rewritten on every deploy. Do not edit; put your own directives in",
            "# \(customInclude ?? "(no custom include configured: set nginx.custom_include)").",
        ]
        if let instance {
            lines.append("\(Self.routeMarker) generation=\(instance.generation) port=\(instance.hostPort) container=\(instance.containerName) image=\(instance.image)")
            lines += [
                "upstream \(upstreamName) {",
                "    server 127.0.0.1:\(instance.hostPort) max_fails=0;",
                "    keepalive 32;",
                "}",
            ]
        } else {
            lines.append("\(Self.routeMarker) none")
        }
        lines += [
            "server {",
            "    listen \(listen);",
            "    server_name \(serverName);",
        ]
        if let customInclude {
            lines.append("    include \(customInclude);")
        }
        if let instance {
            lines += [
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
                "    location / {",
                "        proxy_pass http://\(upstreamName);",
                "        proxy_http_version 1.1;",
                "        proxy_set_header Connection \"\";",
                "        proxy_set_header Host $host;",
                "        proxy_set_header X-Real-IP $remote_addr;",
                "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                "        proxy_set_header X-Forwarded-Proto $scheme;",
                "    }",
            ]
        } else {
            lines += [
                "    location / {",
                "        return 503 \"no healthy instance deployed yet\\n\";",
                "    }",
            ]
        }
        lines.append("}")
        return lines.joined(separator: "\n") + "\n"
    }

    /// The generation and port a rendered file routes to (nil for none or a file peer did not write).
    public static func parseRoute(_ text: String) -> (generation: Int, hostPort: Int)? {
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(routeMarker) }) else { return nil }
        var fields: [String: String] = [:]
        for pair in line.dropFirst(routeMarker.count).split(separator: " ") {
            let kv = pair.split(separator: "=", maxSplits: 1)
            if kv.count == 2 { fields[String(kv[0])] = String(kv[1]) }
        }
        guard let generation = fields["generation"].flatMap(Int.init), let port = fields["port"].flatMap(Int.init) else { return nil }
        return (generation, port)
    }
}
