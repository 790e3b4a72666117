import Crypto
import Foundation
import X509

/// Who let an origin certificate into the cluster: a signature, by the cluster CA's key or by an operator whose
/// certificate has the `tls` scope, over the certificate's SHA-256 and the moment it was set. It travels with the
/// pair from node to node, so a node takes a pair from a member only when someone who may set one signed it — not
/// because a member (whose key could be stolen) sends it. `peerctl tls set` signs: with the CA key where it is
/// (next to `mesh.ca`), or with the operator key it is given.
public struct OriginAuthority: Codable, Sendable, Hashable {
    /// When it was set (milliseconds since 1970, the signer's clock): the newest pair wins in the cluster, and a
    /// member cannot date an old pair anew.
    public var setAt: Int64
    /// The signing operator's certificate (PEM); nil when the cluster CA's key signed.
    public var operatorCertificate: String?
    /// ECDSA P-256 SHA-256 over ``signedText(fingerprint:setAt:)``, DER, base64.
    public var signature: String

    static func signedText(fingerprint: String, setAt: Int64) -> Data { Data("peer-origin-v1\n\(fingerprint)\n\(setAt)".utf8) }

    /// Signs the origin certificate `certificatePEM` as set at `setAt` with `keyPEM`: the CA's key
    /// (`operatorCertificatePEM` nil) or an operator's.
    public static func sign(certificatePEM: String, setAt: Int64, keyPEM: String, operatorCertificatePEM: String? = nil) throws -> OriginAuthority {
        let fingerprint = try OriginCertificate.info(certificatePEM: certificatePEM).fingerprint
        let key: P256.Signing.PrivateKey
        do {
            key = try P256.Signing.PrivateKey(pemRepresentation: keyPEM)
        } catch {
            throw ClusterCA.Failure(description: "the signing key is not a P-256 private key in PEM")
        }
        let signature = try key.signature(for: signedText(fingerprint: fingerprint, setAt: setAt))
        return OriginAuthority(
            setAt: setAt, operatorCertificate: operatorCertificatePEM, signature: signature.derRepresentation.base64EncodedString())
    }

    /// Who signed — "the cluster CA" or "operator NAME" — when this lets in the origin certificate `certificatePEM`:
    /// the signature checks out, and an operator's certificate chains to `ca`, is valid at `now`, has the `tls`
    /// scope and is not revoked. Throws why not otherwise.
    public func signer(of certificatePEM: String, ca: Certificate, revocations: RevocationList, now: Date = Date()) async throws -> String {
        let fingerprint = try OriginCertificate.info(certificatePEM: certificatePEM).fingerprint
        guard signature.utf8.count <= 256, let der = Data(base64Encoded: signature),
            let parsed = try? P256.Signing.ECDSASignature(derRepresentation: der)
        else { throw ClusterCA.Failure(description: "the origin certificate's signature is malformed") }
        let text = Self.signedText(fingerprint: fingerprint, setAt: setAt)
        guard let operatorCertificate else {
            guard let key = P256.Signing.PublicKey(ca.publicKey), key.isValidSignature(parsed, for: text) else {
                throw ClusterCA.Failure(description: "the origin certificate's signature is not the cluster CA's")
            }
            return "the cluster CA"
        }
        let certificate: Certificate
        do {
            certificate = try Certificate(pemEncoded: operatorCertificate)
        } catch {
            throw ClusterCA.Failure(description: "the signing operator's certificate does not parse")
        }
        guard case .operator(let name) = try? await ClusterCA.verify(certificate, issuedBy: ca, now: now) else {
            throw ClusterCA.Failure(description: "the origin certificate is signed by a certificate that is no valid operator's of this cluster")
        }
        if let refusal = revocations.refusal(of: certificate) { throw ClusterCA.Failure(description: refusal) }
        guard OperatorScope.tls.isAllowed(by: OperatorScope.scopes(of: certificate)) else {
            throw ClusterCA.Failure(
                description: "operator \(name) may not set origin certificates (no tls scope): peerctl operator add \(name) --scope tls --force")
        }
        guard let key = P256.Signing.PublicKey(certificate.publicKey), key.isValidSignature(parsed, for: text) else {
            throw ClusterCA.Failure(description: "the origin certificate's signature is not operator \(name)'s")
        }
        return "operator \(name)"
    }
}
