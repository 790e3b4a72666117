import Foundation
import PKI
import PeerTestKit
import Testing

/// Who may let an origin certificate into the cluster: the cluster CA, or an operator of this cluster with the
/// tls scope whose certificate is not revoked — over this very certificate and date. A member's key is no one.
@Suite struct OriginAuthorityTests {
    let ca: ClusterCA
    let origin: TestOriginCA
    let t0 = Date()

    init() throws {
        ca = try ClusterCA.create(cluster: "prod")
        origin = try TestOriginCA()
    }

    func refusal(_ authority: OriginAuthority, of certificatePEM: String, revocations: RevocationList = RevocationList()) async -> String? {
        do {
            _ = try await authority.signer(of: certificatePEM, ca: ca.certificate, revocations: revocations)
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test func theCAOrAnOperatorWithTheTLSScopeLetsAPairInAndNoOneElse() async throws {
        let leaf = try origin.issue(names: ["example.test"])
        let other = try origin.issue(names: ["example.test"])
        let caKey = try ca.privateKey.serializeAsPEM().pemString

        let byCA = try OriginAuthority.sign(certificatePEM: leaf.certificatePEM, setAt: 1_000, keyPEM: caKey)
        #expect(try await byCA.signer(of: leaf.certificatePEM, ca: ca.certificate, revocations: RevocationList()) == "the cluster CA")
        // Not for another certificate, nor re-dated (a member would make an old pair win again), nor another CA's.
        #expect(await refusal(byCA, of: other.certificatePEM) != nil)
        var redated = byCA
        redated.setAt = 2_000
        #expect(await refusal(redated, of: leaf.certificatePEM) != nil)
        let stranger = try ClusterCA.create(cluster: "prod")
        let byStranger = try OriginAuthority.sign(
            certificatePEM: leaf.certificatePEM, setAt: 1_000, keyPEM: try stranger.privateKey.serializeAsPEM().pemString)
        #expect(await refusal(byStranger, of: leaf.certificatePEM)?.contains("not the cluster CA's") == true)

        // An operator with the tls scope: yes; with deploy only: no, and the refusal says how to fix it.
        let tls = try ca.issueOperator(name: "alice", scopes: [.tls])
        let byAlice = try OriginAuthority.sign(
            certificatePEM: leaf.certificatePEM, setAt: 1_000, keyPEM: try tls.privateKeyPEM, operatorCertificatePEM: try tls.certificatePEM)
        #expect(try await byAlice.signer(of: leaf.certificatePEM, ca: ca.certificate, revocations: RevocationList()) == "operator alice")
        let ci = try ca.issueOperator(name: "ci", scopes: [.deploy])
        let byCI = try OriginAuthority.sign(
            certificatePEM: leaf.certificatePEM, setAt: 1_000, keyPEM: try ci.privateKeyPEM, operatorCertificatePEM: try ci.certificatePEM)
        #expect(await refusal(byCI, of: leaf.certificatePEM)?.contains("--scope tls") == true)
        // Revoked: no.
        var revoked = RevocationList()
        revoked.merge([try ca.revoke(.operator("alice"))], ca: ca.certificate)
        #expect(await refusal(byAlice, of: leaf.certificatePEM, revocations: revoked)?.contains("revoked") == true)
        // A node's certificate and key (a member that signs for itself): no.
        let node = try ca.issueNode(name: "web-2", address: "10.0.0.2")
        let byNode = try OriginAuthority.sign(
            certificatePEM: leaf.certificatePEM, setAt: 1_000, keyPEM: try node.privateKeyPEM, operatorCertificatePEM: try node.certificatePEM)
        #expect(await refusal(byNode, of: leaf.certificatePEM)?.contains("no valid operator") == true)
        // The operator's certificate with someone else's signature: no.
        var swapped = byCI
        swapped.operatorCertificate = try tls.certificatePEM
        #expect(await refusal(swapped, of: leaf.certificatePEM)?.contains("not operator alice's") == true)
        // Garbage: refused, no crash.
        var garbage = byCA
        garbage.signature = String(repeating: "A", count: 10_000)
        #expect(await refusal(garbage, of: leaf.certificatePEM) != nil)
    }
}
