import Crypto
import Foundation
import PeerCore
import SwiftASN1
import X509

/// The certificate nginx presents to Cloudflare (a Cloudflare Origin CA certificate, or any other) and its key,
/// as the operator hands them to `peerctl tls set`. The key is a secret: it is written 0600 and never printed.
public struct OriginPair: Sendable, Hashable, Codable {
    /// The leaf first, then any intermediates, PEM.
    public var certificatePEM: String
    public var keyPEM: String

    public init(certificatePEM: String, keyPEM: String) {
        self.certificatePEM = certificatePEM
        self.keyPEM = keyPEM
    }
}

/// What can be said about an origin certificate without its key: shown by `peerctl status` and gossiped.
public struct OriginCertificateInfo: Sendable, Hashable, Codable {
    /// SHA-256 of the leaf's DER, lowercase hex.
    public var fingerprint: String
    /// The DNS names of the subject alternative names.
    public var names: [String]
    public var issuer: String
    public var notValidBefore: Date
    public var notValidAfter: Date

    public func daysLeft(now: Date = Date()) -> Int {
        Int((notValidAfter.timeIntervalSince(now) / 86_400).rounded(.down))
    }
}

/// Checks an origin pair before anything changes: both parse, the key belongs to the certificate, the
/// certificate is valid now, and its names cover the site's hostname.
public enum OriginCertificate {
    public struct Rejected: Error, CustomStringConvertible, Equatable {
        public let description: String
    }

    public static func validate(_ pair: OriginPair, hostname: String, now: Date = Date()) throws -> OriginCertificateInfo {
        let documents: [PEMDocument]
        do {
            documents = try PEMDocument.parseMultiple(pemString: pair.certificatePEM)
        } catch {
            throw Rejected(description: "the certificate file is not PEM (expected -----BEGIN CERTIFICATE-----)")
        }
        guard let first = documents.first(where: { $0.discriminator == "CERTIFICATE" }) else {
            throw Rejected(description: "the certificate file holds no CERTIFICATE block; did you swap --cert and --key?")
        }
        let certificate: Certificate
        do {
            certificate = try Certificate(pemDocument: first)
        } catch {
            throw Rejected(description: "the certificate cannot be read: \(error)")
        }
        let key: Certificate.PrivateKey
        do {
            key = try Certificate.PrivateKey(pemEncoded: pair.keyPEM)
        } catch {
            // Never echo the key's text, not even in part.
            throw Rejected(description: "the key file is not a PEM private key (RSA, EC or PKCS#8); did you swap --cert and --key?")
        }
        guard key.publicKey == certificate.publicKey else {
            throw Rejected(description: "the key does not belong to the certificate: pass the key made with this certificate's CSR")
        }
        let info = Self.info(certificate)
        guard now >= certificate.notValidBefore else {
            throw Rejected(description: "the certificate is not valid before \(Self.format(certificate.notValidBefore)); check this machine's clock")
        }
        guard now < certificate.notValidAfter else {
            throw Rejected(
                description:
                    "the certificate expired on \(Self.format(certificate.notValidAfter)); create a new one (Cloudflare dashboard: SSL/TLS › Origin Server)"
            )
        }
        guard covers(info.names, hostname: hostname) else {
            let names = info.names.isEmpty ? "no DNS names" : info.names.joined(separator: ", ")
            throw Rejected(description: "the certificate does not cover \(hostname) (it names \(names)); create one that includes \(hostname)")
        }
        return info
    }

    /// The certificate's public facts (it must parse: call after ``validate(_:hostname:now:)``).
    public static func info(certificatePEM: String) throws -> OriginCertificateInfo {
        guard let first = try PEMDocument.parseMultiple(pemString: certificatePEM).first(where: { $0.discriminator == "CERTIFICATE" }) else {
            throw Rejected(description: "no CERTIFICATE block")
        }
        return info(try Certificate(pemDocument: first))
    }

    static func info(_ certificate: Certificate) -> OriginCertificateInfo {
        var names: [String] = []
        if let san = try? certificate.extensions.subjectAlternativeNames {
            for name in san {
                if case .dnsName(let dns) = name { names.append(dns.lowercased()) }
            }
        }
        return OriginCertificateInfo(
            fingerprint: (try? certificate.fingerprint()) ?? fingerprint(der: []), names: names, issuer: "\(certificate.issuer)",
            notValidBefore: certificate.notValidBefore,
            notValidAfter: certificate.notValidAfter)
    }

    /// How peer names a certificate: the SHA-256 of its DER encoding, lowercase hex (what `openssl x509
    /// -fingerprint -sha256` prints, without the colons).
    public static func fingerprint(der: some Sequence<UInt8>) -> String { sha256Hex(der) }

    /// Whether `names` cover `hostname`: exactly, or by a single-level wildcard (`*.example.com` covers
    /// `app.example.com`, not `example.com` nor `a.b.example.com`).
    public static func covers(_ names: [String], hostname: String) -> Bool {
        let host = hostname.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "."))
        return names.contains { name in
            let name = name.lowercased()
            if name == host { return true }
            guard name.hasPrefix("*.") else { return false }
            let suffix = name.dropFirst(1)  // ".example.com"
            guard host.hasSuffix(suffix) else { return false }
            let label = host.dropLast(suffix.count)
            return !label.isEmpty && !label.contains(".")
        }
    }

    /// `2026-11-27` (UTC).
    static func format(_ date: Date) -> String {
        String(ISO8601.format(seconds: Int64(date.timeIntervalSince1970.rounded(.down))).prefix(10))
    }
}

/// The SHA-256 of `bytes`, lowercase hex.
public func sha256Hex(_ bytes: some Sequence<UInt8>) -> String { lowercaseHex(SHA256.hash(data: Array(bytes))) }

/// `bytes` as lowercase hex, two digits each, no separators.
func lowercaseHex(_ bytes: some Sequence<UInt8>) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

extension Certificate {
    /// How peer names a certificate (``OriginCertificate/fingerprint(der:)``): an origin certificate nginx serves,
    /// or which certificate a member presented (a rotated one has another).
    public func fingerprint() throws -> String {
        var serializer = DER.Serializer()
        try serializer.serialize(self)
        return sha256Hex(serializer.serializedBytes)
    }
}
