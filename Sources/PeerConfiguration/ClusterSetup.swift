import Foundation
import Leadership
import PeerCore
import Yams

/// `peerctl init` and `peerctl node add` / `join`: a first node's config, and everything a further node needs
/// in one file (its certificate and key, the CA certificate, its config and the secret files that config
/// names).
public enum ClusterSetup {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// The config `peerctl init` writes for the first node: a working single-member mesh and every optional
    /// section as a comment to fill in.
    public static func initialConfig(
        name: String, address: String, meshHost: String, meshPort: Int, app: String, serverName: String, directory: String
    ) -> String {
        let meshListen = PeerConfig.hostPortString(meshHost, meshPort)
        let hostname = serverName.split(separator: " ").first.map(String.init) ?? serverName
        // Without a server name ("_", nginx's catch-all) there is no host name for the origin certificate yet:
        // the section is written as a comment to fill in, so that what init wrote passes config check.
        let tls = hostname == "_" ? "  # tls:\n  #   hostname: shop.example.com" : "  tls:\n    hostname: \(hostname)"
        let dnsName = hostname == "_" ? "shop.example.com" : hostname
        return """
            # peer node config, written by `peerctl init`. Every key: docs/configuration.md.
            node:
              name: \(name)
              address: \(address)            # the public address its Cloudflare record points at

            app:
              name: \(app)
              # image: ghcr.io/you/\(app):1.0.0   # deployed at first start; or: peerctl deploy IMAGE
              port: 8080                      # the port the app listens on inside its container
              health:
                path: /health
                timeout: 60s

            nginx:
              listen: "80"
              server_name: \(serverName)
            \(tls)

            mesh:
              listen: \(meshListen)
              ca: \(directory)/pki/ca.pem
              cert: \(directory)/pki/\(name).pem
              key: \(directory)/pki/\(name)-key.pem
              members:
                - name: \(name)
                  address: \(meshListen)
                  public_address: \(address)   # its DNS record (node.address)

            # dns:
            #   zone: example.com
            #   zone_id: 0123456789abcdef0123456789abcdef   # the zone's Overview page, API › Zone ID
            #   name: \(dnsName)
            #   token_file: \(directory)/cloudflare-token   # API token: Zone › DNS › Edit, this zone only (0600)

            # notify:
            #   ntfy:
            #     topic: a-long-random-topic

            """
    }

    /// One further node: what `peerctl node add` writes and `peerctl join` reads. It holds a private key and
    /// maybe tokens: 0600, copy it with scp, delete it after joining.
    public struct Bundle: Codable, Sendable {
        public var format = 1
        public var node: String
        /// Path on the new node → contents (certificates, key, config, secret files).
        public var files: [String: String]
        /// The member line every existing node must add to `mesh.members`.
        public var member: String

        public init(node: String, files: [String: String], member: String) {
            self.node = node
            self.files = files
            self.member = member
        }

