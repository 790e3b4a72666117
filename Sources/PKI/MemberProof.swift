import Crypto
import Foundation
import X509

/// A member's signature over what it says about itself at one incarnation — its id, the incarnation and its app
/// status — made with its node key, so the members that relay its state cannot change what it claims (the
/// membership's gossip is otherwise anyone's to rewrite). Checked against the certificate the member presented in
/// a verified mesh handshake.
///
/// The signed bytes are a version tag, the id, the incarnation and the status's JSON with sorted keys, so a
/// receiver rebuilds them from the decoded value. A later field of the status changes the JSON: a peerd that does
/// not know the field cannot check the claim and takes it first-hand only.
public struct MemberProof: Sendable {
    private let key: P256.Signing.PrivateKey
    /// The last claim signed and its proof: a member signs its state once per incarnation, not per datagram.
    private var last: (claim: Data, proof: String)?

    public init(keyPEM: String) throws {
        do {
            key = try P256.Signing.PrivateKey(pemRepresentation: keyPEM)
        } catch {
            throw ClusterCA.Failure(description: "the mesh key is not a P-256 private key in PEM: \(error)")
        }
    }

    /// The bytes a proof covers.
    public static func claim(id: String, incarnation: UInt64, app: some Encodable) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var claim = Data("peer-member-claim-v1\n\(id)\n\(incarnation)\n".utf8)
        claim.append((try? encoder.encode(app)) ?? Data())
        return claim
    }

    /// The proof of `claim`: a raw ECDSA P-256 SHA-256 signature, base64 (88 characters).
    public mutating func proof(of claim: Data) -> String? {
        if let last, last.claim == claim { return last.proof }
        guard let signature = try? key.signature(for: claim) else { return nil }
        let proof = signature.rawRepresentation.base64EncodedString()
        last = (claim, proof)
        return proof
    }

    /// Whether `proof` is the signature of `claim` by the key of `certificate`.
    public static func verifies(_ proof: String?, of claim: Data, by certificate: Certificate) -> Bool {
        guard let proof, proof.utf8.count <= 128, let raw = Data(base64Encoded: proof),
            let signature = try? P256.Signing.ECDSASignature(rawRepresentation: raw),
            let key = P256.Signing.PublicKey(certificate.publicKey)
        else { return false }
        return key.isValidSignature(signature, for: claim)
    }
}
