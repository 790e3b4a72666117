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
        var claimsRefused = Refusals()
    }

    /// Why relayed claims were not taken: no signature (a relay through a peerd from before them), one that does
    /// not check out (a forgery — or a bug: in a cluster of one version it stays 0 outside certificate rotations,
    /// when a few signed with the new key meet the old certificate still held), or an owner whose certificate this
    /// node has not verified yet (it talks to it first-hand soon).
    struct Refusals: Sendable, Codable, Hashable {
        var noSignature = 0
        var badSignature = 0
        var certificateNotSeen = 0

        mutating func add(_ other: Refusals) {
            noSignature += other.noSignature
            badSignature += other.badSignature
            certificateNotSeen += other.certificateNotSeen
        }
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
