import Foundation
import PKI
import Testing

/// A member's signature over its own state: checks out against its certificate, and against nothing else.
@Suite struct MemberProofTests {
    struct App: Codable {
        var healthy: Bool?
        var image: String?
    }

    @Test func aProofChecksOutForItsClaimAndItsMembersCertificateOnly() throws {
        let ca = try ClusterCA.create(cluster: "prod")
        let n3 = try ca.issueNode(name: "n3", address: "10.0.0.3")
        let n2 = try ca.issueNode(name: "n2", address: "10.0.0.2")
        var signer = try MemberProof(keyPEM: try n3.privateKeyPEM)
        let claim = MemberProof.claim(id: "n3", incarnation: 4, app: App(healthy: true, image: "app:2"))
        let signed = signer.proof(of: claim)
        let proof = try #require(signed)
        #expect(proof.utf8.count == 88)
        #expect(signer.proof(of: claim) == proof, "signed once per claim")
        #expect(MemberProof.verifies(proof, of: claim, by: n3.certificate))
        // Another member's certificate, another incarnation, another app, another member's name: no.
        #expect(!MemberProof.verifies(proof, of: claim, by: n2.certificate))
        for (id, incarnation, healthy) in [("n3", UInt64(5), true), ("n3", 4, false), ("n2", 4, true)] {
            let other = MemberProof.claim(id: id, incarnation: incarnation, app: App(healthy: healthy, image: "app:2"))
            #expect(!MemberProof.verifies(proof, of: other, by: n3.certificate))
        }
        // No proof, garbage, a huge string: no, without a crash.
        #expect(!MemberProof.verifies(nil, of: claim, by: n3.certificate))
        #expect(!MemberProof.verifies("not base64 at all", of: claim, by: n3.certificate))
        #expect(!MemberProof.verifies(String(repeating: "A", count: 100_000), of: claim, by: n3.certificate))
        #expect(throws: ClusterCA.Failure.self) { try MemberProof(keyPEM: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n") }
    }
}
