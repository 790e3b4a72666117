import ArgumentParser
import AsyncHTTPClient
import Foundation
import Control
import Deployment
import PeerConfiguration

@main
enum Main {
    /// Connection options before the subcommand (as the docs show them) are moved after it.
    static func main() async {
        await Peerctl.main(PeerctlArguments.hoisted(Array(CommandLine.arguments.dropFirst())))
    }
}

struct Peerctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peerctl",
        abstract: "Control the peerd on this node.",
        version: ControlAPI.version,
        subcommands: [
            Deploy.self, Rollback.self, RolloutCommand.self, Status.self, Members.self, Who.self, Deploys.self, ConfigCommand.self, TLS.self,
            InitCommand.self,
            NodeCommand.self, Join.self, CA.self, Cert.self, Operator.self,
        ])

}

/// Where to find peerd: this node's control socket (from its config, or given), or a node over the mesh with
/// an operator certificate (`--peer`).
struct Connection: ParsableArguments {
    @Option(name: .long, help: "The node's config file (to find the control socket).")
    var config: String = PeerConfig.defaultPath

    @Option(name: .long, help: "The control socket, overriding the one in the config.")
    var socket: String?

    @Option(
        name: .long,
        help:
            "Talk to a node over the mesh instead: HOST:PORT of its mesh.listen (needs --cert, --key, --ca). Env: PEER_ADDR, PEER_CLIENT_CERT, PEER_CLIENT_KEY, PEER_CACERT."
    )
    var peer: String?

    @Option(name: .long, help: "Operator certificate (peerctl cert issue-operator NAME), for --peer.")
    var cert: String?

    @Option(name: .long, help: "Its private key, for --peer.")
    var key: String?

    @Option(name: .long, help: "The cluster CA certificate, for --peer.")
    var ca: String?

    @Option(
        name: .long,
        help:
            "For --peer: the node you mean; its certificate must be this node's (needed when HOST is not the address in its certificate, e.g. a public address). Env: PEER_NODE."
    )
    var node: String?

    /// `--peer`, `--cert`, `--key`, `--ca`, or else `PEER_ADDR`, `PEER_CLIENT_CERT`, `PEER_CLIENT_KEY`, `PEER_CACERT`
    /// (for CI, where secrets arrive as environment variables).
    var remote: (peer: String, cert: String?, key: String?, ca: String?, node: String?)? {
        let env = ProcessInfo.processInfo.environment
        guard let peer = peer ?? env["PEER_ADDR"].flatMap({ $0.isEmpty ? nil : $0 }) else { return nil }
        return (
            peer, cert ?? env["PEER_CLIENT_CERT"], key ?? env["PEER_CLIENT_KEY"], ca ?? env["PEER_CACERT"],
            node ?? env["PEER_NODE"].flatMap { $0.isEmpty ? nil : $0 }
        )
    }

    func validate() throws {
        if let remote, remote.cert == nil || remote.key == nil || remote.ca == nil {
            throw ValidationError(
                "--peer needs --cert, --key and --ca (or PEER_CLIENT_CERT, PEER_CLIENT_KEY, PEER_CACERT): an operator certificate from peerctl cert issue-operator NAME"
            )
        }
    }

    func socketPath() throws -> String {
        if let socket { return socket }
        do {
            return try PeerConfig.load(path: config).controlSocket
        } catch {
            throw ValidationError("\(error)")
        }
    }

    func withClient<T>(_ body: (any ControlChannel) async throws -> T) async throws -> T {
        if let remote {
            let peer = remote.peer
            guard let colon = peer.lastIndex(of: ":"), let port = Int(peer[peer.index(after: colon)...]) else {
                throw ValidationError("--peer \(peer): expected HOST:PORT, e.g. 203.0.113.10:7946")
            }
            let host = String(peer[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            let read = { (path: String) throws -> String in
                guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("\(path) cannot be read") }
                return String(decoding: data, as: UTF8.self)
            }
            let client = try RemoteControlClient(
                host: host, port: port, caPEM: try read(remote.ca!), certificatePEM: try read(remote.cert!), keyPEM: try read(remote.key!),
                node: remote.node)
            return try await body(client)
        }
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

func fail(_ message: String, code: ExitCode = .failure) -> ExitCode {
    FileHandle.standardError.write(Data("peerctl: \(message)\n".utf8))
    return code
}

func printJSON(_ value: some Encodable) throws {
    // A new encoder: ControlAPI.encoder is shared and stays compact.
    let encoder = JSONEncoder()
    encoder.dateEncodingStrategy = .peerISO8601
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}
