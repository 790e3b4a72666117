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

extension MeshConnection {
    /// Closes it without using it (its frames' writer is finished, as NIO requires, before the channel closes).
    public func close() async { await Mesh.close(channel) }
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

    /// What the listener lets a stranger hold: the port is open to the internet for deploys from CI.
    public struct Limits: Sendable {
        /// A connection that has not finished its TLS handshake by then is closed.
        public var handshakeTimeout: TimeAmount
        /// Connections at once (handshaking or established), in all and from one source address; more are
        /// closed as they arrive, so a flood of idle connections cannot take the descriptors members need.
        public var total: Int
        public var perSource: Int
        /// Called (once) when a burst of connections — at least 256 at once — is over (an eighth of its peak
        /// left): the moment to give the memory it took back.
        public var afterBurst: (@Sendable () -> Void)?
        /// Whether a connection from this source address may go on at all (`mesh.allow_from`); nil: any. Others are
        /// closed as they arrive, before any TLS work and without taking a place.
        public var admits: (@Sendable (String) -> Bool)?

        public init(
            handshakeTimeout: TimeAmount = .seconds(5), total: Int = 1024, perSource: Int = 64, afterBurst: (@Sendable () -> Void)? = nil,
            admits: (@Sendable (String) -> Bool)? = nil
        ) {
            self.handshakeTimeout = handshakeTimeout
            self.total = total
            self.perSource = perSource
            self.afterBurst = afterBurst
            self.admits = admits
        }
    }

