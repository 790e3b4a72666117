import ArgumentParser
import AsyncHTTPClient
import Foundation
import PeerDaemon

@main
struct Peerctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peerctl",
        abstract: "Control the peerd on this node.",
        version: ControlAPI.version,
        subcommands: [Deploy.self, Rollback.self, Status.self, Members.self, Who.self, Deploys.self, ConfigCommand.self, CA.self, Cert.self])
}

/// Where to find peerd: its config (for the control socket), or the socket itself.
struct Connection: ParsableArguments {
    @Option(name: .long, help: "The node's config file (to find the control socket).")
    var config: String = PeerConfig.defaultPath

    @Option(name: .long, help: "The control socket, overriding the one in the config.")
    var socket: String?

    func socketPath() throws -> String {
        if let socket { return socket }
        do {
            return try PeerConfig.load(path: config).controlSocket
        } catch {
            throw ValidationError("\(error)")
        }
    }

    func withClient<T>(_ body: (ControlClient) async throws -> T) async throws -> T {
        let path = try socketPath()
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        do {
            let result = try await body(ControlClient(socketPath: path, http: http))
            try await http.shutdown()
            return result
        } catch {
            try? await http.shutdown()
            throw error
        }
    }
}

func fail(_ message: String) -> ExitCode {
    FileHandle.standardError.write(Data("peerctl: \(message)\n".utf8))
    return .failure
}

func printJSON(_ value: some Encodable) throws {
    // A new encoder: ControlAPI.encoder is shared and stays compact.
    let encoder = JSONEncoder()
    encoder.dateEncodingStrategy = .iso8601
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}
