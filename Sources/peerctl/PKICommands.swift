import ArgumentParser
import Control
import Foundation
import PKI
import PeerFiles
import X509

/// Where the cluster's PEM files live on a node.
struct PKIDirectory: ParsableArguments {
    @Option(name: .long, help: "Folder of the cluster's certificates and keys.")
    var dir: String = "/etc/peer/pki"

    var caCertificate: String { dir + "/ca.pem" }
    var caKey: String { dir + "/ca-key.pem" }

    func loadCA() throws -> ClusterCA {
        guard let cert = try? String(contentsOfFile: caCertificate, encoding: .utf8),
            let key = try? String(contentsOfFile: caKey, encoding: .utf8)
        else {
            throw fail("no cluster CA in \(dir) (ca.pem and ca-key.pem); create one with: peerctl ca init --dir \(dir)")
        }
        do {
            return try ClusterCA(certificatePEM: cert, privateKeyPEM: key)
        } catch {
            throw fail("\(dir): \(error)")
        }
    }

    /// Writes a new CA: its key (0600) and its certificate (0644).
    func writeCA(_ ca: ClusterCA) throws {
        try AtomicFile.makeDirectory(dir, mode: 0o700)
        try AtomicFile.write(Array(try ca.privateKey.serializeAsPEM().pemString.utf8), to: caKey, mode: 0o600)
        try AtomicFile.write(Array(try ca.certificate.serializeAsPEM().pemString.utf8), to: caCertificate, mode: 0o644)
    }

    /// Writes a certificate (0644) and its key (0600); refuses to replace existing files unless `force`.
    func write(_ issued: IssuedCertificate, base: String, force: Bool) throws {
        let cert = "\(dir)/\(base).pem"
        let key = "\(dir)/\(base)-key.pem"
        if !force, FileManager.default.fileExists(atPath: cert) || FileManager.default.fileExists(atPath: key) {
            throw fail("\(cert) already exists; pass --force to replace it (the old certificate stays valid until it expires)")
        }
        try AtomicFile.makeDirectory(dir, mode: 0o700)
        try AtomicFile.write(Array(try issued.privateKeyPEM.utf8), to: key, mode: 0o600)
        try AtomicFile.write(Array(try issued.certificatePEM.utf8), to: cert, mode: 0o644)
        print("wrote \(cert) and \(key) (0600), valid until \(issued.certificate.notValidAfter.iso8601)")
    }
}

struct CA: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ca", abstract: "The cluster's certificate authority.", subcommands: [Init.self])

    struct Init: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create the cluster CA (ECDSA P-256): ca.pem and ca-key.pem (0600). Keep ca-key.pem off the nodes if you can.")

        @OptionGroup var pki: PKIDirectory

        @Option(help: "A name for the cluster, written into the CA's subject.")
        var cluster: String = "default"

        @Option(help: "Validity in days.")
        var days: Int = 3650

        func run() async throws {
            if FileManager.default.fileExists(atPath: pki.caCertificate) || FileManager.default.fileExists(atPath: pki.caKey) {
                throw fail("\(pki.dir) already holds a CA; a new one would invalidate every certificate it issued. Use another --dir to start over.")
            }
            let ca = try ClusterCA.create(cluster: cluster, validityDays: days)
            try pki.writeCA(ca)
            print(
                "created the CA for cluster \(cluster): \(pki.caCertificate), \(pki.caKey) (0600), valid until \(ca.certificate.notValidAfter.iso8601)"
            )
        }
    }
}

struct Cert: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cert", abstract: "Issue and revoke certificates of the cluster CA.",
        subcommands: [Issue.self, IssueOperator.self, Revoke.self, Revoked.self])

    struct Issue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue a node's certificate (server + client auth, naming the node and its address): NODE.pem, NODE-key.pem.")

        @OptionGroup var pki: PKIDirectory

        @Argument(help: "The node's name, as node.name in its config.")
        var node: String

        @Option(help: "The node's address, as node.address in its config.")
        var address: String

        @Option(help: "Validity in days.")
        var days: Int = 397

        @Flag(help: "Replace an existing certificate of that name.")
        var force = false

        func run() async throws {
            let ca = try pki.loadCA()
            do {
                try pki.write(try ca.issueNode(name: node, address: address, validityDays: days), base: node, force: force)
            } catch let error as ClusterCA.Failure {
                throw fail("\(error)")
            }
        }
    }

    struct IssueOperator: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "issue-operator",
            abstract: "Issue an operator's client certificate (peerctl from a laptop or CI): operator-NAME.pem, operator-NAME-key.pem.",
            discussion: OperatorOptions.scopesHelp)

        @OptionGroup var pki: PKIDirectory
        @OptionGroup var options: OperatorOptions

        func run() async throws { try options.issue(pki) }
    }
}

