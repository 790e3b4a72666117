import Deployment
import Foundation
import PeerFiles

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
    }
}

/// The state file: `<state_dir>/state.json`, 0600, replaced atomically.
public struct StateStore: Sendable {
    public let directory: String
    public var path: String { directory + "/state.json" }

    public init(directory: String) { self.directory = directory }

    public func load() throws -> NodeState {
        guard let data = FileManager.default.contents(atPath: path) else { return NodeState() }
        do {
            return try Self.decoder.decode(NodeState.self, from: data)
        } catch {
            throw StateError(path: path, reason: "is not a state file peerd can read (\(error)); move it away to start fresh")
        }
    }

    public func save(_ state: NodeState) throws {
        try AtomicFile.makeDirectory(directory, mode: 0o700)
        let data = try Self.encoder.encode(state)
        try AtomicFile.write(data, to: path, mode: 0o600)
    }

    struct StateError: Error, CustomStringConvertible {
        var path: String
        var reason: String
        var description: String { "\(path) \(reason)" }
    }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        e.dateEncodingStrategy = .peerISO8601
        return e
    }()

    static let decoder: JSONDecoder = {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .peerISO8601
        return d
    }()
}
