import Crypto
import Foundation
import NIOCore
import PKI
import SwiftASN1
import X509

/// Membership datagrams between two members, sealed with ChaCha20-Poly1305 under a key only the two of them can
/// compute: HKDF over the static ECDH of one node's key with the other's certificate key (learned, verified,
/// from a mutual-TLS handshake), bound to the cluster CA and both names. A datagram that does not open —
/// forged, altered, from a stranger, or from a member whose certificate this node has not verified yet — is
/// dropped. Heartbeats use datagrams because a lost one must cost nothing: over TCP, 30 % loss delays every
/// later message by seconds (measured: median 1.3 s on loopback).
///
/// Layout, version 2: version (1 byte), sender name length (1 byte), sender name, the sender's session (8 bytes,
/// big-endian: a random number per process) and the datagram's counter (8 bytes, big-endian; per destination,
/// from 1), then nonce + ciphertext + tag. Everything before the nonce is authenticated as associated data, so a
/// receiver can refuse a replayed datagram (``ReplayWindow``, ``DatagramPeers``). Version 1 (no session, no
/// counter) is what peerd sent before: still opened, for a rolling upgrade, from members not yet known to speak
/// version 2.
public struct SealedDatagram: Sendable {
    /// The version this node seals with when the receiver speaks it.
    public static let version: UInt8 = 2
    /// Over this, a datagram is refused before decryption.
    public static let maximumSize = 60_000

    public enum Failure: Error, Equatable, CustomStringConvertible {
        case malformed(String)
        case unknownSender(String)
        case doesNotOpen(String)
        /// Opened, but its counter was seen already or is older than the window: a replay or a very late copy.
        case replayed(String)
        /// From a session of the sender this node has not been told of over TLS (an old process's datagram), or
        /// unnumbered (version 1) from a member known to number its datagrams.
        case unsequenced(String)

        public var description: String {
            switch self {
            case .malformed(let why): "malformed datagram: \(why)"
            case .unknownSender(let name): "datagram from \(name), whose certificate this node has not verified"
            case .doesNotOpen(let name): "datagram claiming to be from \(name) does not authenticate"
            case .replayed(let name): "datagram from \(name) was received before (replayed or duplicated)"
            case .unsequenced(let name): "datagram from \(name) is not from its current session"
            }
        }
    }

    /// Which process of the sender sealed a datagram, and its number.
    public struct Sequence: Sendable, Hashable {
        public var session: UInt64
        public var counter: UInt64
        public init(session: UInt64, counter: UInt64) {
            self.session = session
            self.counter = counter
        }
    }

    /// What a datagram says before it is opened (not yet authenticated).
    public struct Header: Sendable, Hashable {
        public var sender: String
        /// Nil in a version 1 datagram.
        public var sequence: Sequence?
        /// Its length in the datagram.
        var length: Int { 2 + sender.utf8.count + (sequence == nil ? 0 : 16) }
    }

    /// The key for datagrams between this node (`tls`) and the member whose verified certificate is `peer`.
    public static func pairKey(tls: MeshTLS, myName: String, peerName: String, peer: Certificate) throws -> SymmetricKey {
        guard let signing = P256.Signing.PublicKey(peer.publicKey) else {
            throw MeshTLS.Failure(description: "\(peerName)'s certificate key is not P-256")
        }
        let theirs = try P256.KeyAgreement.PublicKey(rawRepresentation: signing.rawRepresentation)
        let shared = try tls.agreementKey.sharedSecretFromKeyAgreement(with: theirs)
        var serializer = DER.Serializer()
        try serializer.serialize(tls.caCertificate)
        let salt = Data(SHA256.hash(data: serializer.serializedBytes))
        let names = [myName, peerName].sorted().joined(separator: "|")
        return shared.hkdfDerivedSymmetricKey(
            using: SHA256.self, salt: salt, sharedInfo: Data("peer-membership-v1|\(names)".utf8), outputByteCount: 32)
    }

    /// Seals `payload`; with a `sequence` as version 2, without as version 1 (for a member that does not read 2).
    public static func seal(_ payload: some DataProtocol, from sender: String, key: SymmetricKey, sequence: Sequence? = nil) throws -> ByteBuffer {
        let header = Self.header(sender, sequence: sequence)
        let box = try ChaChaPoly.seal(payload, using: key, authenticating: header)
        var buffer = ByteBuffer()
        buffer.writeBytes(header)
        buffer.writeBytes(box.combined)
        return buffer
    }

    /// Who claims to have sent it (not yet authenticated: look up the key by this name, then ``open``).
    public static func sender(of datagram: ByteBuffer) throws(Failure) -> String { try header(of: datagram).sender }

    /// Its sender, session and counter as claimed (authenticated only by ``open``).
    public static func header(of datagram: ByteBuffer) throws(Failure) -> Header {
        guard datagram.readableBytes <= maximumSize else { throw .malformed("\(datagram.readableBytes) bytes") }
        let start = datagram.readerIndex
        guard let version = datagram.getInteger(at: start, as: UInt8.self) else { throw .malformed("empty") }
        guard version == 1 || version == 2 else { throw .malformed("version \(version)") }
        guard let length = datagram.getInteger(at: start + 1, as: UInt8.self), length > 0,
            let name = datagram.getString(at: start + 2, length: Int(length))
        else { throw .malformed("no sender") }
        guard version == 2 else { return Header(sender: name, sequence: nil) }
        guard let session = datagram.getInteger(at: start + 2 + Int(length), endianness: .big, as: UInt64.self),
            let counter = datagram.getInteger(at: start + 10 + Int(length), endianness: .big, as: UInt64.self)
        else { throw .malformed("no sequence") }
        return Header(sender: name, sequence: Sequence(session: session, counter: counter))
    }

    public static func open(_ datagram: ByteBuffer, key: SymmetricKey) throws(Failure) -> Data {
        try open(datagram, header: try header(of: datagram), key: key)
    }

    /// Opens a datagram whose header was read already (``header(of:)``).
    public static func open(_ datagram: ByteBuffer, header: Header, key: SymmetricKey) throws(Failure) -> Data {
        let headerLength = header.length
        guard let bytes = datagram.getBytes(at: datagram.readerIndex, length: datagram.readableBytes),
            bytes.count > headerLength + 28
        else { throw .malformed("too short") }
        do {
            let box = try ChaChaPoly.SealedBox(combined: bytes[headerLength...])
            return try ChaChaPoly.open(box, using: key, authenticating: bytes[..<headerLength])
        } catch {
            throw .doesNotOpen(header.sender)
        }
    }

    static func header(_ sender: String, sequence: Sequence?) -> [UInt8] {
        let name = Array(sender.utf8.prefix(255))
        guard let sequence else { return [1, UInt8(name.count)] + name }
        var bytes = [version, UInt8(name.count)] + name
        withUnsafeBytes(of: sequence.session.bigEndian) { bytes += $0 }
        withUnsafeBytes(of: sequence.counter.bigEndian) { bytes += $0 }
        return bytes
    }
}
