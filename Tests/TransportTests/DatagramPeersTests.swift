import Crypto
import Foundation
import NIOCore
import PKI
import PeerCore
import Testing
import Transport
import X509

/// Replay protection and key rotation of membership datagrams, with real keys and real sealing: what a recorded
/// datagram sent again, a member's restart, this node's restart, a rolling upgrade and a rotated certificate do.
@Suite struct DatagramPeersTests {
    /// One member: its certificate, TLS identity and datagram state (what its peerd holds).
    struct Member {
        let name: String
        var tls: MeshTLS
        var certificate: Certificate
        var peers: DatagramPeers

        init(_ name: String, ca: ClusterCA, session: UInt64, numbering: Set<String> = []) throws {
            self.name = name
            let issued = try ca.issueNode(name: name, address: "127.0.0.9")
            tls = try MeshTLS(
                caPEM: try ca.certificate.serializeAsPEM().pemString, certificatePEM: try issued.certificatePEM, keyPEM: try issued.privateKeyPEM
            ) { _ in true }
            certificate = issued.certificate
            peers = DatagramPeers(me: name, session: session, numbering: numbering)
        }

        /// The TLS handshake with `other` as this member sees it (its certificate verified).
        mutating func verify(_ other: Member, now: Instant = .zero) throws {
            let (tls, me, other) = (tls, name, other)
            _ = try peers.verified(other.name, fingerprint: try other.certificate.fingerprint(), now: now) {
                try SealedDatagram.pairKey(tls: tls, myName: me, peerName: other.name, peer: other.certificate)
            }
        }
    }

