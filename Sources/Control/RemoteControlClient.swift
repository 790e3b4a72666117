import AsyncHTTPClient
import Deployment
import Foundation
import Logging
import NIOCore
import PKI
import PeerCore
import Transport
import X509

/// What `peerctl` can ask peerd, locally (the unix socket) or remotely (the mesh port, with an operator
/// certificate).
public protocol ControlChannel: Sendable {
    func status() async throws -> ControlAPI.NodeStatus
    func members() async throws -> ControlAPI.Members
    func who() async throws -> ControlAPI.Who
    func history() async throws -> [DeployRecord]
    func deploy(image: String?, onEvent: (ControlAPI.Event) -> Void) async throws
    /// Re-attaches to a cluster rollout (the current one when `id` is nil).
    func follow(id: String?, onEvent: (ControlAPI.Event) -> Void) async throws
    /// Stops the cluster's current rollout (`id`, if given, must be it).
    func cancel(id: String?) async throws -> ControlAPI.Cancelled
    /// Installs an origin certificate on the node, which sends it to the others if `authority` lets it in.
    func setOriginTLS(_ pair: OriginPair, authority: OriginAuthority?) async throws -> ControlAPI.OriginTLS
    /// The certificate revocations the node holds.
    func revocations() async throws -> ControlAPI.Revocations
    /// Hands revocations the cluster CA signed to the node, which sends them to every other.
    func revoke(_ revocations: [Revocation]) async throws -> ControlAPI.Revocations
    /// The cluster's configuration the node holds.
    func configuration() async throws -> ControlAPI.ClusterConfiguration
    /// One member added or removed through the node, which must lead; returns once committed (or proposed).
    func changeMembers(_ change: ControlAPI.MemberChange) async throws -> ControlAPI.ClusterConfiguration
}

extension ControlClient: ControlChannel {}

/// One request of an operator over the mesh: the first frame of its connection. The answer is one frame
/// (the JSON of the result, or `{"error": …}`) — for a deploy, one frame per event — then the node closes.
public struct OperatorRequest: Codable, Sendable {
    public enum Operation: String, Codable, Sendable {
        case status, members, who, deploys, deploy, rollback, follow, cancel, tlsSet = "tls-set", revocations, revoke, configuration
        case changeMembers = "change-members"
    }
    public var op: Operation
    public var image: String?
    /// For `follow` and `cancel`: the rollout (nil: the current one).
    public var id: String?
    /// For `tls-set`: the origin certificate and its key, and who lets it into the cluster.
    public var origin: OriginPair?
    public var originAuthority: OriginAuthority?
    /// For `revoke`: revocations signed by the cluster CA.
    public var revocations: [Revocation]?
    /// For `change-members`: the member added or removed.
    public var change: ControlAPI.MemberChange?
}

/// `peerctl --peer HOST:PORT --cert operator.pem --key operator-key.pem --ca ca.pem …`: the control API over the
/// mesh's mutual TLS. The node's certificate must be a node of the cluster CA; ours an operator's.
///
/// Whom it talks to: with `node` (`--node NAME`), the node's certificate must be NAME's; without, its certificate
/// must name `host` among its addresses. Any node certificate of the cluster would otherwise do — and whoever
/// holds one node's key on the path could take what is sent (`tls set` sends the origin private key).
public struct RemoteControlClient: ControlChannel {
    public let host: String
    public let port: Int
    public let tls: MeshTLS
    public let node: String?

    public init(host: String, port: Int, caPEM: String, certificatePEM: String, keyPEM: String, node: String? = nil) throws {
        self.host = host
        self.port = port
        self.node = node
        guard let certificate = try? Certificate(pemEncoded: certificatePEM), case .operator = PeerIdentity(certificate: certificate) else {
            throw ControlClient.Failure(description: "--cert is not an operator certificate; make one with: peerctl cert issue-operator NAME")
        }
        tls = try MeshTLS(caPEM: caPEM, certificatePEM: certificatePEM, keyPEM: keyPEM) { who in
            if case .node = who { return true }
            return false
        }
    }