    /// Listens on `host:port`; calls `handle` for every connection that passed the identity check, each in its
    /// own child task. Refused connections are logged once per source per minute and never reach `handle`.
    /// `onBound` gets the bound port (useful with port 0).
    public static func listen(
        host: String, port: Int, tls: MeshTLS, limits: Limits = Limits(), logger: Logger, onBound: @Sendable (Int) async -> Void = { _ in },
        handle: @escaping @Sendable (MeshConnection) async throws -> Void
    ) async throws {
        let context = try tls.serverContext()
        let limiter = NIOLockedValueBox(RefusalLogLimiter())
        let gate = NIOLockedValueBox(ConnectionGate(limits: limits))
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port) { (channel: any Channel) -> EventLoopFuture<Accepted> in
                let remote = channel.remoteAddress?.ipAddress ?? "unknown"
                if let admits = limits.admits, !admits(remote) {
                    if limiter.withLockedValue({ $0.shouldLog("source " + remote, now: .now) }) {
                        logger.warning(
                            "mesh connection refused",
                            metadata: ["mesh.remote": "\(remote)", "reason": "not a member's address nor in mesh.allow_from"])
                    }
                    return channel.close().flatMapThrowing { () throws -> Accepted in throw MeshTLS.Failure(description: "source not allowed") }
                }
                if let full = gate.withLockedValue({ $0.admit(remote) }) {
                    if limiter.withLockedValue({ $0.shouldLog("limit " + remote, now: .now) }) {
                        logger.warning("mesh connection refused", metadata: ["mesh.remote": "\(remote)", "reason": "\(full)"])
                    }
                    return channel.close().flatMapThrowing { () throws -> Accepted in throw MeshTLS.Failure(description: full) }
                }
                channel.closeFuture.whenComplete { _ in
                    if gate.withLockedValue({ $0.release(remote) }) { limits.afterBurst?() }
                }
                return channel.eventLoop.makeCompletedFuture { () throws -> Accepted in
                    let identity = NIOLockedValueBox<Verified?>(nil)
                    let refusal = NIOLockedValueBox<String?>(nil)
                    let tlsHandler = NIOSSLServerHandler(
                        context: context, customVerificationCallback: tls.verificationCallback(identity: identity, refusal: refusal))
                    let (asyncChannel, handshake) = try framed(channel, tls: tlsHandler)
                    // A connection that never finishes its handshake holds a descriptor for nothing.
                    let timeout = channel.eventLoop.scheduleTask(in: limits.handshakeTimeout) {
                        refusal.withLockedValue { $0 = $0 ?? "no TLS handshake within \(limits.handshakeTimeout.nanoseconds / 1_000_000) ms" }
                        channel.close(promise: nil)
                    }
                    handshake.whenComplete { _ in timeout.cancel() }
                    return Accepted(channel: asyncChannel, identity: identity, refusal: refusal, remote: remote, handshake: handshake)
                }
            }
        await onBound(server.channel.localAddress?.port ?? port)
        try await server.executeThenClose { inbound in
            try await withThrowingDiscardingTaskGroup { group in
                for try await accepted in inbound {
                    group.addTask {
                        do {
                            // Waiting on a future ignores cancellation: the listener's end closes the connection,
                            // which ends a handshake still running (or a handler that does not check).
                            try await withTaskCancellationHandler {
                                try await accepted.handshake.get()
                                guard let peer = accepted.identity.withLockedValue({ $0 }) else {
                                    throw MeshTLS.Failure(description: "no identity")
                                }
                                try tls.track(accepted.channel.channel, peer)
                                try await handle(
                                    MeshConnection(
                                        peer: peer.identity, certificate: peer.certificate, remote: accepted.remote, channel: accepted.channel)
                                )
                            } onCancel: {
                                accepted.channel.channel.close(promise: nil)
                            }
                        } catch {
                            await close(accepted.channel)
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

    /// Closes a framed channel never used (NIO requires its writer finished before it goes away).
    static func close(_ channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async {
        try? await channel.executeThenClose { _, _ in }
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
            await close(channel)
            throw MeshTLS.Failure(description: refusal.withLockedValue { $0 } ?? "TLS handshake with \(host):\(port) failed: \(error)")
        }
        guard let peer = identity.withLockedValue({ $0 }) else {
            await close(channel)
            throw MeshTLS.Failure(description: "the server's certificate was not accepted")
        }
        do {
            try tls.track(channel.channel, peer)
        } catch {
            await close(channel)
            throw error
        }
        return MeshConnection(peer: peer.identity, certificate: peer.certificate, remote: host, channel: channel)
    }
}

extension MeshTLS {
    /// Hands a verified connection to the revocations, which cut it if its certificate is revoked later (or was
    /// since its handshake: then this throws).
    func track(_ channel: any Channel, _ peer: Verified) throws {
        guard let revocations else { return }
        guard revocations.register(channel, certificate: peer.certificate, identity: peer.identity) else {
            throw Failure(description: revocations.refusal(of: peer.certificate) ?? "the certificate of \(peer.identity) is revoked")
        }
    }
}

/// Counts the listener's connections, in all and by source address.
struct ConnectionGate {
    let limits: Mesh.Limits
    private(set) var total = 0
    private(set) var bySource: [String: Int] = [:]
    /// The most connections at once since the last burst ended.
    private(set) var peak = 0
    static let burst = 256

    init(limits: Mesh.Limits) { self.limits = limits }

    /// Takes a place for a connection from `source`; nil if admitted, otherwise why not.
    mutating func admit(_ source: String) -> String? {
        if total >= limits.total { return "too many connections (\(limits.total)) to the mesh port" }
        if bySource[source, default: 0] >= limits.perSource { return "too many connections (\(limits.perSource)) from \(source)" }
        total += 1
        bySource[source, default: 0] += 1
        peak = max(peak, total)
        return nil
    }

    /// Gives the place back; true when this ends a burst (``Mesh/Limits/afterBurst``).
    @discardableResult
    mutating func release(_ source: String) -> Bool {
        total -= 1
        bySource[source, default: 1] -= 1
        if bySource[source] == 0 { bySource[source] = nil }
        guard peak >= Self.burst, total <= peak / 8 else { return false }
        peak = total
        return true
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
