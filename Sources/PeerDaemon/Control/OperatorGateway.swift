import Control
import Foundation
import Logging
import NIOCore
import Transport

/// The node's side of `peerctl --peer`: an operator's request over the mesh's mutual TLS, carried out by the same
/// ``NodeControl`` as `peerctl` on the node, logged with the operator's name. The first frame is the request; the
/// answer is one frame (the JSON of the result, or `{"error": …}`) — for a deploy, one frame per event.
struct OperatorGateway: Sendable {
    let control: NodeControl
    let logger: Logger

    func serve(_ connection: MeshConnection, operator name: String) async {
        try? await connection.channel.executeThenClose { inbound, outbound in
            var frames = inbound.makeAsyncIterator()
            guard let first = try await frames.next() else { return }
            func send(_ value: some Encodable) async throws {
                try await outbound.write(ByteBuffer(bytes: try ControlAPI.encoder.encode(value)))
            }
            do {
                let request = try JSONDecoder().decode(OperatorRequest.self, from: Data(buffer: first))
                logger.info(
                    "operator request",
                    metadata: ["operator.name": "\(name)", "operator.op": "\(request.op.rawValue)", "deploy.image": "\(request.image ?? "-")"])
                let by = "operator \(name)"
                switch request.op {
                case .status: try await send(await control.status())
                case .members: try await send(try control.members())
                case .who: try await send(try control.who())
                case .deploys: try await send(await control.history())
                case .tlsSet:
                    guard let pair = request.origin else { throw NodeControl.Refusal.badRequest("tls-set without a certificate") }
                    try await send(try await control.setOriginTLS(pair, requestedBy: by))
                case .revocations: try await send(try control.revocations())
                case .revoke:
                    try await send(try await control.revoke(request.revocations ?? [], requestedBy: by))
                case .deploy:
                    try await control.deploy(image: request.image ?? "", requestedBy: by).forEach { try await send($0) }
                case .rollback:
                    try await control.deploy(image: nil, requestedBy: by).forEach { try await send($0) }
                case .follow:
                    try await control.follow(request.id).forEach { try await send($0) }
                case .cancel:
                    try await send(try await control.cancel(request.id, requestedBy: by))
                }
            } catch let refusal as NodeControl.Refusal {
                try? await send(ControlAPI.ErrorBody(error: refusal.description, code: refusal.code))
            } catch {
                try? await send(ControlAPI.ErrorBody(error: "\(error)"))
            }
        }
    }
}
