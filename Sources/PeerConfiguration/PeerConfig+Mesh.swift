import Foundation
import Membership
import PeerCore

extension PeerConfig {
    static func mesh(_ section: Section, node: String) throws(ConfigError) -> Mesh {
        try section.allowOnly(["listen", "ca", "cert", "key", "members", "profile", "membership", "allow_from"])
        let listen = try section.string("listen", required: true)!
        guard let (host, port) = Self.hostPort(listen) else {
            throw section.error(
                "listen", problem: "\"\(listen)\" is not ADDRESS:PORT with an IP address", fix: "e.g. 10.0.0.5:7946 or [2001:db8::5]:7946")
        }
        var files: [String: String] = [:]
        for key in ["ca", "cert", "key"] {
            let file = try section.string(key, required: true)!
            guard FileManager.default.isReadableFile(atPath: file) else {
                throw section.error(
                    key, problem: "\(file) cannot be read",
                    fix: key == "ca"
                        ? "copy the cluster CA certificate there (peerctl ca init)" : "issue it with: peerctl cert issue \(node) --address IP")
            }
            files[key] = file
        }
        if let mode = Self.mode(of: files["key"]!), mode & 0o077 != 0 {
            throw section.error(
                "key", problem: "is a private key others can read (mode \(String(mode, radix: 8)))", fix: "chmod 600 \(files["key"]!)")
        }
        var members: [Mesh.Member] = []
        for entry in try section.sectionList("members") {
            try entry.allowOnly(["name", "address", "role", "public_address"])
            let name = try entry.string("name", required: true)!
            try entry.check("name", name, isValidPeerName(name), "must be 1-63 lowercase letters, digits or '-'", fix: "the member's node.name")
            let address = try entry.string("address", required: true)!
            guard let (h, p) = Self.hostPort(address) else {
                throw entry.error(
                    "address", problem: "\"\(address)\" is not ADDRESS:PORT with an IP address", fix: "the member's mesh.listen, e.g. 10.0.0.6:7946")
            }
            guard !members.contains(where: { $0.name == name }) else {
                throw entry.error("name", problem: "\(name) is listed twice", fix: "list each member once")
            }
            let roleText = try entry.string("role") ?? "node"
            guard let role = Mesh.Member.Role(rawValue: roleText) else {
                throw entry.error(
                    "role", problem: "must be node or witness", fix: "witness: votes for the leader, runs no app (for two-node clusters)")
            }
            let publicAddress = try entry.string("public_address").map(canonicalIPAddress)
            if let publicAddress {
                try entry.check(
                    "public_address", publicAddress, isIPAddress(publicAddress), "is not an IPv4 or IPv6 address",
                    fix: "the member's node.address: the public address its DNS record points at")
                guard role == .node else {
                    throw entry.error("public_address", problem: "is set on a witness, which has no DNS record", fix: "remove it")
                }
            }
            members.append(Mesh.Member(name: name, host: h, port: p, role: role, publicAddress: publicAddress))
        }
        guard members.contains(where: { $0.name == node }) else {
            throw section.error(
                "members", problem: "does not list this node (\(node))", fix: "list every member, this one included, with the same list on every node"
            )
        }
        let profile = try section.string("profile") ?? "lan"
        var settings: SWIMSettings
        switch profile {
        case "lan": settings = .lan
        case "wan": settings = .wan
        default: throw section.error("profile", problem: "must be lan or wan", fix: "lan for peers in one region, wan across regions")
        }
        if let tuning = try section.section("membership") {
            try tuning.allowOnly([
                "probe_interval", "direct_timeout", "probe_timeout", "indirect_probes", "suspicion_min", "suspicion_max",
                "refused_probe_timeout", "refused_suspicion",
            ])
            let ms = Duration.milliseconds(1)
            settings.probeInterval = try tuning.duration("probe_interval", min: ms) ?? settings.probeInterval
            settings.directTimeout = try tuning.duration("direct_timeout", min: ms) ?? settings.directTimeout
            settings.probeTimeout = try tuning.duration("probe_timeout", min: ms) ?? settings.probeTimeout
            settings.indirectProbes = try tuning.int("indirect_probes", range: 0...10) ?? settings.indirectProbes
            settings.suspicionMin = try tuning.duration("suspicion_min", min: ms) ?? settings.suspicionMin
            settings.suspicionMax = try tuning.duration("suspicion_max", min: ms) ?? settings.suspicionMax
            settings.refusedProbeTimeout = try tuning.duration("refused_probe_timeout", min: ms) ?? settings.refusedProbeTimeout
            settings.refusedSuspicion = try tuning.duration("refused_suspicion", min: ms) ?? settings.refusedSuspicion
            if let problem = settings.problems.first {
                throw tuning.error("", problem: problem, fix: "see docs/configuration.md for the \(profile) defaults")
            }
        }
        var allowFrom: [NetworkPrefix]?
        if section.value("allow_from") != nil {
            allowFrom = try section.stringList("allow_from").map { (text: String) throws(ConfigError) -> NetworkPrefix in
                guard let prefix = NetworkPrefix(text) else {
                    throw section.error(
                        "allow_from", problem: "\"\(text)\" is not an IP address or a network in CIDR notation",
                        fix: "e.g. 192.0.2.0/24, 2001:db8::/32 or 198.51.100.7 (the members' own addresses are always allowed)")
                }
                return prefix
            }
        }
        var mesh = Mesh(
            host: host, port: port, ca: files["ca"]!, certificate: files["cert"]!, key: files["key"]!, members: members,
            profile: profile, membership: settings)
        mesh.allowFrom = allowFrom
        return mesh
    }

    /// The inverse of ``hostPort(_:)``: `1.2.3.4:7946`, `[2001:db8::1]:7946`.
    public static func hostPortString(_ host: String, _ port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// `1.2.3.4:7946` or `[2001:db8::1]:7946`.
    public static func hostPort(_ s: String) -> (String, Int)? {
        let host: Substring
        let portText: Substring
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]"), s[s.index(after: close)...].hasPrefix(":") else { return nil }
            host = s[s.index(after: s.startIndex)..<close]
            portText = s[s.index(close, offsetBy: 2)...]
        } else {
            guard let colon = s.lastIndex(of: ":") else { return nil }
            host = s[..<colon]
            portText = s[s.index(after: colon)...]
            if host.contains(":") { return nil }
        }
        guard let port = Int(portText), (1...65535).contains(port), isIPAddress(String(host)) else { return nil }
        return (String(host), port)
    }
}
