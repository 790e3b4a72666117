import PeerCore

/// What SWIM sends and what it shows: its messages, their envelope, the directives for the shell, and a member
/// as this node sees it.
extension SWIM {
    public enum Message: Sendable, Hashable, Codable {
        /// "Are you alive?" Answered with an ack of the same sequence number.
        case ping(seq: UInt64)
        /// "Please ping `target` for me, and pass its ack back."
        case pingRequest(seq: UInt64, target: MemberID)
        /// `target` answered ping `seq` (directly when the sender is `target`, or relayed).
        case ack(seq: UInt64, target: MemberID)
    }

    /// What goes on the wire.
    public struct Envelope: Sendable, Hashable, Codable {
        /// The sender's own state: must name the authenticated peer, or the message is ignored.
        public var sender: MemberState<App>
        public var message: Message
        public var gossip: [MemberState<App>]

        public init(sender: MemberState<App>, message: Message, gossip: [MemberState<App>]) {
            self.sender = sender
            self.message = message
            self.gossip = gossip
        }
    }

    public enum Directive: Sendable, Hashable {
        case send(to: MemberID, address: String, Envelope)
        /// A member's status or app changed in this node's view (this node included).
        case changed(MemberState<App>, previous: MemberState<App>)
    }

    /// A member as this node sees it, with what only this node measured.
    public struct View: Sendable, Hashable {
        public var state: MemberState<App>
        public var lastSeen: Instant?
        public var rtt: Duration?
    }
}
