import ArgumentParser
import Foundation
import PKI
import PeerCore
import Control
import Deployment
import Leadership
import PeerConfiguration
import PeerFiles

/// `peerctl init`: the first node of a cluster.
struct InitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Set up the first node: the cluster CA, this node's certificate and a config to fill in.",
        discussion:
            "Writes DIR/pki/ca.pem, ca-key.pem (0600), NAME.pem, NAME-key.pem (0600) and DIR/peer.yml (0600). Add the next nodes with: peerctl node add NAME --address IP."
    )

    @Option(help: "This node's name (lowercase letters, digits, -), e.g. web-1.")
    var name: String

    @Option(help: "This node's public address: what its DNS record points at.")
    var address: String

    @Option(help: "The address the peers reach this node at (a private network address if they share one). Default: --address.")
    var meshAddress: String?

    @Option(help: "The mesh port (TCP and UDP).")
    var meshPort: Int = 7946

    @Option(help: "The app's name.")
    var app: String = "app"

    @Option(help: "The site's host names (nginx server_name), e.g. shop.example.com.")
    var serverName: String = "_"

    @Option(help: "Where the config and certificates go.")
    var dir: String = "/etc/peer"

    @Option(help: "A name for the cluster, written into the CA.")
    var cluster: String = "default"

    func run() async throws {
        let config = dir + "/peer.yml"
        guard !FileManager.default.fileExists(atPath: config) else {
            throw fail("\(config) already exists: this node is set up. To start over, move it and \(dir)/pki away first.")
        }
        guard isValidPeerName(name) else { throw fail("\"\(name)\" is not a valid node name: use 1–63 lowercase letters, digits or '-'") }
        let meshHost = meshAddress ?? address
        let pki = try PKIDirectory.parse(["--dir", dir + "/pki"])
        if FileManager.default.fileExists(atPath: pki.caKey) {
            print("using the existing CA in \(pki.dir)")
        } else {
            try pki.writeCA(try ClusterCA.create(cluster: cluster))
            print("created the cluster CA: \(pki.caCertificate), \(pki.caKey) (0600)")
        }
        do {
            try pki.write(try pki.loadCA().issueNode(name: name, address: meshHost), base: name, force: false)
        } catch let error as ClusterCA.Failure {
            throw fail("\(error)")
        }
        let text = ClusterSetup.initialConfig(
            name: name, address: address, meshHost: meshHost, meshPort: meshPort, app: app, serverName: serverName, directory: dir)
        try AtomicFile.write(Array(text.utf8), to: config, mode: 0o600)
        print(
            """
            wrote \(config) (0600)

            next:
              1. edit \(config): the app (image, port, health path), nginx.server_name, dns and notify
              2. peerctl config check && systemctl enable --now peerd
              3. for each further node: peerctl node add NAME --address PUBLIC-IP [--mesh-address PRIVATE-IP]
                 copy the file it writes to that node (scp), there: peerctl join FILE --sha256 CHECK (node add prints both)
            """)
    }
}

