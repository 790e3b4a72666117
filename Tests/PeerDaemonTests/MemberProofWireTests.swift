import Cluster
import Foundation
import Membership
import PKI
import PeerCore
import Testing

@testable import PeerDaemon

/// A member's signature is made over its state as the sender holds it and checked over the state as the receiver
/// decoded it from the datagram's JSON: the two must give the same bytes, for every field a status carries
/// (unicode, slashes and all), or every relayed claim is refused (`bad_signature`) and app changes spread only
/// first-hand.
@Suite struct MemberProofWireTests {
    @Test func aStateSignedBeforeSendingChecksOutAfterTheWireForEveryField() throws {
        let ca = try ClusterCA.create(cluster: "prod")
        let web1 = try ca.issueNode(name: "web-1", address: "10.0.0.1")
        var signer = try MemberProof(keyPEM: try web1.privateKeyPEM)
        var state = GoldenValues.sender
        state.app.configuration = "9f86d081884c7d65"
        state.app.revocations = "e3b0c44298fc1c14"
        state.app.lastDeploy?.reason = "panic: \"quoted\" / slashed — ünïcode ✓ \u{1}"
        state.proof = signer.proof(of: MeshService.claim(state))
        #expect(state.proof != nil)
        var relayed = GoldenValues.suspect
        relayed.proof = "AAAA"
        let datagram = MeshNode.Datagram.swim(MeshNode.Swim.Envelope(sender: state, message: .ping(seq: 3), gossip: [state, relayed]))
        let decoded = try JSONDecoder().decode(MeshNode.Datagram.self, from: try JSONEncoder().encode(datagram))
        guard case .swim(let envelope) = decoded else {
            Issue.record("not a SWIM datagram")
            return
        }
        for copy in [envelope.sender, envelope.gossip[0]] {
            #expect(MemberProof.verifies(copy.proof, of: MeshService.claim(copy), by: web1.certificate))
        }
        // What a relay changes no longer checks out.
        var changed = envelope.gossip[0]
        changed.app.healthy = false
        #expect(!MemberProof.verifies(changed.proof, of: MeshService.claim(changed), by: web1.certificate))
        #expect(envelope.gossip[1].proof == "AAAA")
    }
}
