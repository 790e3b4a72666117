import Crypto
import Foundation
import PeerCore
import X509

/// A withdrawal of certificates before they expire, signed by the cluster CA's key (as a CRL is), so it can be
/// handed from node to node by anyone: what makes it count is the signature, not who carried it.
///
/// It names a role and a name, and either one certificate (its serial number) or every certificate of that role
/// and name issued up to the moment of revocation — a removed node's, with every copy made by rotations before; a
/// certificate issued for the same name afterwards (the node added again) is not covered.
public struct Revocation: Codable, Sendable, Hashable, Comparable {
    public enum Role: String, Codable, Sendable { case node, `operator` }

    public var role: Role
    public var name: String
    /// One certificate's serial number (lowercase hex), or nil: every certificate of `role` `name` issued up to `at`.
    public var serial: String?
    /// When the CA's holder revoked (seconds since 1970).
    public var at: Int64
    /// The CA key's ECDSA P-256 SHA-256 signature of ``signedText``, DER, base64.
    public var signature: String

    /// What the signature covers: every field but itself, one per line, after a version tag.
    var signedText: String { "peer-revocation-v1\n\(role.rawValue)\n\(name)\n\(serial ?? "*")\n\(at)" }

    public var identity: PeerIdentity { role == .node ? .node(name) : .operator(name) }

    /// "every certificate of node web-3 issued up to 2026-11-30T19:00:00Z", or "operator ci's certificate 5f…".
    public var summary: String {
        if let serial { return "\(identity)'s certificate \(serial.prefix(16))" }
        return "every certificate of \(identity) issued up to \(ISO8601.format(seconds: at))"
    }

    /// Whether this revokes `certificate`, which names `identity`.
    public func covers(_ certificate: Certificate, identity: PeerIdentity) -> Bool {
        guard identity == self.identity else { return false }
        if let serial { return serial == Self.serial(of: certificate) }
        return ClusterCA.issued(certificate) <= Date(timeIntervalSince1970: Double(at))
    }

    /// A certificate's serial number as peer writes it: lowercase hex, no separators.
    public static func serial(of certificate: Certificate) -> String {
        lowercaseHex(certificate.serialNumber.bytes)
    }

    public static func < (a: Revocation, b: Revocation) -> Bool { (a.at, a.signedText) < (b.at, b.signedText) }
}

extension ClusterCA {
    /// When a certificate of this CA was issued (its validity starts ``backdating`` before).
    public static func issued(_ certificate: Certificate) -> Date { certificate.notValidBefore.addingTimeInterval(backdating) }

    /// Revokes every certificate of `identity` issued up to `now`, or only the one with serial number `serial`.
    public func revoke(_ identity: PeerIdentity, serial: String? = nil, now: Date = Date()) throws -> Revocation {
        guard isValidPeerName(identity.name) else {
            throw Failure(description: "\"\(identity.name)\" is not a valid name: use 1-63 lowercase letters, digits or '-'")
        }
        let role: Revocation.Role = if case .node = identity { .node } else { .operator }
        var revocation = Revocation(
            role: role, name: identity.name, serial: serial?.lowercased(), at: Int64(now.timeIntervalSince1970.rounded(.up)), signature: "")
        let key = try P256.Signing.PrivateKey(pemRepresentation: try privateKey.serializeAsPEM().pemString)
        revocation.signature = try key.signature(for: Array(revocation.signedText.utf8)).derRepresentation.base64EncodedString()
        return revocation
    }
}

/// The revocations a node holds: only ones the cluster CA signed, merged as a set (one only ever adds), so any
/// two nodes that exchange theirs end up with the same list, whatever the order.
///
/// Entries are told apart by what was signed, not by the signature: an ECDSA signature has more than one valid
/// form, and a copy of an entry with another form of its signature is the same revocation (kept once, and left
/// out of the digest, so nodes holding either form agree).
public struct RevocationList: Sendable, Hashable {
    private var byText: [String: Revocation] = [:]
    /// More than any cluster needs, and small enough that the whole list fits one mesh frame (1 MiB) with room.
    public static let maximumEntries = 2048

    public var entries: [Revocation] { Array(byText.values) }
    public var count: Int { byText.count }

    public init() {}

    /// Whether `ca` signed `revocation`.
    public static func isSigned(_ revocation: Revocation, by ca: Certificate) -> Bool {
        guard revocation.serial.map({ !$0.isEmpty && $0.allSatisfy(\.isHexDigit) }) ?? true, isValidPeerName(revocation.name),
            let key = P256.Signing.PublicKey(ca.publicKey), let der = Data(base64Encoded: revocation.signature),
            let signature = try? P256.Signing.ECDSASignature(derRepresentation: der)
        else { return false }
        return key.isValidSignature(signature, for: Array(revocation.signedText.utf8))
    }

    /// Takes the entries of `offered` that `ca` signed and this list lacks; says which were added and how many were
    /// refused (not signed by this CA, or beyond ``maximumEntries``).
    @discardableResult
    public mutating func merge(_ offered: some Sequence<Revocation>, ca: Certificate) -> (added: [Revocation], refused: Int) {
        var added: [Revocation] = []
        var refused = 0
        for revocation in offered where byText[revocation.signedText] == nil {
            guard byText.count < Self.maximumEntries, Self.isSigned(revocation, by: ca) else {
                refused += 1
                continue
            }
            byText[revocation.signedText] = revocation
            added.append(revocation)
        }
        return (added.sorted(), refused)
    }

    /// The entries, oldest first.
    public var sorted: [Revocation] { byText.values.sorted() }

    /// 16 hex digits naming the set (nil when empty): two nodes with the same digest hold the same revocations.
    public var digest: String? {
        guard !byText.isEmpty else { return nil }
        return String(sha256Hex(byText.keys.sorted().joined(separator: "\n").utf8).prefix(16))
    }

    /// Why `certificate` is refused, or nil when no entry covers it.
    public func refusal(of certificate: Certificate) -> String? {
        // Asked on every handshake: the oldest entry that covers it, found without sorting the list.
        guard !byText.isEmpty, let identity = PeerIdentity(certificate: certificate),
            let entry = byText.values.filter({ $0.covers(certificate, identity: identity) }).min()
        else { return nil }
        return "the certificate of \(identity) (serial \(Revocation.serial(of: certificate).prefix(16))) is revoked: \(entry.summary)"
    }
}