    /// A connection between `a` and `b`: both verify the other and exchange hellos (`helloFrom` limits who sends one:
    /// a peerd from before sends none).
    static func connect(_ a: inout Member, _ b: inout Member, now: Instant = .zero, hellos: Set<String>? = nil) throws {
        try a.verify(b, now: now)
        try b.verify(a, now: now)
        if hellos?.contains(a.name) ?? true, let hello = a.peers.hello(to: b.name) {
            // Over the wire as a frame.
            _ = b.peers.received(try #require(DatagramPeers.HelloFrame.decode(DatagramPeers.HelloFrame(hello).encoded)), from: a.name)
        }
        if hellos?.contains(b.name) ?? true, let hello = b.peers.hello(to: a.name) { _ = a.peers.received(hello, from: b.name) }
    }

    static func send(_ text: String, from a: inout Member, to b: String) throws -> ByteBuffer {
        try #require(try a.peers.seal(Data(text.utf8), to: b))
    }

    static func opens(_ datagram: ByteBuffer, at b: inout Member, now: Instant = .zero) -> Result<String, SealedDatagram.Failure> {
        do throws(SealedDatagram.Failure) {
            let opened = try b.peers.open(datagram, now: now)
            return .success(opened.sender + ":" + String(decoding: opened.payload, as: UTF8.self))
        } catch {
            return .failure(error)
        }
    }

    @Test func aRecordedDatagramSentAgainIsRefusedAndReorderingWithinTheWindowIsNot() throws {
        let ca = try ClusterCA.create(cluster: "test")
        var a = try Member("a", ca: ca, session: 1), b = try Member("b", ca: ca, session: 2)
        try Self.connect(&a, &b)
        let first = try Self.send("lease request", from: &a, to: "b")
        let second = try Self.send("ping", from: &a, to: "b")
        #expect(try SealedDatagram.header(of: first).sequence == SealedDatagram.Sequence(session: 1, counter: 1))
        // Reordered: the second arrives first; both are taken, each once.
        #expect(Self.opens(second, at: &b) == .success("a:ping"))
        #expect(Self.opens(first, at: &b) == .success("a:lease request"))
        #expect(Self.opens(first, at: &b) == .failure(.replayed("a")))
        #expect(Self.opens(second, at: &b) == .failure(.replayed("a")))
        // Further back than the window (64): refused even though never seen.
        let old = try Self.send("late", from: &a, to: "b")
        for _ in 0..<70 { _ = Self.opens(try Self.send("beat", from: &a, to: "b"), at: &b) }
        #expect(Self.opens(old, at: &b) == .failure(.replayed("a")))
    }

    @Test func afterTheSenderRestartsItsOldSessionsDatagramsAreRefused() throws {
        let ca = try ClusterCA.create(cluster: "test")
        var a = try Member("a", ca: ca, session: 1), b = try Member("b", ca: ca, session: 2)
        try Self.connect(&a, &b)
        let recorded = try Self.send("lease request, term 7", from: &a, to: "b")
        // a restarts (a new process: a new session, counters from 1) and connects again.
        a.peers = DatagramPeers(me: "a", session: 3, numbering: ["b"])
        try Self.connect(&a, &b)
        let fresh = try Self.send("ping", from: &a, to: "b")
        #expect(Self.opens(recorded, at: &b) == .failure(.unsequenced("a")))
        #expect(Self.opens(fresh, at: &b) == .success("a:ping"))
    }

    @Test func afterThisNodeRestartsARecordedDatagramIsStillRefused() throws {
        let ca = try ClusterCA.create(cluster: "test")
        var a = try Member("a", ca: ca, session: 1), b = try Member("b", ca: ca, session: 2)
        try Self.connect(&a, &b)
        let recorded = try Self.send("lease request", from: &a, to: "b")
        #expect(Self.opens(recorded, at: &b) == .success("a:lease request"))
        // b restarts: it remembers (persisted) that a numbers its datagrams, nothing else.
        b.peers = DatagramPeers(me: "b", session: 4, numbering: b.peers.numbering)
        // a is dead (it never says hello again): its recorded datagram is from no session b knows.
        try b.verify(a)
        #expect(Self.opens(recorded, at: &b) == .failure(.unsequenced("a")))
        // a is alive and connects again: its hello says where its counters stand; the recording is below that.
        try Self.connect(&a, &b)
        #expect(Self.opens(recorded, at: &b) == .failure(.replayed("a")))
        #expect(Self.opens(try Self.send("ping", from: &a, to: "b"), at: &b) == .success("a:ping"))
    }

    @Test func aRollingUpgradeTalksUnnumberedToOldPeersUntilTheySayHello() throws {
        let ca = try ClusterCA.create(cluster: "test")
        var new = try Member("new", ca: ca, session: 1), old = try Member("old", ca: ca, session: 2)
        try Self.connect(&new, &old, hellos: ["new"])  // the old peerd sends no hello (and ignores ours)
        let toOld = try Self.send("ping", from: &new, to: "old")
        #expect(try SealedDatagram.header(of: toOld).sequence == nil, "an old peerd reads version 1 only")
        let fromOld = try SealedDatagram.seal(Data("ack".utf8), from: "old", key: try Self.pairKey(old, new))
        #expect(Self.opens(fromOld, at: &new) == .success("old:ack"))
        // The old node is upgraded: it says hello; from now on (and after restarts) unnumbered datagrams from it
        // are refused — a recording from before the upgrade cannot be replayed.
        old.peers = DatagramPeers(me: "old", session: 5)
        try Self.connect(&new, &old)
        #expect(new.peers.numbering == ["old"])
        #expect(Self.opens(fromOld, at: &new) == .failure(.unsequenced("old")))
        let restarted = DatagramPeers(me: "new", session: 6, numbering: new.peers.numbering)
        new.peers = restarted
        try new.verify(old)
        #expect(Self.opens(fromOld, at: &new) == .failure(.unsequenced("old")))
        #expect(try SealedDatagram.header(of: try Self.send("ping", from: &new, to: "old")).sequence != nil)
    }

    @Test func aRotatedCertificateGetsANewKeyAndTheOldOneOpensOnlyForAMinute() throws {
        let ca = try ClusterCA.create(cluster: "test")
        var a = try Member("a", ca: ca, session: 1), b = try Member("b", ca: ca, session: 2)
        try Self.connect(&a, &b)
        let underOldKey = try Self.send("in flight", from: &a, to: "b")
        // a gets a new certificate (and key) and restarts; b verifies it on the next handshake.
        let restartedAt = Instant.zero + .seconds(10)
        a = try Member("a", ca: ca, session: 3, numbering: ["b"])
        try Self.connect(&a, &b, now: restartedAt)
        #expect(Self.opens(try Self.send("ping", from: &a, to: "b"), at: &b, now: restartedAt) == .success("a:ping"))
        #expect(Self.opens(try Self.send("ack", from: &b, to: "a"), at: &a, now: restartedAt) == .success("b:ack"))
        // A datagram of a's old process, sealed with the old key: opens (then is refused as another session's),
        // and after the minute does not open at all.
        #expect(Self.opens(underOldKey, at: &b, now: restartedAt + .seconds(30)) == .failure(.unsequenced("a")))
        #expect(Self.opens(underOldKey, at: &b, now: restartedAt + .seconds(61)) == .failure(.doesNotOpen("a")))
    }

    @Test func aDatagramFromAMemberNotVerifiedOrForAnotherPairIsRefused() throws {
        let ca = try ClusterCA.create(cluster: "test")
        var a = try Member("a", ca: ca, session: 1), b = try Member("b", ca: ca, session: 2), c = try Member("c", ca: ca, session: 3)
        try Self.connect(&a, &b)
        #expect(try c.peers.seal(Data("x".utf8), to: "b") == nil, "nothing is sealed for a member not verified")
        try Self.connect(&c, &b)
        // c relabels a datagram for b as a's: it does not open under a's key.
        var forged = try Self.send("promise", from: &c, to: "b")
        forged.setBytes(Array("a".utf8), at: 2)
        #expect(Self.opens(forged, at: &b) == .failure(.doesNotOpen("a")))
        var stranger = try Member("d", ca: try ClusterCA.create(cluster: "other"), session: 9)
        try stranger.verify(b)
        #expect(Self.opens(try Self.send("hi", from: &stranger, to: "b"), at: &b) == .failure(.unknownSender("d")))
    }

    @Test func theWindowTakesEachCounterOnceAndNothingBelowItsFloor() {
        var window = ReplayWindow(floor: 10)
        var taken: [Bool] = []
        for counter: UInt64 in [9, 10, 10, 200, 137, 136, 137] { taken.append(window.accept(counter)) }
        // 137 is 63 below the highest (in the window), 136 is 64 below (out).
        #expect(taken == [false, true, false, true, true, false, false])
        window.raise(to: 300)
        let afterRaise = [window.accept(250), window.accept(300), window.accept(Counter.limit + 1)]
        // An absurd counter is never taken (it would close the window for good).
        #expect(afterRaise == [false, true, false])
    }

    static func pairKey(_ a: Member, _ b: Member) throws -> SymmetricKey {
        try SealedDatagram.pairKey(tls: a.tls, myName: a.name, peerName: b.name, peer: b.certificate)
    }
}
