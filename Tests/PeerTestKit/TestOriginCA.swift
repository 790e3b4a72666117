import Crypto
import Foundation
import PKI
import SwiftASN1
import X509

/// A certificate authority made in the test, standing in for Cloudflare's Origin CA (server certificates for
/// nginx) or for Cloudflare's Authenticated Origin Pulls CA (the client certificate Cloudflare presents).
public struct TestOriginCA: Sendable {
    public let certificate: Certificate
    let key: Certificate.PrivateKey

    public var certificatePEM: String { (try? certificate.serializeAsPEM().pemString) ?? "" }

    public init(name: String = "Test Origin CA") throws {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        self.key = key
        let subject = try DistinguishedName {
            OrganizationName("peer tests")
            CommonName(name)
        }
        certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
            notValidBefore: Date().addingTimeInterval(-86_400), notValidAfter: Date().addingTimeInterval(20 * 365 * 86_400),
            issuer: subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: key.publicKey)
            },
            issuerPrivateKey: key)
    }

    public struct Leaf: Sendable {
        public let certificatePEM: String
        public let keyPEM: String
        /// SHA-256 of the DER, lowercase hex.
        public let fingerprint: String
        public var pair: OriginPair { OriginPair(certificatePEM: certificatePEM, keyPEM: keyPEM) }

        public init(certificatePEM: String, keyPEM: String, fingerprint: String) {
            self.certificatePEM = certificatePEM
            self.keyPEM = keyPEM
            self.fingerprint = fingerprint
        }
    }

    /// A leaf for `names` (server auth; `client`: client auth, as Cloudflare's origin-pull certificate).
    public func issue(
        names: [String], notBefore: Date = Date().addingTimeInterval(-3600), notAfter: Date = Date().addingTimeInterval(90 * 86_400),
        client: Bool = false
    ) throws -> Leaf {
        let leafKey = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let subject = try DistinguishedName {
            OrganizationName("peer tests")
            CommonName(names.first ?? "client")
        }
        let leaf = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: leafKey.publicKey,
            notValidBefore: notBefore, notValidAfter: notAfter, issuer: certificate.subject, subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([client ? .clientAuth : .serverAuth])
                if !names.isEmpty { SubjectAlternativeNames(names.map { .dnsName($0) }) }
                AuthorityKeyIdentifier(keyIdentifier: try certificate.extensions.subjectKeyIdentifier?.keyIdentifier)
            },
            issuerPrivateKey: key)
        var serializer = DER.Serializer()
        try serializer.serialize(leaf)
        let fingerprint = SHA256.hash(data: serializer.serializedBytes).map { String(format: "%02x", $0) }.joined()
        return Leaf(
            certificatePEM: try leaf.serializeAsPEM().pemString + "\n", keyPEM: try leafKey.serializeAsPEM().pemString + "\n",
            fingerprint: fingerprint)
    }
}

extension ClusterCA {
    /// A certificate this CA signs for node `name`, but with other extended key usages than peer issues a node's
    /// (nil: none at all): what a CA key used for something else could have signed.
    public func issueNode(name: String, usages: [ExtendedKeyUsage.Usage]?) throws -> IssuedCertificate {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let leaf = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
            notValidBefore: Date().addingTimeInterval(-60), notValidAfter: Date().addingTimeInterval(86_400), issuer: certificate.subject,
            subject: try DistinguishedName {
                OrganizationName("peer")
                OrganizationalUnitName("peer-node")
                CommonName(name)
            }, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                if let usages { try ExtendedKeyUsage(usages) }
            }, issuerPrivateKey: privateKey)
        return IssuedCertificate(certificate: leaf, privateKey: key)
    }
}
