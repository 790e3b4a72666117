import Control
import Foundation
import PeerDaemon

/// A real `peerd` process for a test node, started from the built binary and killable with any signal.
public final class PeerdProcess: @unchecked Sendable {
    public let node: TestNode
    public private(set) var pid: pid_t = 0
    public let logPath: String

    public static var binDirectory: String {
        ProcessInfo.processInfo.environment["PEER_BIN"] ?? TestBed.root + "/.build/debug"
    }

    public let extraArguments: [String]
    /// Added to peerd's environment (test-only hooks).
    public let environment: [String: String]

    public init(node: TestNode, extraArguments: [String] = [], environment: [String: String] = [:]) {
        self.node = node
        self.extraArguments = extraArguments
        self.environment = environment
        self.logPath = node.directory + "/peerd.log"
    }

    /// Starts peerd and waits until it has adopted what runs (its status no longer says "starting").
    public func start() async throws {
        let binary = Self.binDirectory + "/peerd"
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw TestBed.NotReady(description: "\(binary) is missing: run swift build first")
        }
        pid = try Spawn.start(
            binary, ["--config", node.configPath, "--log-level", "debug"] + extraArguments, output: logPath, environment: environment)
        for _ in 0..<200 {
            let answer = try peerctl(["status", "--json"])
            if answer.status == 0, let status = try? ControlAPI.decoder.decode(ControlAPI.NodeStatus.self, from: Data(answer.output.utf8)),
                status.starting == nil
            {
                return
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestBed.NotReady(description: "peerd did not answer within 10 s; log:\n\(log())")
    }

    /// Sends a signal, waits for the exit and returns the exit status (128 + signal if it was killed).
    @discardableResult
    public func stop(_ signal: Int32) -> Int32 {
        guard pid > 0 else { return -1 }
        Glibc.kill(pid, signal)
        let status = Spawn.wait(pid)
        pid = 0
        return status
    }

    /// Sends a signal and reaps the process.
    public func kill(_ signal: Int32 = SIGKILL) {
        stop(signal)
    }

    public func peerctl(_ arguments: [String]) throws -> Shell.Result {
        try Shell.run(Self.binDirectory + "/peerctl", arguments + ["--config", node.configPath])
    }

    public func log() -> String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    deinit { kill(SIGKILL) }
}
