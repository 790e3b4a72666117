import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import PKI
import X509

/// A connection on the mesh, after the mutual TLS handshake: who it is, and its frames.
public struct MeshConnection: Sendable {
    public let peer: PeerIdentity
    /// The certificate it presented (verified): its public key keys the member's datagrams.
    public let certificate: Certificate
    public let remote: String
    public let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
}

/// The mesh listener and dialer: TLS 1.3 with the cluster's certificates, length-prefixed frames.
public enum Mesh {
    public static let maximumFrameSize = 1 << 20

    struct Accepted: @unchecked Sendable {
        var channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        var identity: NIOLockedValueBox<Verified?>
        var refusal: NIOLockedValueBox<String?>
        var remote: String
        var handshake: EventLoopFuture<Void>
    }

    /// Listens on `host:port`; calls `handle` for every connection that passed the identity check, each in its
    /// own child task. Refused connections are logged once per source per minute and never reach `handle`.
    /// `onBound` gets the bound port (useful with port 0).
    public static func listen(
        host: String, port: Int, tls: MeshTLS, logger: Logger, onBound: @Sendable (Int) async -> Void = { _ in },
        handle: @escaping @Sendable (MeshConnection) async throws -> Void
    ) async throws {
        let context = try tls.serverContext()
        let limiter = NIOLockedValueBox(RefusalLogLimiter())
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let identity = NIOLockedValueBox<Verified?>(nil)
                    let refusal = NIOLockedValueBox<String?>(nil)
                    let tlsHandler = NIOSSLServerHandler(
                        context: context, customVerificationCallback: tls.verificationCallback(identity: identity, refusal: refusal))
                    let (asyncChannel, handshake) = try framed(channel, tls: tlsHandler)
                    return Accepted(
                        channel: asyncChannel, identity: identity, refusal: refusal,
                        remote: channel.remoteAddress?.ipAddress ?? "unknown", handshake: handshake)
                }
            }
        await onBound(server.channel.localAddress?.port ?? port)
        try await server.executeThenClose { inbound in
            try await withThrowingDiscardingTaskGroup { group in
                for try await accepted in inbound {
                    group.addTask {
                        do {
                            try await accepted.handshake.get()
                            guard let peer = accepted.identity.withLockedValue({ $0 }) else { throw MeshTLS.Failure(description: "no identity") }
                            try await handle(
                                MeshConnection(peer: peer.identity, certificate: peer.certificate, remote: accepted.remote, channel: accepted.channel)
                            )
                        } catch {
                            try? await accepted.channel.channel.close()
                            let reason = accepted.refusal.withLockedValue { $0 } ?? "\(error)"
                            if limiter.withLockedValue({ $0.shouldLog(accepted.remote, now: .now) }) {
                                logger.warning(
                                    "mesh connection refused or failed", metadata: ["mesh.remote": "\(accepted.remote)", "reason": "\(reason)"])
                            }
                        }
                    }
                }
            }
        }
    }

    /// Dials a member and returns the connection once the handshake passed the same identity check.
    public static func dial(host: String, port: Int, tls: MeshTLS) async throws -> MeshConnection {
        let context = try tls.clientContext()
        let identity = NIOLockedValueBox<Verified?>(nil)
        let refusal = NIOLockedValueBox<String?>(nil)
        let (channel, handshake) = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(2))
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let tlsHandler = try NIOSSLClientHandler(
                        context: context, serverHostname: nil,
                        customVerificationCallback: tls.verificationCallback(identity: identity, refusal: refusal))
                    return try framed(channel, tls: tlsHandler)
                }
            }
        do {
            try await handshake.get()
        } catch {
            try? await channel.channel.close()
            throw MeshTLS.Failure(description: refusal.withLockedValue { $0 } ?? "TLS handshake with \(host):\(port) failed: \(error)")
        }
        guard let peer = identity.withLockedValue({ $0 }) else {
            try? await channel.channel.close()
            throw MeshTLS.Failure(description: "the server's certificate was not accepted")
        }
        return MeshConnection(peer: peer.identity, certificate: peer.certificate, remote: host, channel: channel)
    }
}

extension Mesh {
    /// The pipeline both sides share: TLS, the handshake watcher, then length-prefixed frames.
    static func framed(
        _ channel: any Channel, tls: some ChannelHandler
    ) throws
        -> (NIOAsyncChannel<ByteBuffer, ByteBuffer>, EventLoopFuture<Void>)
    {
        let handshake = channel.eventLoop.makePromise(of: Void.self)
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(tls)
        try sync.addHandler(HandshakeWaiter(promise: handshake))
        try sync.addHandler(ByteToMessageHandler(FrameDecoder(maximumFrameSize: maximumFrameSize)))
        try sync.addHandler(MessageToByteHandler(FrameEncoder()))
        return (try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel), handshake.futureResult)
    }
}

/// Completes its promise when the TLS handshake completes, fails it if the channel errs or closes first.
final class HandshakeWaiter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    private var promise: EventLoopPromise<Void>?

    init(promise: EventLoopPromise<Void>) { self.promise = promise }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted = event as? TLSUserEvent {
            promise?.succeed()
            promise = nil
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise?.fail(error)
        promise = nil
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise?.fail(ChannelError.ioOnClosedChannel)
        promise = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        promise?.fail(ChannelError.ioOnClosedChannel)
        promise = nil
    }
}
