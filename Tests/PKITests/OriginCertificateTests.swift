import Foundation
import PKI
import PeerTestKit
import Testing

/// What `peerctl tls set` accepts and refuses, before anything changes on any node.
@Suite struct OriginCertificateTests {
    let ca: TestOriginCA
    init() throws { ca = try TestOriginCA() }

    @Test func aMatchingValidPairCoveringTheHostIsAccepted() throws {
        let leaf = try ca.issue(names: ["example.test", "*.example.test"])
        let info = try OriginCertificate.validate(leaf.pair, hostname: "shop.example.test")
        #expect(info.fingerprint == leaf.fingerprint)
        #expect(info.names == ["example.test", "*.example.test"])
        #expect((88...90).contains(info.daysLeft()))
        // The leaf followed by its chain is what Cloudflare's "PEM with chain" looks like.
        let chained = OriginPair(certificatePEM: leaf.certificatePEM + ca.certificatePEM, keyPEM: leaf.keyPEM)
        #expect(try OriginCertificate.validate(chained, hostname: "example.test").fingerprint == leaf.fingerprint)
    }

    @Test func theKeyOfAnotherCertificateIsRefused() throws {
        let one = try ca.issue(names: ["shop.example.test"])
        let other = try ca.issue(names: ["shop.example.test"])
        let error = #expect(throws: OriginCertificate.Rejected.self) {
            try OriginCertificate.validate(OriginPair(certificatePEM: one.certificatePEM, keyPEM: other.keyPEM), hostname: "shop.example.test")
        }
        #expect(error?.description.contains("does not belong to the certificate") == true)
    }

    @Test func expiredAndNotYetValidCertificatesAreRefused() throws {
        let expired = try ca.issue(
            names: ["shop.example.test"], notBefore: Date().addingTimeInterval(-90 * 86_400), notAfter: Date().addingTimeInterval(-60))
        let error = #expect(throws: OriginCertificate.Rejected.self) { try OriginCertificate.validate(expired.pair, hostname: "shop.example.test") }
        #expect(error?.description.contains("expired") == true)
        let future = try ca.issue(names: ["shop.example.test"], notBefore: Date().addingTimeInterval(86_400))
        let early = #expect(throws: OriginCertificate.Rejected.self) { try OriginCertificate.validate(future.pair, hostname: "shop.example.test") }
        #expect(early?.description.contains("not valid before") == true)
    }

    @Test func aCertificateForAnotherHostIsRefusedNamingWhatItCovers() throws {
        let leaf = try ca.issue(names: ["other.test", "*.other.test"])
        let error = #expect(throws: OriginCertificate.Rejected.self) { try OriginCertificate.validate(leaf.pair, hostname: "shop.example.test") }
        #expect(error?.description.contains("does not cover shop.example.test") == true)
        #expect(error?.description.contains("other.test, *.other.test") == true)
    }

    @Test func wildcardsCoverOneLabelOnly() {
        #expect(OriginCertificate.covers(["*.example.test"], hostname: "shop.example.test"))
        #expect(OriginCertificate.covers(["*.example.test"], hostname: "SHOP.example.test."))
        #expect(!OriginCertificate.covers(["*.example.test"], hostname: "example.test"))
        #expect(!OriginCertificate.covers(["*.example.test"], hostname: "a.shop.example.test"))
        #expect(!OriginCertificate.covers(["*.example.test"], hostname: "shopexample.test"))
        #expect(OriginCertificate.covers(["example.test"], hostname: "example.test"))
        #expect(!OriginCertificate.covers([], hostname: "example.test"))
    }

    @Test func swappedOrGarbledFilesAreRefusedWithoutEchoingTheKey() throws {
        let leaf = try ca.issue(names: ["shop.example.test"])
        let swapped = #expect(throws: OriginCertificate.Rejected.self) {
            try OriginCertificate.validate(OriginPair(certificatePEM: leaf.keyPEM, keyPEM: leaf.certificatePEM), hostname: "shop.example.test")
        }
        #expect(swapped?.description.contains("swap") == true)
        let garbled = #expect(throws: OriginCertificate.Rejected.self) {
            try OriginCertificate.validate(OriginPair(certificatePEM: leaf.certificatePEM, keyPEM: "not a key"), hostname: "shop.example.test")
        }
        #expect(garbled?.description.contains("not a PEM private key") == true)
        let body = leaf.keyPEM.split(separator: "\n").dropFirst().first.map(String.init) ?? "x"
        #expect(swapped?.description.contains(body) == false)
    }

    /// Cloudflare's dashboard makes RSA keys by default (PKCS#8 "PRIVATE KEY"); made here with openssl.
    @Test func anRSAPairMadeByOpenSSLIsAccepted() throws {
        let dir = NSTemporaryDirectory() + "peer-origin-rsa-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let made = try Shell.run(
            "openssl",
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem", "-days", "30",
                "-subj", "/O=CloudFlare, Inc./CN=CloudFlare Origin Certificate", "-addext", "subjectAltName=DNS:*.example.test,DNS:example.test",
            ])
        try #require(made.status == 0, "\(made.output)")
        let pair = OriginPair(
            certificatePEM: try String(contentsOfFile: dir + "/cert.pem", encoding: .utf8),
            keyPEM: try String(contentsOfFile: dir + "/key.pem", encoding: .utf8))
        #expect(pair.keyPEM.contains("BEGIN PRIVATE KEY"))
        let info = try OriginCertificate.validate(pair, hostname: "shop.example.test")
        #expect(info.daysLeft() == 29)
    }
}