    func exchange(_ request: OperatorRequest, onFrame: (Data) throws -> Void) async throws {
        let connection: MeshConnection
        do {
            connection = try await Mesh.dial(host: host, port: port, tls: tls)
        } catch {
            throw ControlClient.Failure(description: "cannot reach the node at \(host):\(port) (\(error))", kind: .unreachable)
        }
        if let refusal = Self.refusal(of: connection, node: node, host: host, port: port) {
            await connection.close()
            throw ControlClient.Failure(description: refusal)
        }
        try await connection.channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(bytes: try JSONEncoder().encode(request)))
            for try await frame in inbound {
                let data = Data(buffer: frame)
                if let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any], object["type"] == nil,
                    let message = object["error"] as? String
                {
                    throw ControlClient.Failure(description: message, kind: .init(code: object["code"] as? String))
                }
                try onFrame(data)
            }
        }
    }

    /// Why the node answering at `host:port` is not the one asked for; nil when it is.
    static func refusal(of connection: MeshConnection, node: String?, host: String, port: Int) -> String? {
        let presented = connection.peer.name
        if let node {
            guard connection.peer != .node(node) else { return nil }
            return "the node at \(host):\(port) presents \(presented)'s certificate, not \(node)'s (--node): refused, nothing was sent"
        }
        let addresses = (try? connection.certificate.extensions.subjectAlternativeNames)?.compactMap { name -> [UInt8]? in
            if case .ipAddress(let bytes) = name { return Array(bytes.bytes) }
            return nil
        }
        if let wanted = ipAddressBytes(host), addresses?.contains(wanted) == true { return nil }
        return
            "the node at \(host):\(port) presents \(presented)'s certificate, which does not name \(host): say which node you mean with --node \(presented) (or PEER_NODE) if that is the one; nothing was sent"
    }

    func one<T: Decodable>(
        _ op: OperatorRequest.Operation, origin: OriginPair? = nil, originAuthority: OriginAuthority? = nil, revocations: [Revocation]? = nil
    ) async throws -> T {
        var result: T?
        try await exchange(OperatorRequest(op: op, origin: origin, originAuthority: originAuthority, revocations: revocations)) {
            result = try ControlAPI.decoder.decode(T.self, from: $0)
        }
        guard let result else { throw ControlClient.Failure(description: "the node closed the connection without answering", kind: .unreachable) }
        return result
    }

    public func status() async throws -> ControlAPI.NodeStatus { try await one(.status) }
    public func members() async throws -> ControlAPI.Members { try await one(.members) }
    public func who() async throws -> ControlAPI.Who { try await one(.who) }
    public func history() async throws -> [DeployRecord] { try await one(.deploys) }
    public func setOriginTLS(_ pair: OriginPair, authority: OriginAuthority?) async throws -> ControlAPI.OriginTLS {
        try await one(.tlsSet, origin: pair, originAuthority: authority)
    }
    public func revocations() async throws -> ControlAPI.Revocations { try await one(.revocations) }
    public func revoke(_ revocations: [Revocation]) async throws -> ControlAPI.Revocations { try await one(.revoke, revocations: revocations) }
    public func configuration() async throws -> ControlAPI.ClusterConfiguration { try await one(.configuration) }
    public func changeMembers(_ change: ControlAPI.MemberChange) async throws -> ControlAPI.ClusterConfiguration {
        var result: ControlAPI.ClusterConfiguration?
        try await exchange(OperatorRequest(op: .changeMembers, change: change)) {
            result = try ControlAPI.decoder.decode(ControlAPI.ClusterConfiguration.self, from: $0)
        }
        guard let result else { throw ControlClient.Failure(description: "the node closed the connection without answering", kind: .unreachable) }
        return result
    }

    public func deploy(image: String?, onEvent: (ControlAPI.Event) -> Void) async throws {
        try await exchange(OperatorRequest(op: image == nil ? .rollback : .deploy, image: image)) {
            onEvent(try ControlAPI.decoder.decode(ControlAPI.Event.self, from: $0))
        }
    }

    public func follow(id: String?, onEvent: (ControlAPI.Event) -> Void) async throws {
        try await exchange(OperatorRequest(op: .follow, id: id)) {
            onEvent(try ControlAPI.decoder.decode(ControlAPI.Event.self, from: $0))
        }
    }

    public func cancel(id: String?) async throws -> ControlAPI.Cancelled {
        var result: ControlAPI.Cancelled?
        try await exchange(OperatorRequest(op: .cancel, id: id)) { result = try ControlAPI.decoder.decode(ControlAPI.Cancelled.self, from: $0) }
        guard let result else { throw ControlClient.Failure(description: "the node closed the connection without answering", kind: .unreachable) }
        return result
    }
}
