import ArgumentParser
import Foundation
import PKI
import PeerFiles

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
            abstract: "Issue an operator's client certificate (peerctl from a laptop or CI): operator-NAME.pem, operator-NAME-key.pem.")

        @OptionGroup var pki: PKIDirectory

        @Argument(help: "Who or what uses it, e.g. ci or alice.")
        var name: String

        @Option(help: "Validity in days.")
        var days: Int = 90

        @Flag(help: "Replace an existing certificate of that name.")
        var force = false

        func run() async throws {
            let ca = try pki.loadCA()
            do {
                try pki.write(try ca.issueOperator(name: name, validityDays: days), base: "operator-\(name)", force: force)
            } catch let error as ClusterCA.Failure {
                throw fail("\(error)")
            }
        }
    }
}
