import Foundation
import PKI
import PeerTestKit
import Testing
import X509

@Suite struct ClusterCATests {
    @Test func nodeCertificatesChainToTheCAAndNameTheNode() async throws {
        let ca = try ClusterCA.create(cluster: "prod")
        let leaf = try ca.issueNode(name: "web-1", address: "203.0.113.10")
        #expect(try await ca.verify(leaf.certificate) == .node("web-1"))
        let usages = try leaf.certificate.extensions.extendedKeyUsage
        #expect(usages?.contains(.serverAuth) == true && usages?.contains(.clientAuth) == true)
        let names = try leaf.certificate.extensions.subjectAlternativeNames
        #expect(names?.contains(.dnsName("web-1")) == true)
        #expect(names?.contains { if case .ipAddress(let bytes) = $0 { Array(bytes.bytes) == [203, 0, 113, 10] } else { false } } == true)
    }

    @Test func operatorCertificatesAreClientOnly() async throws {
        let ca = try ClusterCA.create(cluster: "prod")
        let leaf = try ca.issueOperator(name: "ci")
        #expect(try await ca.verify(leaf.certificate) == .operator("ci"))
        let usages = try leaf.certificate.extensions.extendedKeyUsage
        #expect(usages?.contains(.clientAuth) == true)
        #expect(usages?.contains(.serverAuth) == false)
    }

    @Test func aCertificateOfTheCAMadeForAnotherUseIsRejected() async throws {
        // Signed by the cluster's CA and naming a node, but issued for client authentication only (or with no
        // extended key usage): it does not speak for a member.
        let ca = try ClusterCA.create(cluster: "prod")
        for usages in [[ExtendedKeyUsage.Usage.clientAuth], [.serverAuth], nil] {
            let leaf = try ca.issueNode(name: "web-9", usages: usages).certificate
            do {
                _ = try await ca.verify(leaf)
                Issue.record("a node certificate with extended key usage \(String(describing: usages)) was accepted")
            } catch {
                #expect("\(error)".contains("extended key usage"), "\(error)")
            }
        }
        let node = try ca.issueNode(name: "web-1", address: "10.0.0.1")
        #expect(try await ca.verify(node.certificate) == .node("web-1"))
        let person = try ca.issueOperator(name: "ci")
        #expect(try await ca.verify(person.certificate) == .operator("ci"))
    }

    @Test func anotherClustersCertificateIsRejected() async throws {
        let ours = try ClusterCA.create(cluster: "prod")
        let theirs = try ClusterCA.create(cluster: "prod")  // same name, different key
        let leaf = try theirs.issueNode(name: "web-1", address: "203.0.113.10")
        await #expect(throws: ClusterCA.Failure.self) { try await ours.verify(leaf.certificate) }
    }

    @Test func expiredAndNotYetValidCertificatesAreRejected() async throws {
        let now = Date()
        let ca = try ClusterCA.create(cluster: "prod", now: now.addingTimeInterval(-400 * 86_400))
        let old = try ca.issueNode(name: "web-1", address: "10.0.0.1", now: now.addingTimeInterval(-30 * 86_400), validityDays: 7)
        await #expect(throws: ClusterCA.Failure.self) { try await ca.verify(old.certificate, now: now) }
        #expect(ClusterCA.daysLeft(old.certificate, now: now) < 0)
        let fresh = try ca.issueNode(name: "web-1", address: "10.0.0.1", now: now, validityDays: 30)
        #expect(ClusterCA.daysLeft(fresh.certificate, now: now) == 29 || ClusterCA.daysLeft(fresh.certificate, now: now) == 30)
        await #expect(throws: ClusterCA.Failure.self) { try await ca.verify(fresh.certificate, now: now.addingTimeInterval(-86_400)) }
    }

    @Test func pemRoundTripAndAMismatchedKeyIsNamed() throws {
        let ca = try ClusterCA.create(cluster: "prod")
        let reloaded = try ClusterCA(
            certificatePEM: try ca.certificate.serializeAsPEM().pemString, privateKeyPEM: try ca.privateKey.serializeAsPEM().pemString)
        #expect(reloaded.certificate == ca.certificate)
        let other = try ClusterCA.create(cluster: "prod")
        do {
            _ = try ClusterCA(
                certificatePEM: try ca.certificate.serializeAsPEM().pemString, privateKeyPEM: try other.privateKey.serializeAsPEM().pemString)
            Issue.record("a mismatched key was accepted")
        } catch {
            #expect("\(error)".contains("does not belong to the CA certificate"))
        }
    }

    @Test func badNamesAndAddressesAreRefused() throws {
        let ca = try ClusterCA.create(cluster: "prod")
        #expect(throws: ClusterCA.Failure.self) { try ca.issueNode(name: "Web_1", address: "203.0.113.10") }
        #expect(throws: ClusterCA.Failure.self) { try ca.issueNode(name: "web-1", address: "example.com") }
        #expect(throws: ClusterCA.Failure.self) { try ca.issueOperator(name: "") }
    }

    @Test func opensslAgreesTheChainIsValid() throws {
        let ca = try ClusterCA.create(cluster: "prod")
        let leaf = try ca.issueNode(name: "web-1", address: "127.0.0.2")
        let dir = NSTemporaryDirectory() + "peer-pki-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try ca.certificate.serializeAsPEM().pemString.write(toFile: dir + "/ca.pem", atomically: true, encoding: .utf8)
        try leaf.certificatePEM.write(toFile: dir + "/web-1.pem", atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = ["verify", "-CAfile", dir + "/ca.pem", "-purpose", "sslserver", dir + "/web-1.pem"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(output)")
        #expect(output.contains(": OK"))
    }
}
