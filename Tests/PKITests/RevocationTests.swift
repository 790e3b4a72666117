import Foundation
import PKI
import Testing
import X509

@Suite struct RevocationTests {
    let ca: ClusterCA
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    init() throws { ca = try ClusterCA.create(cluster: "prod", now: Date(timeIntervalSince1970: 1_700_000_000)) }

    func list(_ revocations: Revocation...) -> RevocationList {
        var list = RevocationList()
        list.merge(revocations, ca: ca.certificate)
        return list
    }

    /// `node remove`'s revocation covers every certificate of the name issued up to it — the rotated ones too — and
    /// nothing issued afterwards (the node added again), nor anyone else's.
    @Test func aNameIsRevokedForEveryCertificateIssuedUpToTheRevocationAndNoLater() throws {
        let before = try ca.issueNode(name: "web-3", address: "10.0.0.3", now: t0.addingTimeInterval(-86_400)).certificate
        let rotated = try ca.issueNode(name: "web-3", address: "10.0.0.3", now: t0).certificate
        let after = try ca.issueNode(name: "web-3", address: "10.0.0.3", now: t0.addingTimeInterval(2)).certificate
        let other = try ca.issueNode(name: "web-2", address: "10.0.0.2", now: t0).certificate
        let sameNameOperator = try ca.issueOperator(name: "web-3", now: t0).certificate
        let revoked = list(try ca.revoke(.node("web-3"), now: t0))
        #expect(revoked.refusal(of: before)?.contains("node web-3") == true)
        #expect(revoked.refusal(of: rotated) != nil, "a certificate issued in the same second as the revocation")
        #expect(revoked.refusal(of: after) == nil)
        #expect(revoked.refusal(of: other) == nil)
        #expect(revoked.refusal(of: sameNameOperator) == nil, "an operator is not a node of the same name")
    }

    /// A leaked operator certificate is revoked alone; the operator's new one keeps working.
    @Test func oneCertificateIsRevokedByItsSerialAlone() throws {
        let leaked = try ca.issueOperator(name: "ci", now: t0).certificate
        let replacement = try ca.issueOperator(name: "ci", now: t0).certificate
        let revoked = list(try ca.revoke(.operator("ci"), serial: Revocation.serial(of: leaked), now: t0.addingTimeInterval(60)))
        #expect(revoked.refusal(of: leaked)?.contains("operator ci") == true)
        #expect(revoked.refusal(of: replacement) == nil)
    }

    /// Only the cluster CA's signature makes a revocation: one from another CA, or with any field changed after
    /// signing, is refused, so a member or a stranger cannot revoke anyone.
    @Test func aRevocationNotSignedByThisCAOrAlteredIsRefused() throws {
        let other = try ClusterCA.create(cluster: "other")
        let genuine = try ca.revoke(.node("web-3"), now: t0)
        var renamed = genuine
        renamed.name = "web-1"
        var later = genuine
        later.at += 86_400
        var toOperator = genuine
        toOperator.role = .operator
        var narrowed = genuine
        narrowed.serial = "01"
        var garbled = genuine
        garbled.signature = "not base64!"
        let forged = try other.revoke(.node("web-1"), now: t0)
        var taken = RevocationList()
        let (added, refused) = taken.merge([renamed, later, toOperator, narrowed, garbled, forged, genuine], ca: ca.certificate)
        #expect(added == [genuine])
        #expect(refused == 6)
        #expect(RevocationList.isSigned(genuine, by: ca.certificate))
        #expect(!RevocationList.isSigned(genuine, by: other.certificate))
    }

    /// Lists only grow and merge as sets: whatever the order in which members hand them on (duplicates too), every
    /// node ends up with the same list and digest.
    @Test func listsMergeToTheSameSetAndDigestInAnyOrder() throws {
        let entries = try (1...6).map { try ca.revoke(.node("web-\($0)"), now: t0.addingTimeInterval(Double($0))) }
        var rng = SystemRandomNumberGenerator()
        var digests: Set<String?> = []
        for _ in 0..<20 {
            var list = RevocationList()
            let shuffled = (entries + entries.prefix(3)).shuffled(using: &rng)
            for chunk in stride(from: 0, to: shuffled.count, by: 2) {
                list.merge(shuffled[chunk..<min(chunk + 2, shuffled.count)], ca: ca.certificate)
            }
            #expect(list.entries.count == entries.count)
            digests.insert(list.digest)
        }
        #expect(digests.count == 1)
        #expect(RevocationList().digest == nil)
        #expect(list(entries[0]).digest != list(entries[1]).digest)
        var again = list(entries[0])
        #expect(again.merge([entries[0]], ca: ca.certificate).added.isEmpty)
    }