/// `peerctl node add`: everything the next node needs, in one file.
struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node", abstract: "Add nodes to the cluster, or remove them.", subcommands: [Add.self, Remove.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue a node's certificate and write a join file for it (peerctl join FILE on that node).",
            discussion:
                "Run on a node that holds the CA key. The member is committed to the cluster's configuration online, through the leader (asked over the mesh when this node does not lead); no other node is edited or restarted. The file holds the node's private key: copy it with scp and delete it once joined."
        )

        @Argument(help: "The new node's name, e.g. web-2.")
        var name: String

        @Option(help: "Its public address (its DNS record).")
        var address: String

        @Option(help: "The address the peers reach it at. Default: --address.")
        var meshAddress: String?

        @Flag(help: "A witness: votes for the leader, runs no app (for two-node clusters).")
        var witness = false

        @Option(help: "This node's config (the new node's is derived from it).")
        var config: String = PeerConfig.defaultPath

        @Option(help: "Where to write the join file. Default: ./NAME.peer-join")
        var out: String?

        @Option(help: "The control socket, overriding the one in the config.")
        var socket: String?

        @Flag(help: "Only commit the member to the cluster's configuration (its certificate was issued where the CA key is).")
        var memberOnly = false

        func run() async throws {
            // The paths in the join file are where the files go on the new node: absolute, whatever was typed here.
            let config = URL(fileURLWithPath: config).standardizedFileURL.path
            guard let text = try? String(contentsOfFile: config, encoding: .utf8) else { throw fail("\(config) cannot be read (as root?)") }
            let loaded: PeerConfig
            do {
                loaded = try PeerConfig.load(path: config)
            } catch {
                throw fail("\(error)")
            }
            guard let mesh = loaded.mesh else { throw fail("\(config) has no mesh: section; peerctl init writes one") }
            let meshHost = meshAddress ?? address
            // The member committed to the cluster's configuration, online, through this node's peerd (the leader).
            let member = ControlAPI.ClusterConfiguration.Member(
                name: name, address: PeerConfig.hostPortString(meshHost, mesh.port), role: witness ? "witness" : "node",
                publicAddress: witness ? nil : address)
            let connection = try Connection.parse(["--config", config] + (socket.map { ["--socket", $0] } ?? []))
            if memberOnly {
                let committed = try await connection.withClient { try await $0.changeMembers(.init(add: member)) }
                print(Self.outcome(committed, member: member))
                return
            }
            let pki = try PKIDirectory.holding(mesh)
            // The new node's list is the cluster's configuration when this node's peerd answers (members added online
            // are in no file), this node's file list otherwise.
            let cluster = try? await connection.withClient { try await $0.configuration() }
            let listed = cluster.map { shown in
                shown.members.map {
                    Configuration.Member(id: MemberID($0.name), address: $0.address, appNode: $0.role != "witness", publicAddress: $0.publicAddress)
                }
            }
            let derived: (config: String, member: String)
            do {
                derived = try ClusterSetup.derivedConfig(
                    from: text, name: name, address: address, meshHost: meshHost, witness: witness, listed: listed)
            } catch {
                throw fail("\(error)")
            }
            let issued: IssuedCertificate
            do {
                issued = try pki.loadCA().issueNode(name: name, address: meshHost)
            } catch let error as ClusterCA.Failure {
                throw fail("\(error)")
            }
            let configDirectory = (config as NSString).deletingLastPathComponent
            var files: [String: String] = [
                mesh.ca: try String(contentsOfFile: mesh.ca, encoding: .utf8),
                "\(pki.dir)/\(name).pem": try issued.certificatePEM,
                "\(pki.dir)/\(name)-key.pem": try issued.privateKeyPEM,
                "\(configDirectory)/peer.yml": derived.config,
            ]
            for secret in witness ? [] : ClusterSetup.secretFiles(in: text) {
                guard let content = try? String(contentsOfFile: secret, encoding: .utf8) else {
                    throw fail("\(config) names \(secret), which cannot be read; the new node needs it too")
                }
                files[secret] = content
            }
            let bundle = ClusterSetup.Bundle(node: name, files: files, member: derived.member)
            let path = out ?? "./\(name).peer-join"
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let bytes = Array(try encoder.encode(bundle))
            try AtomicFile.write(bytes, to: path, mode: 0o600)
            let check = String(sha256Hex(bytes).prefix(ClusterSetup.Bundle.checkLength))
            print("wrote \(path) (0600: it holds \(name)'s private key\(files.count > 4 ? " and the secrets your config names" : ""))")
            do {
                let committed = try await connection.withClient { try await $0.changeMembers(.init(add: member)) }
                print(
                    """
                    \(Self.outcome(committed, member: member))
                    No other node needs editing or restarting.

                    next:
                      1. scp \(path) root@\(address):  then on \(name): peerctl join \((path as NSString).lastPathComponent) --sha256 \(check)
                         and delete the file (--sha256 proves it is the file written here: one changed on the way is refused)
                      2. on \(name): systemctl enable --now peerd; it fetches the cluster's configuration from the members,
                         and peerctl deploy (any node) brings it the current version
                    """)
                return
            } catch let error as ControlClient.Failure where error.kind == .unreachable {
                print("\n\(name) is not a member yet: this node's peerd does not answer (\(error)). Start it, or edit the lists as below.")
            } catch {
                print("\n\(name) is not a member of the cluster's configuration yet: \(error)")
                print("The join file is good: commit the member later with peerctl node add \(name) --address \(address) --member-only.")
                return
            }
            print(
                """

                next:
                  1. scp \(path) root@\(address):  then on \(name): peerctl join \((path as NSString).lastPathComponent) --sha256 \(check)
                     and delete the file (--sha256 proves it is the file written here: one changed on the way is refused)
                  2. on every existing node, add to mesh.members in its peer.yml:
                \(derived.member)
                     and restart peerd there, one node at a time (systemctl restart peerd: the app keeps serving)
                  3. on \(name): systemctl enable --now peerd; peerctl deploy (any node) brings it the current version
                """)
        }

        /// Committed, or proposed and waiting for the members that must accept it.
        static func outcome(_ shown: ControlAPI.ClusterConfiguration, member: ControlAPI.ClusterConfiguration.Member) -> String {
            shown.members.contains { $0.name == member.name && $0.address == member.address && $0.role == member.role }
                ? "\(member.name) is a member: the cluster's configuration is epoch \(shown.epoch) (\(shown.members.map(\.name).joined(separator: ", ")))."
                : "\(member.name) is proposed as a member (epoch \(shown.pendingEpoch.map(String.init) ?? "?")): committed as soon as a majority of the members before and after the change accept it — with one node today, once \(member.name) is up."
        }
    }
}

