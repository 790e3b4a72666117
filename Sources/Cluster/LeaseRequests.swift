import PeerCore

/// What this node's services ask of its lease: a confirmation round before a fenced write, or to step down
/// because this node cannot do the leader's work. The DNS service writes it; the mesh carries it out.
public struct LeaseRequests: Sendable, Hashable {
    public struct StepDown: Sendable, Hashable {
        /// Each request is carried out once.
        public var id: UInt64
        public var until: Instant
        public var reason: String

        public init(id: UInt64, until: Instant, reason: String) {
            self.id = id
            self.until = until
            self.reason = reason
        }
    }

    /// Raised by one for every confirmation asked for.
    public var confirmations: UInt64
    public var stepDown: StepDown?

    public init(confirmations: UInt64 = 0, stepDown: StepDown? = nil) {
        self.confirmations = confirmations
        self.stepDown = stepDown
    }
}