    /// An ECDSA signature has more than one valid form (and signing again gives another): a second copy of a
    /// revocation with another signature is the same revocation. Otherwise anyone could add copies, lists would
    /// differ in their digests for good (members resending forever) and fill up.
    @Test func aRevocationWithAnotherValidSignatureIsTheSameRevocation() throws {
        let first = try ca.revoke(.node("web-3"), now: t0)
        let second = try ca.revoke(.node("web-3"), now: t0)
        #expect(first.signature != second.signature && RevocationList.isSigned(second, by: ca.certificate))
        var both = list(first)
        #expect(both.merge([second], ca: ca.certificate).added.isEmpty)
        #expect(both.count == 1)
        #expect(list(first).digest == list(second).digest)
    }

    /// What nodes store and send is JSON; it reads back the same and still verifies.
    @Test func aRevocationSurvivesJSON() throws {
        let revocation = try ca.revoke(.operator("ci"), serial: "0A1b", now: t0)
        #expect(revocation.serial == "0a1b")
        let decoded = try JSONDecoder().decode(Revocation.self, from: try JSONEncoder().encode(revocation))
        #expect(decoded == revocation)
        #expect(RevocationList.isSigned(decoded, by: ca.certificate))
    }
}

@Suite struct OperatorScopeTests {
    /// The scopes are in the certificate the CA signed; one from before scopes (no scope named) allows what it did.
    @Test func scopesAreReadFromTheCertificateAndAnOldCertificateKeepsEverything() throws {
        let ca = try ClusterCA.create(cluster: "prod")
        let ci = try ca.issueOperator(name: "ci", scopes: [.deploy]).certificate
        let auditor = try ca.issueOperator(name: "audit", scopes: [.read]).certificate
        let both = try ca.issueOperator(name: "ops", scopes: [.deploy, .tls]).certificate
        let legacy = try ca.issueNode(name: "x", usages: [.clientAuth]).certificate  // no scope URIs at all
        #expect(OperatorScope.scopes(of: ci) == [.deploy])
        #expect(OperatorScope.scopes(of: auditor) == [.read])
        #expect(OperatorScope.scopes(of: both) == [.deploy, .tls])
        #expect(OperatorScope.scopes(of: legacy) == Set(OperatorScope.allCases))
    }

    @Test func whatEachScopeAllows() {
        #expect(OperatorScope.read.isAllowed(by: [.read]) && OperatorScope.read.isAllowed(by: [.deploy]) && OperatorScope.read.isAllowed(by: [.tls]))
        #expect(!OperatorScope.read.isAllowed(by: []))
        #expect(OperatorScope.deploy.isAllowed(by: [.deploy]) && OperatorScope.deploy.isAllowed(by: [.admin]))
        #expect(!OperatorScope.deploy.isAllowed(by: [.read]) && !OperatorScope.deploy.isAllowed(by: [.tls]))
        #expect(!OperatorScope.tls.isAllowed(by: [.deploy]) && OperatorScope.tls.isAllowed(by: [.tls]))
        #expect(!OperatorScope.admin.isAllowed(by: [.deploy, .tls, .read]))
    }

    @Test func badScopesAndValiditiesAreRefusedWithTheFix() throws {
        let ca = try ClusterCA.create(cluster: "prod")
        #expect(try OperatorScope.parse("deploy, tls") == [.deploy, .tls])
        #expect(throws: ClusterCA.Failure.self) { try OperatorScope.parse("deploy,root") }
        #expect(throws: ClusterCA.Failure.self) { try OperatorScope.parse("") }
        #expect(throws: ClusterCA.Failure.self) { try ca.issueOperator(name: "ci", scopes: []) }
        do {
            _ = try ca.issueOperator(name: "ci", validityDays: 3650)
            Issue.record("a ten-year operator certificate was issued")
        } catch {
            #expect("\(error)".contains("1 to 397 days"), "\(error)")
        }
    }
}
