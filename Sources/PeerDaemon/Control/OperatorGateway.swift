import Control
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PKI
import Transport

/// The node's side of `peerctl --peer`: an operator's request over the mesh's mutual TLS, carried out by the same
/// ``NodeControl`` as `peerctl` on the node, logged with the operator's name — if the scopes its certificate names
/// allow it (``PKI/OperatorScope``). The first frame is the request; the
/// answer is one frame (the JSON of the result, or `{"error": …}`) — for a deploy, one frame per event.
struct OperatorGateway: Sendable {
    let control: NodeControl
    let logger: Logger
    /// An operator's connection that has not sent its request by then is closed: it holds a place under the mesh
    /// port's connection limits for nothing.
    var requestDeadline: TimeAmount = .seconds(10)

    func serve(_ connection: MeshConnection, operator name: String) async {
        let asked = NIOLockedValueBox(false)
        let channel = connection.channel.channel
        let deadline = channel.eventLoop.scheduleTask(in: requestDeadline) {
            guard !asked.withLockedValue({ $0 }) else { return }
            logger.info("operator connection closed: no request within the deadline", metadata: ["operator.name": "\(name)"])
            channel.close(promise: nil)
        }
        defer { deadline.cancel() }
        try? await connection.channel.executeThenClose { inbound, outbound in
            var frames = inbound.makeAsyncIterator()
            guard let first = try await frames.next() else { return }
            asked.withLockedValue { $0 = true }
            func send(_ value: some Encodable) async throws {
                try await outbound.write(ByteBuffer(bytes: try ControlAPI.encoder.encode(value)))
            }
            do {
                let request = try JSONDecoder().decode(OperatorRequest.self, from: Data(buffer: first))
                logger.info(
                    "operator request",
                    metadata: ["operator.name": "\(name)", "operator.op": "\(request.op.rawValue)", "deploy.image": "\(request.image ?? "-")"])
                let by = "operator \(name)"
                let scopes = OperatorScope.scopes(of: connection.certificate)
                guard request.op.scope.isAllowed(by: scopes) else {
                    logger.warning(
                        "operator request refused: not in its certificate's scopes",
                        metadata: ["operator.name": "\(name)", "operator.op": "\(request.op.rawValue)"])
                    throw NodeControl.Refusal.forbidden(
                        "operator \(name) may not \(request.op.rawValue) (its certificate's scopes: \(scopes.sorted().map(\.rawValue).joined(separator: ", "))); issue one with --scope \(request.op.scope.rawValue) where the CA key is: peerctl cert issue-operator \(name) --scope \(request.op.scope.rawValue) --force"
                    )
                }
                switch request.op {
                case .status: try await send(await control.status())
                case .members: try await send(try control.members())
                case .who: try await send(try control.who())
                case .deploys: try await send(await control.history())
                case .tlsSet:
                    guard let pair = request.origin else { throw NodeControl.Refusal.badRequest("tls-set without a certificate") }
                    try await send(try await control.setOriginTLS(pair, requestedBy: by, authority: request.originAuthority))
                case .revocations: try await send(try control.revocations())
                case .configuration: try await send(try control.configuration())
                case .changeMembers:
                    guard let change = request.change else {
                        throw NodeControl.Refusal.badRequest("change-members needs a change: {\"add\": …} or {\"remove\": …}")
                    }
                    try await send(try await control.changeMembers(change))
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

extension OperatorRequest.Operation {
    /// The scope an operator's certificate needs for it. Handing on revocations needs no more than read: the CA's
    /// signature on them is what counts.
    var scope: OperatorScope {
        switch self {
        case .status, .members, .who, .deploys, .revocations, .revoke, .configuration: .read
        case .deploy, .rollback, .follow, .cancel: .deploy
        case .tlsSet: .tls
        case .changeMembers: .admin
        }
    }
}
