import ArgumentParser
import Control
import Foundation
import PKI
import PeerFiles
import X509

extension Cert {
    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a node's or an operator's certificates on every node, at once.",
            discussion: """
                Signs a revocation with the CA key (in --dir), keeps it in DIR/revoked.json and hands every \
                revocation recorded there to a node, which sends them to the others over the mesh. From then on every \
                node refuses the certificate at the TLS handshake, closes connections already open with it and drops \
                its datagram key: a revoked node is soon dead everywhere, and its DNS record goes. Without \
                --certificate-file, every certificate of that name issued up to now is revoked (a certificate issued \
                for the name afterwards is not). Then waits until every live member holds the same revocations.
                """)

        @OptionGroup var pki: PKIDirectory
        @OptionGroup var connection: Connection

        @Argument(help: "The node's (or with --operator, the operator's) name. Not needed with --certificate-file or --resend.")
        var name: String?

        @Flag(help: "NAME is an operator (peerctl cert issue-operator NAME), not a node.")
        var `operator` = false

        @Option(name: .customLong("certificate-file"), help: "Revoke only this certificate (PEM), by its serial number.")
        var certificateFile: String?

        @Flag(help: "Revoke nothing new: hand the revocations recorded in DIR/revoked.json to the node again.")
        var resend = false

        @Option(help: "How long to wait for every live member to hold them (seconds; 0: do not wait).")
        var wait: Int = 30

        func validate() throws {
            let ways = [name != nil, certificateFile != nil, resend].filter { $0 }.count
            guard ways == 1 else {
                throw ValidationError("say what to revoke: a NAME, --certificate-file FILE, or --resend (one of them)")
            }
            if self.operator && name == nil { throw ValidationError("--operator needs the operator's NAME") }
        }

        func run() async throws {
            try await Self.perform(pki: pki, connection: connection, wait: wait) { ca in
                guard !resend else { return nil }
                let (who, serial) = try identity(ca)
                return try ca.revoke(who, serial: serial)
            }
        }

        /// Records the revocation `make` signs (none: only sends again), hands every recorded one to the node, and
        /// waits up to `wait` seconds for every live member to hold them.
        static func perform(
            pki: PKIDirectory, connection: Connection, wait: Int, make: (ClusterCA) throws -> Revocation?
        ) async throws {
            var recorded = try pki.readRevocations()
            let ca = try pki.loadCA()
            let made: Revocation?
            do {
                made = try make(ca)
            } catch let error as ClusterCA.Failure {
                throw fail("\(error)")
            }
            if let made {
                recorded.append(made)
                try pki.writeRevocations(recorded)
                print("revoked: \(made.summary) (recorded in \(pki.revocations))")
            }
            guard !recorded.isEmpty else { throw fail("\(pki.revocations) records no revocations to send") }
            let held: ControlAPI.Revocations
            do {
                held = try await connection.withClient { try await $0.revoke(recorded) }
            } catch {
                throw fail(
                    "not handed to any node yet (\(error)); once one is reachable: peerctl cert revoke --resend --dir \(pki.dir)")
            }
            print("the node holds \(held.revocations.count) revocation(s) (\(held.added ?? 0) new), digest \(held.digest ?? "-")")
            guard wait > 0, let digest = held.digest else { return }
            try await waitForMembers(
                connection: connection, wait: wait, digest: digest,
                revoked: Set(held.revocations.filter { $0.role == .node && $0.serial == nil }.map(\.name)))
        }

        /// Whom the revocation names: the certificate file's subject, or NAME.
        private func identity(_ ca: ClusterCA) throws -> (PeerIdentity, serial: String?) {
            guard let certificateFile else { return (self.operator ? .operator(name!) : .node(name!), nil) }
            guard let data = FileManager.default.contents(atPath: certificateFile),
                let certificate = try? Certificate(pemEncoded: String(decoding: data, as: UTF8.self))
            else { throw fail("--certificate-file \(certificateFile) cannot be read as a PEM certificate") }
            guard certificate.issuer == ca.certificate.subject, let identity = PeerIdentity(certificate: certificate) else {
                throw fail("--certificate-file \(certificateFile) is not a node or operator certificate of the CA in \(pki.dir)")
            }
            return (identity, Revocation.serial(of: certificate))
        }

        /// Waits until every live member but the revoked nodes announces `digest`.
        private static func waitForMembers(connection: Connection, wait: Int, digest: String, revoked: Set<String>) async throws {
            let deadline = Date().addingTimeInterval(Double(wait))
            var told: Set<String> = []
            var missing: [String] = []
            while true {
                let members: ControlAPI.Members
                do {
                    members = try await connection.withClient { try await $0.members() }
                } catch {
                    throw fail("handed on, but cannot ask the node which members hold it (\(error)); peerctl members --json shows it (revocations)")
                }
                let live = members.members.filter { $0.status != "dead" && !revoked.contains($0.name) }
                for member in live where member.revocations == digest && !told.contains(member.name) {
                    told.insert(member.name)
                    print("  \(member.name): holds them")
                }
                missing = live.filter { $0.revocations != digest }.map(\.name)
                if missing.isEmpty || Date() > deadline { break }
                try await Task.sleep(for: .milliseconds(250))
            }
            if !missing.isEmpty {
                throw fail(
                    "not yet held by \(missing.joined(separator: ", ")) after \(wait)s (they take them from any member that has them; their logs say why not)"
                )
            }
        }
    }

    struct Revoked: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the certificate revocations a node holds.")

        @OptionGroup var connection: Connection

        @Flag(help: "Print JSON.")
        var json = false

        func run() async throws {
            let held: ControlAPI.Revocations
            do {
                held = try await connection.withClient { try await $0.revocations() }
            } catch {
                throw fail(error)
            }
            if json { return try printJSON(held) }
            if held.revocations.isEmpty { return print("no revocations") }
            for revocation in held.revocations { print(revocation.summary) }
            print("digest \(held.digest ?? "-")")
        }
    }
}

extension PKIDirectory {
    /// The revocations signed here, kept next to the CA (not a secret: 0644) so they can be handed on again.
    var revocations: String { dir + "/revoked.json" }

    func readRevocations() throws -> [Revocation] {
        guard let data = FileManager.default.contents(atPath: revocations) else { return [] }
        do {
            return try JSONDecoder().decode([Revocation].self, from: data)
        } catch {
            throw fail("\(revocations) is not a list of revocations (\(error)); move it away and revoke again")
        }
    }

    func writeRevocations(_ list: [Revocation]) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(Array(try encoder.encode(list)), to: revocations, mode: 0o644)
    }
}