/// `peerctl join FILE`: sets up a node from the file `peerctl node add` wrote.
struct Join: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set up this node from a join file (peerctl node add on a node of the cluster wrote it).")

    @Argument(help: "The join file.")
    var file: String

    @Option(help: "The check `peerctl node add` printed for this file (the start of its SHA-256, as sha256sum shows it there).")
    var sha256: String?

    @Option(
        name: .customLong("allow"),
        help: "A file outside the config's folder that the join file may write (a secret file kept elsewhere); repeatable.")
    var allowed: [String] = []

    @Flag(help: "Replace files that exist (a peer.yml of an earlier attempt).")
    var force = false

    @Option(help: "Write under this folder instead of / (an image being prepared, a test).")
    var root: String = ""

    func run() async throws {
        guard let data = FileManager.default.contents(atPath: file) else { throw fail("\(file) cannot be read") }
        // The file carries a private key, the CA this node will trust and paths it writes as root: it is taken
        // only as it was written, checked against what node add printed on the other node.
        let digest = sha256Hex(Array(data))
        guard let sha256 else {
            throw fail(
                "\(file) is not checked: run peerctl join \(file) --sha256 CHECK with the check peerctl node add printed (sha256sum \((file as NSString).lastPathComponent) on the node that wrote it shows it)"
            )
        }
        let given = sha256.lowercased()
        guard given.count >= ClusterSetup.Bundle.checkLength, digest.hasPrefix(given) else {
            throw fail(
                given.count < ClusterSetup.Bundle.checkLength
                    ? "--sha256 needs the \(ClusterSetup.Bundle.checkLength) digits peerctl node add printed; nothing was written"
                    : "\(file) is not the file peerctl node add wrote (its SHA-256 does not start with \(given)): nothing was written; copy it again"
            )
        }
        guard let bundle = try? JSONDecoder().decode(ClusterSetup.Bundle.self, from: data), bundle.format == 1 else {
            throw fail("\(file) is not a peer join file (made by peerctl node add)")
        }
        let files: [(path: String, content: String)]
        do {
            files = try bundle.placements(under: root, allowed: Set(allowed))
        } catch {
            throw fail("\(error)")
        }
        if !root.isEmpty {
            // --root confines everything: a symbolic link under it (etc -> /etc) must not carry a write out.
            guard let realRoot = AtomicFile.resolvedPath(root) else { throw fail("--root \(root) does not exist") }
            for (path, _) in files {
                let parent = (path as NSString).deletingLastPathComponent
                if let real = AtomicFile.resolvedPath(parent), real != realRoot, !real.hasPrefix(realRoot == "/" ? "/" : realRoot + "/") {
                    throw fail("\(path) leads out of --root \(root) through a symbolic link (to \(real)): nothing was written")
                }
                if let link = try? FileManager.default.destinationOfSymbolicLink(atPath: path) {
                    throw fail("\(path) is a symbolic link (to \(link)) under --root \(root): nothing was written; remove it first")
                }
            }
        }
        if !force, let existing = files.first(where: { $0.path.hasSuffix("/peer.yml") && FileManager.default.fileExists(atPath: $0.path) }) {
            throw fail("\(existing.path) already exists: this node is set up. --force replaces it.")
        }
        for (path, content) in files {
            // Folders it creates are 0700; one that exists (/etc, /srv/shop) keeps its mode.
            try AtomicFile.makeDirectory((path as NSString).deletingLastPathComponent, mode: 0o700, onlyIfCreated: true)
            // Only the CA and node certificates are public; the config, keys and secret files are not.
            let mode: mode_t = path.hasSuffix(".pem") && !path.hasSuffix("-key.pem") ? 0o644 : 0o600
            try AtomicFile.write(Array(content.utf8), to: path, mode: mode)
            print("wrote \(path) (\(String(mode, radix: 8)))")
        }
        print(
            """

            \(bundle.node) is set up. Delete \(file) now (it holds the node's key).
            next: peerctl config check && systemctl enable --now peerd
            """)
    }
}

