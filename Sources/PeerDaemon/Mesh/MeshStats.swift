import Membership
import NIOConcurrencyHelpers
import PeerCore

/// What the mesh measures with every datagram — traffic counters, when each member was last heard from and its
/// round-trip time — kept where `peerctl members` and the metrics read it. Not part of the published
/// ``ClusterState``: these change many times a second, and nobody needs to be woken for them.
final class MeshStats: Sendable {
    struct Counters: Sendable, Codable, Hashable {
        var datagramsSent = 0
        var bytesSent = 0
        var datagramsReceived = 0
        var bytesReceived = 0
        /// Datagrams that were malformed, did not authenticate or came before the sender's key was known.
        var datagramsDropped = 0
        /// Of those, the ones that authenticated but were taken before (replayed, or duplicated on the way).
        var datagramsReplayed = 0
        /// Members' states relayed by another member without their own signature over what they claim.
        var claimsRefused = 0
    }

    struct Measured: Sendable {
        var counters = Counters()
        var lastSeen: [MemberID: Instant] = [:]
        var rtt: [MemberID: Duration] = [:]
    }

    private let box = NIOLockedValueBox(Measured())

    init() {}

    var current: Measured { box.withLockedValue { $0 } }

    func count(_ change: (inout Counters) -> Void) { box.withLockedValue { change(&$0.counters) } }

    func measured(lastSeen: [MemberID: Instant], rtt: [MemberID: Duration]) {
        box.withLockedValue {
            $0.lastSeen = lastSeen
            $0.rtt = rtt
        }
    }
}
