import Deployment
import PeerCore
import Control
import Foundation
import Leadership
import PeerFiles

/// Every file peerd keeps in its state folder (`state_dir`), read and written one way: JSON with peer's ISO 8601
/// dates, replaced atomically, files 0600 in folders 0700. A file is named once, with the type it holds, so what
/// is written is what is read back.
public struct StateDirectory: Sendable {
    /// One file of the folder and the type it holds.
    public struct File<Value: Codable & Sendable>: Sendable {
        public let name: String
        public init(_ name: String) { self.name = name }
    }

    public struct Unreadable: Error, CustomStringConvertible {
        public var path: String
        public var reason: String
        public var description: String { "\(path) \(reason)" }
    }

    public let path: String

    public init(_ path: String) { self.path = path }

    public func path<Value>(of file: File<Value>) -> String { path + "/" + file.name }

    /// The file's value, or nil when there is none yet.
    public func read<Value>(_ file: File<Value>) throws(Unreadable) -> Value? {
        let full = path(of: file)
        guard let data = FileManager.default.contents(atPath: full) else { return nil }
        do {
            return try Self.decoder.decode(Value.self, from: data)
        } catch {
            throw Unreadable(path: full, reason: "is not a file peerd can read (\(error)); move it away to start fresh")
        }
    }

    public func write<Value>(_ value: Value, to file: File<Value>) throws {
        let full = path(of: file)
        try AtomicFile.makeDirectory(String(full[..<full.lastIndex(of: "/")!]), mode: 0o700)
        try AtomicFile.write(try Self.encoder.encode(value), to: full, mode: 0o600)
    }

    public func remove<Value>(_ file: File<Value>) {
        try? FileManager.default.removeItem(atPath: path(of: file))
    }

    /// The highest lease term this node promised, a decimal number on a line of its own (`lease-term`): 0 when
    /// the file does not exist; anything else that is not a term is refused, never read as 0 (a voter that forgot
    /// its promise could grant the same term twice).
    public func promisedTerm() throws(Unreadable) -> UInt64 {
        let full = path + "/" + Self.leaseTerm
        guard let data = FileManager.default.contents(atPath: full) else { return 0 }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let term = UInt64(text) else {
            throw Unreadable(
                path: full,
                reason:
                    "does not hold a lease term (\(text.prefix(40).debugDescription)); it is this node's promise to the others: restore it from a backup, or remove it only if this node has been stopped for longer than a lease"
            )
        }
        guard Counter.isPlausible(term) else {
            throw Unreadable(
                path: full,
                reason:
                    "holds a lease term of \(term), above any a cluster reaches (2^62): the file is corrupt or was written from a hostile message; this node refuses to start on it rather than trust it — if the node has been stopped for longer than a lease, remove the file"
            )
        }
        return term
    }

    public func writePromisedTerm(_ term: UInt64) throws {
        try AtomicFile.makeDirectory(path, mode: 0o700)
        try AtomicFile.write(Array("\(term)\n".utf8), to: path + "/" + Self.leaseTerm, mode: 0o600)
    }

    static let leaseTerm = "lease-term"

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

/// What this node remembers of the other members across restarts (`mesh-peers.json`): who has numbered its
/// datagrams (unnumbered ones from them are refused), and the cluster configuration each last announced (a
/// member out of reach with another list still holds elections up).
public struct MeshPeers: Codable, Sendable, Equatable {
    public var numbering: [String]
    public var configurations: [String: String]?

    public init(numbering: [String], configurations: [String: String]? = nil) {
        self.numbering = numbering
        self.configurations = configurations
    }
}

/// The cluster's configuration as this node took part in it (`configuration.json`): the committed one, and a
/// change under way that it accepted. Written before this node says so to anyone.
public struct StoredConfiguration: Codable, Sendable, Equatable {
    public var committed: Configuration
    public var pending: Configuration?

    public init(committed: Configuration, pending: Configuration?) {
        self.committed = committed
        self.pending = pending
    }
}

extension StateDirectory.File {
    public static var configuration: StateDirectory.File<StoredConfiguration> { .init("configuration.json") }

    public static var meshPeers: StateDirectory.File<MeshPeers> { .init("mesh-peers.json") }

    /// What serves on this node and its deploy history (``NodeState``).
    public static var node: StateDirectory.File<NodeState> { .init("state.json") }
}