/// What an operator certificate is issued with (`cert issue-operator`, `operator add`).
struct OperatorOptions: ParsableArguments {
    static let scopesHelp = """
        Scopes (written into the certificate, checked by every node): read (status, members, who, deploys), \
        deploy (read, and deploy, rollback, rollout follow and cancel: what CI needs), tls (read, and tls set), \
        admin (everything). Remove an operator with: peerctl operator remove NAME.
        """

    @Argument(help: "Who or what uses it, e.g. ci or alice.")
    var name: String

    @Option(help: "What it may do, comma-separated: read, deploy, tls, admin.")
    var scope: String = "deploy"

    @Option(help: "Validity in days (at most 397).")
    var days: Int = 90

    @Flag(help: "Replace an existing certificate of that name (the old one stays valid: revoke it first with cert revoke --certificate-file).")
    var force = false

    func issue(_ pki: PKIDirectory) throws {
        let ca = try pki.loadCA()
        do {
            let scopes = try OperatorScope.parse(scope)
            try pki.write(try ca.issueOperator(name: name, scopes: scopes, validityDays: days), base: "operator-\(name)", force: force)
            print("operator \(name) may: \(scopes.sorted().map(\.rawValue).joined(separator: ", "))")
        } catch let error as ClusterCA.Failure {
            throw fail("\(error)")
        }
    }
}

struct Operator: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "operator", abstract: "The people and CI jobs that may use peerctl over the mesh port.",
        subcommands: [Add.self, Remove.self, List.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue an operator's certificate with its scopes: operator-NAME.pem, operator-NAME-key.pem (0600).",
            discussion: OperatorOptions.scopesHelp)

        @OptionGroup var pki: PKIDirectory
        @OptionGroup var options: OperatorOptions

        func run() async throws { try options.issue(pki) }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke every certificate of an operator on every node, at once (peerctl cert revoke NAME --operator).")

        @OptionGroup var pki: PKIDirectory
        @OptionGroup var connection: Connection

        @Argument(help: "The operator's name.")
        var name: String

        @Option(help: "How long to wait for every live member to hold the revocation (seconds; 0: do not wait).")
        var wait: Int = 30

        func run() async throws {
            try await Cert.Revoke.perform(pki: pki, connection: connection, wait: wait) { try $0.revoke(.operator(name)) }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The operator certificates issued in the CA's folder: scopes, expiry, and whether revoked.")

        @OptionGroup var pki: PKIDirectory

        func run() async throws {
            let ca = try pki.loadCA()
            var revoked = RevocationList()
            revoked.merge(try pki.readRevocations(), ca: ca.certificate)
            let files = ((try? FileManager.default.contentsOfDirectory(atPath: pki.dir)) ?? [])
                .filter { $0.hasPrefix("operator-") && $0.hasSuffix(".pem") && !$0.hasSuffix("-key.pem") }.sorted()
            guard !files.isEmpty else { return print("no operator certificates in \(pki.dir)") }
            for file in files {
                guard let text = try? String(contentsOfFile: pki.dir + "/" + file, encoding: .utf8),
                    let certificate = try? Certificate(pemEncoded: text), case .operator(let name) = PeerIdentity(certificate: certificate)
                else { continue }
                let scopes = OperatorScope.scopes(of: certificate).sorted().map(\.rawValue).joined(separator: ",")
                let state = revoked.refusal(of: certificate) != nil ? "REVOKED" : "expires \(certificate.notValidAfter.iso8601)"
                print("\(name)  \(scopes)  \(state)")
            }
        }
    }
}
