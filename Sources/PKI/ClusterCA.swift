import Crypto
import Foundation
import PeerCore
import SwiftASN1
import X509

/// Who a certificate of the cluster speaks for: a member node, or an operator (`peerctl` from a laptop or CI).
/// Encoded as the subject's organizational unit (`peer-node` / `peer-operator`) and common name (the name).
public enum PeerIdentity: Sendable, Hashable, CustomStringConvertible {
    case node(String)
    case `operator`(String)

    static let nodeUnit = "peer-node"
    static let operatorUnit = "peer-operator"

    public var name: String {
        switch self {
        case .node(let name), .operator(let name): name
        }
    }

    public var description: String {
        switch self {
        case .node(let name): "node \(name)"
        case .operator(let name): "operator \(name)"
        }
    }

    /// Why `leaf`, which names this identity, may not be used as such; nil when it may. What it may be used for,
    /// as issued: a node's both ways (it dials and is dialed), an operator's as a client. A certificate of the
    /// cluster's CA made for something else does not speak for anyone.
    public func usageProblem(of leaf: Certificate) -> String? {
        let needed: [ExtendedKeyUsage.Usage] = if case .node = self { [.serverAuth, .clientAuth] } else { [.clientAuth] }
        if let usages = (try? leaf.extensions.extendedKeyUsage).flatMap({ $0 }), needed.allSatisfy({ usages.contains($0) }) { return nil }
        let purpose = needed.count == 2 ? "server and client" : "client"
        return "the certificate of \(self) is not issued for \(purpose) authentication (extended key usage): issue it again with peerctl"
    }

    /// The identity a certificate of ours names, or nil for one that names none.
    public init?(certificate: Certificate) {
        var unit: String?
        var common: String?
        for rdn in certificate.subject {
            for attribute in rdn {
                if attribute.type == .RDNAttributeType.organizationalUnitName { unit = String(attribute.value) }
                if attribute.type == .RDNAttributeType.commonName { common = String(attribute.value) }
            }
        }
        guard let common, !common.isEmpty else { return nil }
        switch unit {
        case Self.nodeUnit: self = .node(common)
        case Self.operatorUnit: self = .operator(common)
        default: return nil
        }
    }
}

/// A certificate and its private key, as PEM text. The key is a secret: write it 0600.
public struct IssuedCertificate: Sendable {
    public let certificate: Certificate
    public let privateKey: Certificate.PrivateKey

    public init(certificate: Certificate, privateKey: Certificate.PrivateKey) {
        self.certificate = certificate
        self.privateKey = privateKey
    }

    public var certificatePEM: String { get throws { try certificate.serializeAsPEM().pemString } }
    public var privateKeyPEM: String { get throws { try privateKey.serializeAsPEM().pemString } }
}

/// The cluster's own certificate authority (ECDSA P-256). It signs one leaf per node (server and client
/// auth, naming the node and its address) and client-only leaves for operators.
public struct ClusterCA: Sendable {
    public let certificate: Certificate
    public let privateKey: Certificate.PrivateKey

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// How far back a certificate's validity starts before the moment it is issued (clocks a little behind).
    static let backdating: TimeInterval = 300

