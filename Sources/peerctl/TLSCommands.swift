import ArgumentParser
import Foundation
import PKI
import Control
import Deployment
import PeerConfiguration

struct TLS: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tls", abstract: "The origin certificate nginx serves to Cloudflare (HTTPS on every node).",
        subcommands: [Set.self])

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Install an origin certificate and its key on every node.",
            discussion: """
                Checks the pair (the key belongs to the certificate, it is valid now, it covers the site's host name) \
                before anything changes, installs it on the node you talk to, which sends it to the others over the \
                mesh. Each node stores it 0600, serves it on nginx.tls.listen (443) and reloads nginx without \
                dropping requests. Then waits until every live node serves it. The others take it only with the \
                signature of the cluster CA or of an operator with the tls scope: peerctl signs with the CA key when \
                it runs where that is (ca-key.pem next to mesh.ca), or with --operator-cert and --operator-key.
                """)

        // Not the shared Connection options: --cert and --key name the origin pair here.
        @Option(help: "The node's config file (to find the control socket).")
        var config: String = PeerConfig.defaultPath

        @Option(help: "The control socket, overriding the one in the config.")
        var socket: String?

        @Option(help: "Talk to a node over the mesh instead: HOST:PORT of its mesh.listen (needs --operator-cert, --operator-key, --ca).")
        var peer: String?

        @Option(help: "The cluster CA certificate, for --peer.")
        var ca: String?

        @Option(name: .customLong("cert"), help: "The certificate (PEM; the leaf first, then any intermediates).")
        var certificate: String

        @Option(name: .customLong("key"), help: "Its private key (PEM).")
        var privateKey: String

        @Option(help: "How long to wait for every live node to serve it (seconds; 0: do not wait).")
        var wait: Int = 60

        @Flag(help: "Print JSON.")
        var json = false

        @Option(
            name: .customLong("operator-cert"),
            help: "Your operator certificate: with --peer, and on a node without the CA key to sign the pair (scope tls).")
        var operatorCertificate: String?

        @Option(name: .customLong("operator-key"), help: "Its key.")
        var operatorKey: String?

        /// The signature that lets the pair into the cluster: the operator's key if given, else the CA key where it
        /// is (next to mesh.ca in the local config), else none (a node alone takes it; one with others refuses).
        func authority(for pair: OriginPair, read: (String, String) throws -> String) throws -> OriginAuthority? {
            let setAt = Int64(Date().timeIntervalSince1970 * 1000)
            let env = peer == nil ? [:] : ProcessInfo.processInfo.environment
            do {
                if let certificate = operatorCertificate ?? env["PEER_CLIENT_CERT"], let key = operatorKey ?? env["PEER_CLIENT_KEY"] {
                    return try OriginAuthority.sign(
                        certificatePEM: pair.certificatePEM, setAt: setAt, keyPEM: try read(key, "--operator-key"),
                        operatorCertificatePEM: try read(certificate, "--operator-cert"))
                }
                guard operatorCertificate == nil, operatorKey == nil else { throw fail("--operator-cert and --operator-key go together") }
                guard peer == nil, let mesh = (try? PeerConfig.load(path: config))?.mesh, let pki = try? PKIDirectory.holding(mesh),
                    let key = FileManager.default.contents(atPath: pki.caKey)
                else { return nil }
                return try OriginAuthority.sign(certificatePEM: pair.certificatePEM, setAt: setAt, keyPEM: String(decoding: key, as: UTF8.self))
            } catch let error as ClusterCA.Failure {
                throw fail("\(error)")
            } catch let error as OriginCertificate.Rejected {
                throw fail("certificate refused, nothing changed: \(error)")
            }
        }

        func run() async throws {
            func read(_ path: String, _ what: String) throws -> String {
                guard let data = FileManager.default.contents(atPath: path) else {
                    throw fail("\(what) \(path) cannot be read (as root? the path right?)")
                }
                return String(decoding: data, as: UTF8.self)
            }
            let pair = OriginPair(certificatePEM: try read(certificate, "--cert"), keyPEM: try read(privateKey, "--key"))
            let authority = try self.authority(for: pair, read: read)
            var arguments = ["--config", config] + (socket.map { ["--socket", $0] } ?? [])
            if let peer {
                let env = ProcessInfo.processInfo.environment
                guard let operatorCertificate = operatorCertificate ?? env["PEER_CLIENT_CERT"],
                    let operatorKey = operatorKey ?? env["PEER_CLIENT_KEY"],
                    let ca = ca ?? env["PEER_CACERT"]
                else {
                    throw fail("--peer needs --operator-cert, --operator-key and --ca here (--cert and --key name the origin pair)")
                }
                arguments += ["--peer", peer, "--cert", operatorCertificate, "--key", operatorKey, "--ca", ca]
            }
            let connection = try Connection.parse(arguments)
            let installed: ControlAPI.OriginTLS
            do {
                installed = try await connection.withClient { try await $0.setOriginTLS(pair, authority: authority) }
            } catch {
                throw fail("\(error)")
            }
            if !json {
                print(
                    "installed: \(installed.names.joined(separator: ", ")), expires \(installed.notValidAfter.iso8601) (\(installed.daysLeft) days), sha256 \(installed.fingerprint.prefix(16))…"
                )
            }
            guard wait > 0 else { return json ? try printJSON(installed) : () }
            // Every live app node announces the fingerprint it serves.
            let want = String(installed.fingerprint.prefix(16))
            let deadline = Date().addingTimeInterval(Double(wait))
            var reported: Swift.Set<String> = []
            var missing: [String] = []
            while true {
                guard let members = try? await connection.withClient({ try await $0.members() }) else { break }
                let nodes = members.members.filter { $0.status != "dead" && ($0.appHealthy != nil || $0.originFingerprint != nil) }
                for node in nodes where node.originFingerprint == want && !reported.contains(node.name) {
                    reported.insert(node.name)
                    if !json { print("  \(node.name): serving it") }
                }
                missing = nodes.filter { $0.originFingerprint != want }.map(\.name)
                if missing.isEmpty || Date() > deadline { break }
                try await Task.sleep(for: .milliseconds(250))
            }
            if json { try printJSON(installed) }
            if !missing.isEmpty {
                throw fail(
                    "not yet served by \(missing.joined(separator: ", ")) after \(wait)s; peerctl status shows each node's ORIGIN TLS, their logs say why"
                )
            }
        }
    }
}
