import Foundation

/// What `peerd` persists in its state folder, so a restart (or a crash mid-swap) knows what it was doing.
public struct NodeState: Codable, Sendable, Hashable {
    /// The instance that serves.
    public var current: AppInstance?
    /// The image that served before `current`; `peerctl rollback` swaps back to it.
    public var previousImage: String?
    public var nextGeneration: Int = 1
    /// A swap that started and has not ended: a crash leaves this behind for the next start to clean up.
    public var inProgress: InProgress?
    /// Newest last, at most ``historyLimit``.
    public var history: [DeployRecord] = []

    public struct InProgress: Codable, Sendable, Hashable {
        public var id: String
        public var image: String
        public var generation: Int
        public var startedAt: Date

        public init(id: String, image: String, generation: Int, startedAt: Date) {
            self.id = id
            self.image = image
            self.generation = generation
            self.startedAt = startedAt
        }
    }

    public static let historyLimit = 100

    public init() {}
}

/// One deploy (or rollback) on this node and how it ended.
public struct DeployRecord: Codable, Sendable, Hashable {
    public enum Kind: String, Codable, Sendable { case deploy, rollback, restore }
    public enum Result: String, Codable, Sendable { case succeeded, failed, interrupted }

    public var id: String
    public var kind: Kind
    public var image: String
    public var previousImage: String?
    public var generation: Int
    public var result: Result
    /// Why it failed, for the operator.
    public var reason: String?
    /// Health response or container output that explains a failure.
    public var evidence: String?
    public var warnings: [String]
    public var startedAt: Date
    /// Wall time from the start to the new instance serving (nil if it never served).
    public var servingAfterMs: Int64?
    public var durationMs: Int64
    public var steps: [StepTiming]

    public struct StepTiming: Codable, Sendable, Hashable {
        public var step: String
        public var ms: Int64
        public var status: String

        public init(step: String, ms: Int64, status: String) {
            self.step = step
            self.ms = ms
            self.status = status
        }
    }

    public init(
        id: String, kind: Kind, image: String, previousImage: String? = nil, generation: Int, result: Result, reason: String? = nil,
        evidence: String? = nil, warnings: [String], startedAt: Date, servingAfterMs: Int64? = nil, durationMs: Int64, steps: [StepTiming]
    ) {
        self.id = id
        self.kind = kind
        self.image = image
        self.previousImage = previousImage
        self.generation = generation
        self.result = result
        self.reason = reason
        self.evidence = evidence
        self.warnings = warnings
        self.startedAt = startedAt
        self.servingAfterMs = servingAfterMs
        self.durationMs = durationMs
        self.steps = steps
    }
}
