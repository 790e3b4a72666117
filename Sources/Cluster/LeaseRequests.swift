import Leadership
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

    /// A change of the cluster's configuration to propose (on the leader: ``MeshNode/propose(_:now:)``).
    public struct Proposal: Sendable, Hashable {
        /// Each proposal is carried out once.
        public var id: UInt64
        public var members: [Configuration.Member]
        public init(id: UInt64, members: [Configuration.Member]) {
            self.id = id
            self.members = members
        }
    }

    /// The mesh's answer to a proposal: proposed (its commit shows in the cluster's state), or refused and why.
    public struct Answer: Sendable, Hashable {
        public var id: UInt64
        public var refusal: ConfiguredLease.Refusal?
        public init(id: UInt64, refusal: ConfiguredLease.Refusal?) {
            self.id = id
            self.refusal = refusal
        }
    }

    /// Raised by one for every confirmation asked for.
    public var confirmations: UInt64
    public var stepDown: StepDown?
    public var proposal: Proposal?
    /// Written by the mesh.
    public var answer: Answer?

    public init(confirmations: UInt64 = 0, stepDown: StepDown? = nil) {
        self.confirmations = confirmations
        self.stepDown = stepDown
    }
}
