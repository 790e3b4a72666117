import Foundation
import PeerTestKit
import Testing

/// `peerctl ca init` / `cert issue` / `cert issue-operator` as an operator runs them, checked with openssl.
@Suite struct PKICommandTests {
    func peerctl(_ arguments: [String]) throws -> Shell.Result {
        try Shell.run(PeerdProcess.binDirectory + "/peerctl", arguments)
    }

    func mode(_ path: String) throws -> Int? {
        try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
    }

    @Test func createsACAAndIssuesCertificatesWithPrivateKeys() throws {
        let dir = NSTemporaryDirectory() + "peer-pki-\(UUID().uuidString)/pki"
        defer { try? FileManager.default.removeItem(atPath: (dir as NSString).deletingLastPathComponent) }

        let missing = try peerctl(["cert", "issue", "web-1", "--address", "127.0.0.2", "--dir", dir])
        #expect(missing.status == 1)
        #expect(missing.output.contains("peerctl ca init --dir \(dir)"))

        let initialized = try peerctl(["ca", "init", "--dir", dir, "--cluster", "test"])
        #expect(initialized.status == 0, "\(initialized.output)")
        #expect(try mode(dir) == 0o700)
        #expect(try mode(dir + "/ca-key.pem") == 0o600)
        #expect(try mode(dir + "/ca.pem") == 0o644)
        let again = try peerctl(["ca", "init", "--dir", dir])
        #expect(again.status == 1)
        #expect(again.output.contains("already holds a CA"))

        let node = try peerctl(["cert", "issue", "web-1", "--address", "127.0.0.2", "--dir", dir])
        #expect(node.status == 0, "\(node.output)")
        #expect(try mode(dir + "/web-1-key.pem") == 0o600)
        let verified = try Shell.run("openssl", ["verify", "-CAfile", dir + "/ca.pem", "-purpose", "sslserver", dir + "/web-1.pem"])
        #expect(verified.status == 0, "\(verified.output)")
        let text = try Shell.run("openssl", ["x509", "-noout", "-text", "-in", dir + "/web-1.pem"]).output
        #expect(text.contains("IP Address:127.0.0.2"))
        #expect(text.contains("DNS:web-1"))
        #expect(text.contains("OU = peer-node") || text.contains("OU=peer-node"))

        let duplicate = try peerctl(["cert", "issue", "web-1", "--address", "127.0.0.2", "--dir", dir])
        #expect(duplicate.status == 1)
        #expect(duplicate.output.contains("--force"))

        let op = try peerctl(["cert", "issue-operator", "ci", "--dir", dir])
        #expect(op.status == 0, "\(op.output)")
        let client = try Shell.run("openssl", ["verify", "-CAfile", dir + "/ca.pem", "-purpose", "sslclient", dir + "/operator-ci.pem"])
        #expect(client.status == 0, "\(client.output)")
        let server = try Shell.run("openssl", ["verify", "-CAfile", dir + "/ca.pem", "-purpose", "sslserver", dir + "/operator-ci.pem"])
        #expect(server.status != 0, "an operator certificate must not serve")

        for output in [initialized.output, node.output, op.output] {
            #expect(!output.contains("PRIVATE KEY"), "keys are never printed")
        }

        let badAddress = try peerctl(["cert", "issue", "web-2", "--address", "example.com", "--dir", dir])
        #expect(badAddress.status == 1)
        #expect(badAddress.output.contains("is not an IPv4 or IPv6 address"))
    }
}
