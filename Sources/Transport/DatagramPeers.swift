import Crypto
import Foundation
import NIOCore
import PeerCore

/// Which of one sender's numbered datagrams were taken: the highest counter and the 64 below it, as a bitmap (as
/// IPsec and WireGuard keep it). A counter is taken once, only from `floor` on and no more than 64 below the
/// highest; a datagram reordered by more than that is dropped like a lost one (heartbeats: loss costs nothing).
public struct ReplayWindow: Sendable, Equatable {
    public static let width: UInt64 = 64
    /// Counters below it are refused: the sender said it numbers from here on.
    public private(set) var floor: UInt64
    /// The highest counter taken, 0 before the first.
    public private(set) var highest: UInt64 = 0
    /// Bit i: `highest - i` was taken.
    private var seen: UInt64 = 0

    public init(floor: UInt64) { self.floor = max(floor, 1) }

    /// Takes `counter` if it is new and in the window; false for a replay, a duplicate or a very late copy.
    public mutating func accept(_ counter: UInt64) -> Bool {
        guard counter >= floor, Counter.isPlausible(counter) else { return false }
        if counter > highest {
            let shift = counter - highest
            seen = (shift >= Self.width ? 0 : seen << shift) | 1
            highest = counter
            return true
        }
        let age = highest - counter
        guard age < Self.width else { return false }
        let bit: UInt64 = 1 << age
        guard seen & bit == 0 else { return false }
        seen |= bit
        return true
    }

    /// The sender numbers from `floor` on (it said so on a new connection of the same session).
    public mutating func raise(to floor: UInt64) { self.floor = max(self.floor, floor) }
}

/// The datagram side of this node's relation with each member, as a pure value the mesh shell feeds with what
/// happens (verified handshakes, hellos, datagrams) and the time:
/// - **the pair key**, derived from the certificate the member presented in a verified TLS handshake, and derived
///   again when it presents another (a rotated certificate); the previous key still opens datagrams for
///   ``previousKeyLifetime``, for those already on their way;
/// - **replay protection**: every mesh TLS connection starts, both ways, with a ``Hello`` naming the sender's
///   session (a random number per process) and the counter its datagrams to this member go on from. A numbered
///   datagram is taken only from that session and once (``ReplayWindow``): a recorded lease request or heartbeat
///   sent again later — after its sender died, or after this node restarted — is refused;
/// - **rolling upgrades**: a member that never sent a hello (a peerd from before) gets and may send unnumbered
///   datagrams (version 1) until it does; from then on (``numbering``, which the shell persists) unnumbered ones
///   from it are refused.
public struct DatagramPeers: Sendable {
    /// The first frame on every mesh TLS connection, each way: "my datagrams to you come from `session`, numbered
    /// from `next`".
    public struct Hello: Codable, Sendable, Equatable {
        public var session: UInt64
        public var next: UInt64
        public init(session: UInt64, next: UInt64) {
            self.session = session
            self.next = next
        }
    }

    /// A hello as a frame: `{"hello":{…}}` (other frames are told apart by their own top-level key).
    public struct HelloFrame: Codable, Sendable, Equatable {
        public var hello: Hello
        public init(_ hello: Hello) { self.hello = hello }

        /// The hello in `frame`, or nil when it is another message.
        public static func decode(_ frame: ByteBuffer) -> Hello? {
            guard frame.readableBytes < 256, frame.getString(at: frame.readerIndex, length: 8) == #"{"hello""# else { return nil }
            return try? JSONDecoder().decode(HelloFrame.self, from: Data(buffer: frame)).hello
        }

        public var encoded: ByteBuffer { ByteBuffer(data: (try? JSONEncoder().encode(self)) ?? Data()) }
    }

    /// How long a replaced key (the member's certificate before rotation) still opens its datagrams.
    public static let previousKeyLifetime: Duration = .seconds(60)

    struct Peer: Sendable {
        var key: SymmetricKey
        var fingerprint: String
        var previous: (key: SymmetricKey, until: Instant)?
        /// Its session and what was taken from it.
        var theirs: (session: UInt64, window: ReplayWindow)?
        /// The counter of this node's next datagram to it.
        var next: UInt64 = 1
    }

