import Crypto
import Foundation
import NIOCore
import PKI
import PeerCore
import Testing
import Transport
import X509

/// Membership datagrams: only the two members of a pair can seal or open them.
@Suite struct SealedDatagramTests {
    struct Node {
        let issued: IssuedCertificate
        let tls: MeshTLS
    }

    static func node(_ name: String, ca: ClusterCA) throws -> Node {
        let issued = try ca.issueNode(name: name, address: "127.0.0.9")
        let tls = try MeshTLS(
            caPEM: try ca.certificate.serializeAsPEM().pemString, certificatePEM: try issued.certificatePEM,
            keyPEM: try issued.privateKeyPEM
        ) { _ in true }
        return Node(issued: issued, tls: tls)
    }

    func key(_ a: Node, _ aName: String, _ b: Node, _ bName: String) throws -> SymmetricKey {
        try SealedDatagram.pairKey(tls: a.tls, myName: aName, peerName: bName, peer: b.issued.certificate)
    }

    @Test func bothMembersOfAPairDeriveTheSameKeyAndNobodyElseDoes() throws {
        let ca = try ClusterCA.create(cluster: "test")
        let n1 = try Self.node("n1", ca: ca), n2 = try Self.node("n2", ca: ca), n3 = try Self.node("n3", ca: ca)
        let k12 = try key(n1, "n1", n2, "n2")
        #expect(k12 == (try key(n2, "n2", n1, "n1")))
        #expect(k12 != (try key(n3, "n3", n2, "n2")))

        let message = Data("{\"ping\":1}".utf8)
        let sealed = try SealedDatagram.seal(message, from: "n1", key: k12)
        #expect(try SealedDatagram.sender(of: sealed) == "n1")
        #expect(try SealedDatagram.open(sealed, key: try key(n2, "n2", n1, "n1")) == message)
        // n3 claiming to be n1 cannot make n2 accept anything: it does not have the pair's key.
        let forged = try SealedDatagram.seal(message, from: "n1", key: try key(n3, "n3", n2, "n2"))
        #expect(throws: SealedDatagram.Failure.doesNotOpen("n1")) { try SealedDatagram.open(forged, key: k12) }
    }

    @Test func tamperedTruncatedOrForeignDatagramsAreRefused() throws {
        let ca = try ClusterCA.create(cluster: "test")
        let n1 = try Self.node("n1", ca: ca), n2 = try Self.node("n2", ca: ca)
        let k = try key(n1, "n1", n2, "n2")
        var sealed = try SealedDatagram.seal(Data("hello".utf8), from: "n1", key: k)

        var flipped = sealed
        let last = flipped.writerIndex - 1
        flipped.setInteger(flipped.getInteger(at: last, as: UInt8.self)! ^ 1, at: last)
        #expect(throws: SealedDatagram.Failure.doesNotOpen("n1")) { try SealedDatagram.open(flipped, key: k) }

        // The sender name is authenticated too: relabelling a datagram breaks it.
        var relabelled = ByteBuffer()
        relabelled.writeBytes([1, 2] + Array("n3".utf8))
        relabelled.writeImmutableBuffer(sealed.getSlice(at: 4, length: sealed.readableBytes - 4)!)
        #expect(throws: SealedDatagram.Failure.doesNotOpen("n3")) { try SealedDatagram.open(relabelled, key: k) }

        let truncated = sealed.readSlice(length: 10)!
        #expect(throws: SealedDatagram.Failure.self) { try SealedDatagram.open(truncated, key: k) }
        #expect(throws: SealedDatagram.Failure.self) { try SealedDatagram.sender(of: ByteBuffer(bytes: [9, 9, 9])) }
        #expect(throws: SealedDatagram.Failure.self) { try SealedDatagram.sender(of: ByteBuffer()) }
        #expect(throws: SealedDatagram.Failure.self) {
            try SealedDatagram.sender(of: ByteBuffer(repeating: 1, count: SealedDatagram.maximumSize + 1))
        }
        // Another cluster's members with the same names share no key with ours.
        let other = try ClusterCA.create(cluster: "other")
        let o1 = try Self.node("n1", ca: other), o2 = try Self.node("n2", ca: other)
        #expect(try key(o1, "n1", o2, "n2") != k)
    }

    /// Fuzzed datagrams, from anyone: random bytes of any length, and real datagrams with bytes flipped, cut short,
    /// lengthened, or with a forged name length. None opens, none traps, each is refused with a reason.
    @Test func fuzzedDatagramsNeverOpenAndNeverTrap() throws {
        let ca = try ClusterCA.create(cluster: "test")
        let n1 = try Self.node("n1", ca: ca), n2 = try Self.node("n2", ca: ca)
        let k = try key(n1, "n1", n2, "n2")
        let payload = Data(#"{"swim":{"ping":{"seq":1}}}"#.utf8)
        let valid = Array(buffer: try SealedDatagram.seal(payload, from: "n1", key: k, sequence: .init(session: 7, counter: 1)))
        #expect(try SealedDatagram.open(ByteBuffer(bytes: valid), key: k) == payload)
        var rng = SplitMix64(seed: 19)
        var reasons: [String: Int] = [:]
        for round in 0..<6_000 {
            var bytes = valid
            switch round % 5 {
            case 0: bytes = (0..<Int.random(in: 0...400, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            case 1:
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    bytes[Int.random(in: 0..<bytes.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng)
                }
            case 2: bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &rng)))
            case 3: bytes += (0..<Int.random(in: 1...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            default: bytes[1] &+= UInt8.random(in: 1...255, using: &rng)  // the sender name's length
            }
            if bytes == valid { continue }
            do {
                let opened = try SealedDatagram.open(ByteBuffer(bytes: bytes), key: k)
                Issue.record("round \(round): a fuzzed datagram opened: \(opened.count) bytes")
            } catch {
                reasons[String("\(error)".prefix(while: { $0 != ":" })), default: 0] += 1
            }
        }
        #expect(reasons.values.reduce(0, +) > 5_000)
        #expect(reasons.keys.contains("malformed datagram") && reasons.keys.contains { $0.contains("does not authenticate") })
    }
}
