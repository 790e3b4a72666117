import Foundation
import PKI
import PeerConfiguration
import PeerTestKit
import Testing

@testable import PeerDaemon

/// What a node does with an origin pair a member sends it (`OriginTLSService.refusal`): it takes one only from an
/// app node, and only with the signature of the cluster CA or of an operator with the tls scope over that very
/// certificate and date — a member whose key was stolen cannot hand the cluster a certificate of its making.
/// Mutation: the signature not required (`guard let authority` gone, nil taken) — caught by the unsigned case.
@Suite struct OriginAdmissionTests {
    @Test func aPairFromAMemberIsTakenOnlyWithTheCAsOrAnOperatorsSignature() async throws {
        let pki = try ConfigTests.pkiFiles()
        defer { try? FileManager.default.removeItem(atPath: pki) }
        let members =
            "    - name: web-1\n      address: 10.0.0.5:7946\n    - name: web-2\n      address: 10.0.0.6:7946\n"
            + "    - name: w\n      address: 10.0.0.7:7946\n      role: witness\n"
        let config = try PeerConfig.parse(ConfigTests.meshYAML(pki, members: members), path: "/etc/peer/peer.yml", environment: [:])
        let ca = try ClusterCA.create(cluster: "prod")
        let leaf = try TestOriginCA().issue(names: ["shop.example.com"])
        let caKey = try ca.privateKey.serializeAsPEM().pemString
        func refusal(_ authority: OriginAuthority?, setAt: Int64 = 1_000, from member: String = "web-2") async -> String? {
            await OriginTLSService.refusal(
                of: leaf.pair, setAt: setAt, authority: authority, from: member, config: config, ca: ca.certificate, revocations: RevocationList())
        }
        let signed = try OriginAuthority.sign(certificatePEM: leaf.certificatePEM, setAt: 1_000, keyPEM: caKey)
        #expect(await refusal(signed) == nil)
        #expect(await refusal(nil)?.contains("no signature") == true)
        #expect(await refusal(signed, setAt: 9_000)?.contains("another date") == true, "a member cannot date an old pair anew")
        #expect(await refusal(signed, from: "w")?.contains("only app nodes") == true)
        #expect(await refusal(signed, from: "stranger")?.contains("only app nodes") == true)
        // Signed by a member's own node key: no one's.
        let node = try ca.issueNode(name: "web-2", address: "10.0.0.6")
        let bySelf = try OriginAuthority.sign(
            certificatePEM: leaf.certificatePEM, setAt: 1_000, keyPEM: try node.privateKeyPEM, operatorCertificatePEM: try node.certificatePEM)
        #expect(await refusal(bySelf)?.contains("no valid operator") == true)
    }
}