    /// A new CA for the cluster `cluster`, valid from `now` for `validityDays`.
    public static func create(cluster: String, now: Date = Date(), validityDays: Int = 3650) throws -> ClusterCA {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let name = try DistinguishedName {
            OrganizationName("peer")
            CommonName("peer cluster CA \(cluster)")
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
            notValidBefore: now.addingTimeInterval(-Self.backdating), notValidAfter: now.addingTimeInterval(Double(validityDays) * 86_400),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: key.publicKey)
            },
            issuerPrivateKey: key)
        return ClusterCA(certificate: certificate, privateKey: key)
    }

    /// Loads a CA from its PEM files' contents; says which part is wrong.
    public init(certificatePEM: String, privateKeyPEM: String) throws {
        do {
            certificate = try Certificate(pemEncoded: certificatePEM)
        } catch {
            throw Failure(description: "the CA certificate is not a PEM certificate (\(error))")
        }
        do {
            privateKey = try Certificate.PrivateKey(pemEncoded: privateKeyPEM)
        } catch {
            throw Failure(description: "the CA key is not a PEM private key (\(error))")
        }
        guard privateKey.publicKey == certificate.publicKey else {
            throw Failure(description: "the CA key does not belong to the CA certificate")
        }
    }

    init(certificate: Certificate, privateKey: Certificate.PrivateKey) {
        self.certificate = certificate
        self.privateKey = privateKey
    }

    /// A node's certificate: server and client auth, subject `peer-node/NAME`, SANs for the name and address.
    public func issueNode(name: String, address: String, now: Date = Date(), validityDays: Int = 397) throws -> IssuedCertificate {
        guard let ip = ipAddressBytes(address) else {
            throw Failure(description: "\"\(address)\" is not an IPv4 or IPv6 address")
        }
        return try issue(
            identity: .node(name), now: now, validityDays: validityDays,
            usages: [.serverAuth, .clientAuth], alternativeNames: [.dnsName(name), .ipAddress(ASN1OctetString(contentBytes: ip[...]))])
    }

    /// An operator's certificate (peerctl from a laptop or CI): client auth only, for what `scopes` allow — written
    /// into the certificate (``OperatorScope``), so the CA's signature vouches for them.
    public func issueOperator(
        name: String, scopes: Set<OperatorScope> = [.admin], now: Date = Date(), validityDays: Int = 90
    ) throws -> IssuedCertificate {
        guard !scopes.isEmpty else { throw Failure(description: "an operator needs at least one scope: read, deploy, tls or admin") }
        guard (1...OperatorScope.maximumDays).contains(validityDays) else {
            throw Failure(
                description:
                    "an operator certificate is valid 1 to \(OperatorScope.maximumDays) days, not \(validityDays): issue a new one when it ends")
        }
        return try issue(
            identity: .operator(name), now: now, validityDays: validityDays, usages: [.clientAuth],
            alternativeNames: scopes.sorted().map { .uniformResourceIdentifier(OperatorScope.uriPrefix + $0.rawValue) })
    }

    private func issue(
        identity: PeerIdentity, now: Date, validityDays: Int, usages: [ExtendedKeyUsage.Usage], alternativeNames: [GeneralName]
    ) throws -> IssuedCertificate {
        guard isValidPeerName(identity.name) else {
            throw Failure(description: "\"\(identity.name)\" is not a valid name: use 1-63 lowercase letters, digits or '-'")
        }
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let unit = if case .node = identity { PeerIdentity.nodeUnit } else { PeerIdentity.operatorUnit }
        let subject = try DistinguishedName {
            OrganizationName("peer")
            OrganizationalUnitName(unit)
            CommonName(identity.name)
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
            notValidBefore: now.addingTimeInterval(-Self.backdating), notValidAfter: now.addingTimeInterval(Double(validityDays) * 86_400),
            issuer: self.certificate.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage(usages)
                if !alternativeNames.isEmpty { SubjectAlternativeNames(alternativeNames) }
                AuthorityKeyIdentifier(keyIdentifier: try self.certificate.extensions.subjectKeyIdentifier?.keyIdentifier)
            },
            issuerPrivateKey: privateKey)
        return IssuedCertificate(certificate: certificate, privateKey: key)
    }

    /// Checks that `leaf` chains to this CA and is valid at `now`; returns the identity it names.
    public func verify(_ leaf: Certificate, now: Date = Date()) async throws -> PeerIdentity {
        try await Self.verify(leaf, issuedBy: certificate, now: now)
    }

    /// Checks that `leaf` chains to the CA certificate `ca` (no key needed) and is valid at `now`; returns the
    /// identity it names.
    public static func verify(_ leaf: Certificate, issuedBy ca: Certificate, now: Date = Date()) async throws -> PeerIdentity {
        var verifier = Verifier(rootCertificates: CertificateStore([ca])) {
            RFC5280Policy(validationTime: now)
        }
        switch await verifier.validate(leaf: leaf, intermediates: CertificateStore()) {
        case .validCertificate:
            guard let identity = PeerIdentity(certificate: leaf) else {
                throw Failure(description: "the certificate names no peer node or operator")
            }
            if let problem = identity.usageProblem(of: leaf) { throw Failure(description: problem) }
            return identity
        case .couldNotValidate(let failures):
            let reasons = failures.map { "\($0.policyFailureReason)" }.joined(separator: "; ")
            throw Failure(description: "the certificate does not chain to this cluster's CA or is not valid now: \(reasons)")
        }
    }

    /// Whole days from `now` until `certificate` expires (negative once expired).
    public static func daysLeft(_ certificate: Certificate, now: Date = Date()) -> Int {
        Int((certificate.notValidAfter.timeIntervalSince(now) / 86_400).rounded(.down))
    }
}
