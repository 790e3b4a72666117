import Crypto
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import PKI
import X509

/// The mesh's mutual TLS: TLS 1.3 only, both sides present a certificate of the cluster CA, and the peer's
/// certificate must name someone `accept` allows (a configured member, or an operator where that is wanted).
/// Hostname verification is replaced by that identity check, not skipped.
public struct MeshTLS: Sendable {
    public let caCertificate: Certificate
    let chain: [NIOSSLCertificate]
    let key: NIOSSLPrivateKey
    /// The same node key, for the datagram keys (static ECDH with each member's certificate key).
    let agreementKey: P256.KeyAgreement.PrivateKey
    let accept: @Sendable (PeerIdentity) -> Bool
    /// The revocations this side enforces (nil: none, as for `peerctl`, which trusts the node it names).
    public let revocations: RevocationGuard?

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public init(
        caPEM: String, certificatePEM: String, keyPEM: String, revocations: RevocationGuard? = nil,
        accept: @escaping @Sendable (PeerIdentity) -> Bool
    ) throws {
        do {
            caCertificate = try Certificate(pemEncoded: caPEM)
            chain = try NIOSSLCertificate.fromPEMBytes(Array(certificatePEM.utf8))
            key = try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)
            agreementKey = try P256.KeyAgreement.PrivateKey(pemRepresentation: keyPEM)
        } catch {
            throw Failure(description: "cannot load the mesh certificate, key or CA: \(error)")
        }
        self.accept = accept
        self.revocations = revocations
    }

    func serverContext() throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv13
        // A client certificate is required; NIOSSL's hostname check is off because there is no host name to
        // check on the mesh: verificationCallback checks chain, validity and identity instead.
        configuration.certificateVerification = .noHostnameVerification
        return try NIOSSLContext(configuration: configuration)
    }

    func clientContext() throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateChain = chain.map { .certificate($0) }
        configuration.privateKey = .privateKey(key)
        configuration.minimumTLSVersion = .tlsv13
        configuration.certificateVerification = .noHostnameVerification  // identity: see verificationCallback
        return try NIOSSLContext(configuration: configuration)
    }

    /// The whole check, replacing BoringSSL's: chain to our CA, valid now, not revoked, names someone we accept.
    /// The identity it found is stored in `identity` for the connection.
    func verificationCallback(
        identity: NIOLockedValueBox<Verified?>, refusal: NIOLockedValueBox<String?>
    )
        -> NIOSSLCustomVerificationCallback
    {
        let ca = caCertificate
        let accept = self.accept
        let revocations = self.revocations
        return { presented, promise in
            promise.completeWithTask {
                guard let first = presented.first, let leaf = try? Certificate(derEncoded: try first.toDERBytes()) else {
                    refusal.withLockedValue { $0 = "no certificate presented" }
                    return .failed
                }
                var verifier = Verifier(rootCertificates: CertificateStore([ca])) { RFC5280Policy() }
                let intermediates = CertificateStore(presented.dropFirst().compactMap { try? Certificate(derEncoded: try $0.toDERBytes()) })
                guard case .validCertificate = await verifier.validate(leaf: leaf, intermediates: intermediates) else {
                    refusal.withLockedValue { $0 = "certificate \(leaf.subject) does not chain to the cluster CA or is not valid now" }
                    return .failed
                }
                if let revoked = revocations?.refusal(of: leaf) {
                    refusal.withLockedValue { $0 = revoked }
                    return .failed
                }
                guard let who = PeerIdentity(certificate: leaf), accept(who) else {
                    refusal.withLockedValue { $0 = "certificate \(leaf.subject) names no one this node accepts" }
                    return .failed
                }
                if let problem = who.usageProblem(of: leaf) {
                    refusal.withLockedValue { $0 = problem }
                    return .failed
                }
                identity.withLockedValue { $0 = Verified(identity: who, certificate: leaf) }
                return .certificateVerified
            }
        }
    }
}

/// A peer that passed the check, with the certificate it presented.
struct Verified: Sendable {
    var identity: PeerIdentity
    var certificate: Certificate
}

/// One log line per source per interval for refused connections: a scanner or a misconfigured peer cannot
/// flood the log. Pure: time comes in.
public struct RefusalLogLimiter: Sendable {
    public let interval: Duration
    private var last: [String: ContinuousClock.Instant] = [:]

    public init(interval: Duration = .seconds(60)) { self.interval = interval }

    /// Whether to log a refusal from `source` now; counts the ones it swallows.
    public mutating func shouldLog(_ source: String, now: ContinuousClock.Instant) -> Bool {
        if let previous = last[source], now - previous < interval { return false }
        last[source] = now
        if last.count > 10_000 { last = last.filter { now - $0.value < interval } }
        return true
    }
}