        /// Where each file goes (under `root`), checked before anything is written: one config (`…/peer.yml`, not
        /// at the file system's root), and besides it only the files that config names for the mesh (`ca`, `cert`,
        /// `key`) and its secrets (`*_file`); every one inside the config's folder unless `allowed` names it (the
        /// file's own config cannot widen that); every path absolute, without `.`, `..` or control characters, so
        /// that `root` confines them all.
        public func placements(under root: String, allowed: Set<String> = []) throws(Failure) -> [(path: String, content: String)] {
            let configs = files.keys.filter { $0.hasSuffix("/peer.yml") }
            guard configs.count == 1, let config = configs.first, let text = files[config] else {
                throw Failure(description: "the join file holds \(configs.count) configs (peer.yml), not one: make it again with peerctl node add")
            }
            let folder = String(config.dropLast("/peer.yml".count))
            guard !folder.isEmpty else {
                throw Failure(
                    description: "the join file puts its config at /peer.yml: make it again with peerctl node add --config /etc/peer/peer.yml")
            }
            let named = Set(ClusterSetup.paths(in: text) { ["ca", "cert", "key"].contains($0) || $0.hasSuffix("_file") })
            for path in files.keys.sorted() {
                let parts = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
                guard path.hasPrefix("/"), !parts.isEmpty, parts.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }),
                    !path.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f })
                else {
                    throw Failure(
                        description:
                            "the join file names \(path.debugDescription): only absolute paths without . or .. are written; nothing was written")
                }
                guard path == config || named.contains(path) else {
                    throw Failure(
                        description:
                            "the join file holds \(path), which its config names neither as a mesh certificate or key nor as a secret file: refused, nothing was written (was the file made by peerctl node add, and not changed since?)"
                    )
                }
                guard path.hasPrefix(folder + "/") || allowed.contains(path) else {
                    throw Failure(
                        description:
                            "the join file would write \(path), outside the config's folder \(folder): nothing was written; if that is where it belongs, say so with --allow \(path)"
                    )
                }
            }
            let base = root.hasSuffix("/") ? String(root.dropLast()) : root
            return files.map { (path: base + $0.key, content: $0.value) }.sorted { $0.path < $1.path }
        }

        /// What `peerctl node add` prints and `peerctl join --sha256` checks: the first 20 hex digits of the
        /// file's SHA-256 (`sha256sum FILE` shows all of them).
        public static let checkLength = 20
    }

    /// The new node's config, from this node's: its own name, address, mesh listener and certificate, with
    /// itself added to `mesh.members`. Everything else (app, nginx, dns, notify, rollout) is the cluster's and
    /// stays as it is.
    /// `listed`: the cluster's configuration (its members, as the leader replicates them), which the new node's
    /// list is made of when given: a member added online since this node's file was written is in it. Without it,
    /// this node's file list.
    public static func derivedConfig(
        from text: String, name: String, address: String, meshHost: String, witness: Bool, listed: [Configuration.Member]? = nil
    ) throws -> (config: String, member: String) {
        guard var root = try Yams.compose(yaml: text), root.mapping != nil else {
            throw Failure(description: "the config is not a YAML mapping")
        }
        guard var mesh = root["mesh"], mesh.mapping != nil, let listen = mesh["listen"]?.string,
            let (_, port) = PeerConfig.hostPort(listen), let members = mesh["members"]?.sequence
        else {
            throw Failure(description: "this node's config has no mesh: section with listen and members; set one up first (peerctl init writes one)")
        }
        if listed == nil, members.contains(where: { $0["name"]?.string == name }) {
            throw Failure(description: "\(name) is already in mesh.members; choose another name, or remove it from every node first")
        }
        let meshListen = PeerConfig.hostPortString(meshHost, port)
        var node = root["node"] ?? Node.mapping(Node.Mapping([]))
        node["name"] = Node(name)
        node["address"] = Node(address)
        root["node"] = node
        mesh["listen"] = Node(meshListen)
        let directory = (mesh["ca"]?.string).map { ($0 as NSString).deletingLastPathComponent } ?? "/etc/peer/pki"
        mesh["cert"] = Node("\(directory)/\(name).pem")
        mesh["key"] = Node("\(directory)/\(name)-key.pem")
        var entry = Node.mapping(Node.Mapping([(Node("name"), Node(name)), (Node("address"), Node(meshListen))]))
        if witness {
            entry["role"] = Node("witness")
        } else {
            entry["public_address"] = Node(canonicalIPAddress(address))
        }
        let others: [Node] =
            listed.map { listed in
                listed.filter { $0.id.name != name }.map { member in
                    var node = Node.mapping(Node.Mapping([(Node("name"), Node(member.id.name)), (Node("address"), Node(member.address))]))
                    if !member.appNode { node["role"] = Node("witness") }
                    if let publicAddress = member.publicAddress { node["public_address"] = Node(publicAddress) }
                    return node
                }
            } ?? Array(members)
        mesh["members"] = Node.sequence(Node.Sequence(others + [entry]))
        root["mesh"] = mesh
        if witness {
            // A witness runs no app and no nginx, never leads, so never edits DNS or notifies: it gets no tokens.
            if case .mapping(var mapping) = root {
                for key in ["app", "nginx", "registries", "rollout", "dns", "notify"] { mapping[key] = nil }
                root = .mapping(mapping)
            }
        }
        let header =
            "# peer node config for \(name), made by `peerctl node add` from the config of the node that issued it.\n# Every key: docs/configuration.md.\n"
        let member =
            "    - name: \(name)\n      address: \(meshListen)"
            + (witness ? "\n      role: witness" : "\n      public_address: \(canonicalIPAddress(address))")
        return (header + (try Yams.serialize(node: root)), member)
    }

    /// Files a config names by `*_file` keys (tokens, webhook URLs, registry passwords, the app's `env_file`): the
    /// new node needs them too (without the app's environment file it would not start).
    public static func secretFiles(in text: String) -> [String] {
        paths(in: text) { $0.hasSuffix("_file") }
    }

    /// The absolute paths a config's keys name, for the keys `keep` accepts.
    static func paths(in text: String, keep: (String) -> Bool) -> [String] {
        var found: [String] = []
        for line in text.split(separator: "\n") {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard !trimmed.hasPrefix("#"), let colon = trimmed.firstIndex(of: ":") else { continue }
            let key = trimmed[..<colon].trimmingCharacters(in: CharacterSet(charactersIn: "- "))
            guard keep(key) else { continue }
            var value = trimmed[trimmed.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            if let hash = value.range(of: " #") { value = String(value[..<hash.lowerBound]).trimmingCharacters(in: .whitespaces) }
            value = value.trimmingCharacters(in: CharacterSet(charactersIn: "\"'"))
            if value.hasPrefix("/") { found.append(value) }
        }
        return found
    }
}