    public let me: String
    /// This process's session.
    public let session: UInt64
    private var peers: [String: Peer] = [:]
    /// Members known to number their datagrams (they sent a hello, now or before a restart): they are sent numbered
    /// datagrams, and unnumbered ones from them are refused.
    public private(set) var numbering: Set<String>

    public init(me: String, session: UInt64, numbering: Set<String> = []) {
        self.me = me
        self.session = session
        self.numbering = numbering
    }

    /// Whether `member`'s certificate was verified (datagrams can be sealed for it and opened from it).
    public func knows(_ member: String) -> Bool { peers[member] != nil }

    /// A verified TLS handshake with `member`, which presented the certificate whose DER has the SHA-256
    /// `fingerprint`; `derive` computes the pair key for it. True when the key changed: a first handshake, or a
    /// rotated certificate (the previous key is kept for ``previousKeyLifetime``).
    public mutating func verified(_ member: String, fingerprint: String, now: Instant, derive: () throws -> SymmetricKey) rethrows -> Bool {
        if let known = peers[member], known.fingerprint == fingerprint { return false }
        let key = try derive()
        guard var peer = peers[member] else {
            peers[member] = Peer(key: key, fingerprint: fingerprint)
            return true
        }
        peer.previous = (peer.key, now + Self.previousKeyLifetime)
        peer.key = key
        peer.fingerprint = fingerprint
        peers[member] = peer
        return true
    }

    /// Forgets `member`'s keys (its certificate was revoked): nothing is sealed for it or opened from it until a
    /// handshake verifies a certificate of it again.
    public mutating func forget(_ member: String) { peers[member] = nil }

    /// The hello to send `member` on a connection with it; nil before its certificate was verified.
    public func hello(to member: String) -> Hello? {
        guard let peer = peers[member] else { return nil }
        return Hello(session: session, next: peer.next)
    }

    /// A hello from `member`, over a verified connection: its datagrams are taken from that session on. True when
    /// the member newly joins ``numbering`` (for the shell to persist).
    public mutating func received(_ hello: Hello, from member: String) -> Bool {
        guard var peer = peers[member], Counter.isPlausible(hello.next) else { return false }
        if var theirs = peer.theirs, theirs.session == hello.session {
            theirs.window.raise(to: hello.next)
            peer.theirs = theirs
        } else {
            peer.theirs = (hello.session, ReplayWindow(floor: hello.next))
        }
        peers[member] = peer
        return numbering.insert(member).inserted
    }

    /// `payload` sealed for `member` — numbered if it reads numbered datagrams; nil before its certificate was
    /// verified.
    public mutating func seal(_ payload: Data, to member: String) throws -> ByteBuffer? {
        guard var peer = peers[member] else { return nil }
        guard peer.theirs != nil || numbering.contains(member) else { return try SealedDatagram.seal(payload, from: me, key: peer.key) }
        guard Counter.isPlausible(peer.next) else { return nil }
        let sealed = try SealedDatagram.seal(payload, from: me, key: peer.key, sequence: .init(session: session, counter: peer.next))
        peer.next += 1
        peers[member] = peer
        return sealed
    }

    /// The sender and the payload of a datagram that authenticates, is from the sender's current session and was
    /// not taken before; otherwise why not.
    public mutating func open(_ datagram: ByteBuffer, now: Instant) throws(SealedDatagram.Failure) -> (sender: String, payload: Data) {
        let header = try SealedDatagram.header(of: datagram)
        let member = header.sender
        guard var peer = peers[member] else { throw .unknownSender(member) }
        let payload: Data
        do throws(SealedDatagram.Failure) {
            payload = try SealedDatagram.open(datagram, header: header, key: peer.key)
        } catch {
            guard let previous = peer.previous, now < previous.until else { throw error }
            payload = try SealedDatagram.open(datagram, header: header, key: previous.key)
        }
        guard let sequence = header.sequence else {
            guard !numbering.contains(member) else { throw .unsequenced(member) }
            return (member, payload)
        }
        guard var theirs = peer.theirs, theirs.session == sequence.session else { throw .unsequenced(member) }
        guard theirs.window.accept(sequence.counter) else { throw .replayed(member) }
        peer.theirs = theirs
        peers[member] = peer
        return (member, payload)
    }
}