extension NodeCommand {
    /// `peerctl node remove`: the member's certificates revoked everywhere at once; the list edits that remain.
    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Take a node out of the cluster: out of its configuration, and every certificate of it revoked on every node.",
            discussion: """
                Run where the CA key is (as node add). The removal is committed first, through the leader (while the node \
                may still take part: with two voters, both must accept), then its certificates are revoked: every \
                node refuses them from then on, closes its connections and drops its datagram key, and the leader \
                removes its DNS record. Run elsewhere, or when the removal cannot be committed (a majority of the \
                members is down), the node is still cut off by the revocation.
                """)

        @Argument(help: "The node's name.")
        var name: String

        @OptionGroup var connection: Connection

        @Option(help: "How long to wait for every live member to hold the revocation (seconds; 0: do not wait).")
        var wait: Int = 30

        func run() async throws {
            let config: PeerConfig
            do {
                config = try PeerConfig.load(path: connection.config)
            } catch {
                throw fail("\(error)")
            }
            guard let mesh = config.mesh else { throw fail("\(connection.config) has no mesh: section: there is no cluster to remove a node from") }
            guard name != config.node.name || connection.remote != nil else {
                throw fail("\(name) is the node this runs on: run node remove on another node (its peerd hands the revocation on)")
            }
            // The cluster's configuration when this node's peerd answers (members added online are in no file).
            let shown = try? await connection.withClient { try await $0.configuration() }
            let members = shown?.members.map(\.name) ?? mesh.members.map(\.name)
            guard members.contains(name) else {
                let source = shown.map { "the cluster's configuration (epoch \($0.epoch))" } ?? "mesh.members of \(connection.config)"
                throw fail("\(name) is not in \(source): \(members.joined(separator: ", "))")
            }
            let pki = try PKIDirectory.holding(mesh)
            // Out of the cluster's configuration first, online, through this node's peerd (the leader): cut off
            // before, the node could not accept its own removal, which a cluster of two voters needs.
            var outcome: String
            var removed = false
            if shown == nil {
                outcome = "\(name) is still in the cluster's configuration: this node's peerd does not answer"
            } else {
                do {
                    let after = try await connection.withClient { try await $0.changeMembers(.init(remove: name)) }
                    removed = !after.members.contains { $0.name == name }
                    outcome =
                        removed
                        ? "\(name) is out of the cluster's configuration: epoch \(after.epoch) (\(after.members.map(\.name).joined(separator: ", ")))."
                        : "\(name)'s removal is proposed, not committed yet (a majority of the members must accept it: peerctl config show)."
                } catch {
                    outcome = "\(name) is still in the cluster's configuration: \(error)"
                }
            }
            try await Cert.Revoke.perform(pki: pki, connection: connection, wait: wait) { try $0.revoke(.node(name)) }
            print(outcome)
            if removed || shown != nil {
                print(
                    """
                    \(name) is cut off\(removed ? "" : ": run peerctl node remove \(name) again once there is a leader (peerctl who) to take it out of the configuration").
                    Left: on \(name), if you can reach it: systemctl disable --now peerd (its app keeps running until you stop it).
                    """)
                return
            }
            print(
                """
                \(name) is cut off. What is left:
                  - on \(name), if you can reach it: systemctl disable --now peerd (its app keeps running until you stop it)
                  - on every other node, one at a time: remove \(name) from mesh.members, then systemctl restart peerd
                    (no leader until the last one has the same list: docs/operations.md, "Removing a node")
                """)
        }
    }
}

extension PKIDirectory {
    /// The folder of a mesh's CA certificate: where `peerctl init` put the CA key too.
    static func holding(_ mesh: PeerConfig.Mesh) throws -> PKIDirectory {
        try parse(["--dir", (mesh.ca as NSString).deletingLastPathComponent])
    }
}
