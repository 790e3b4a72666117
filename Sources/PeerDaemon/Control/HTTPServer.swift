import PeerConfiguration
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// The small HTTP/1.1 server behind peerd's two endpoints: the control API on a unix socket and `/metrics` on
/// loopback. NIO's own HTTP codec and pipelining handler; one task per connection, requests answered in order
/// (keep-alive honoured), bodies capped, responses either whole (with a length) or streamed (chunked).
///
/// Not a web framework on purpose: a framework kept a date-header timer running per server (two wake-ups a
/// second in an idle daemon) and loaded ICU's calendar and time-zone data for it, about 5 MiB resident
/// (docs/benchmarks.md, "peerd memory").
///
/// A client that connects and does not send a complete request (head and body) within ``requestDeadline`` (of connecting,
/// or of the previous response's end) is closed — one that stalls or trickles a byte at a time holds nothing for
/// long; a response being streamed (a deploy's progress) is never cut. More than ``maxConnections`` at once are
/// closed as they arrive.
///
/// A graceful shutdown stops accepting, closes idle connections at once and the others after the response in
/// flight (NIO's quiescing), so a `peerctl deploy` that is streaming progress still gets its result line.
struct HTTPServer: Service {
    enum Address: Sendable, CustomStringConvertible {
        case tcp(host: String, port: Int)
        case unix(path: String)

        var description: String {
            switch self {
            case .tcp(let host, let port): return PeerConfig.hostPortString(host, port)
            case .unix(let path): return path
            }
        }
    }

    struct Request: Sendable {
        var method: HTTPMethod
        /// The path without the query.
        var path: String
        var headers: HTTPHeaders
        var body: ByteBuffer
    }

    struct Response: Sendable {
        enum Body: Sendable {
            case bytes([UInt8])
            /// Chunks written as the closure produces them (chunked transfer encoding).
            case stream(@Sendable (_ write: @Sendable ([UInt8]) async throws -> Void) async throws -> Void)
        }

        var status: HTTPResponseStatus
        var contentType: String
        var body: Body

        init(status: HTTPResponseStatus = .ok, contentType: String, body: Body) {
            self.status = status
            self.contentType = contentType
            self.body = body
        }
    }

    typealias Handler = @Sendable (Request) async -> Response

    let address: Address
    /// A larger request body is answered with 413 and never handed to the handler.
    let maxBodyBytes: Int
    /// Runs once the listener is bound (the control socket's mode is set here).
    let onBound: @Sendable () -> Void
    let logger: Logger
    let requestDeadline: TimeAmount
    let maxConnections: Int
    let handler: Handler

    init(
        address: Address, maxBodyBytes: Int, onBound: @escaping @Sendable () -> Void = {}, logger: Logger,
        requestDeadline: TimeAmount = .seconds(10), maxConnections: Int = 64, handler: @escaping Handler
    ) {
        self.address = address
        self.maxBodyBytes = maxBodyBytes
        self.onBound = onBound
        self.logger = logger
        self.requestDeadline = requestDeadline
        self.maxConnections = maxConnections
        self.handler = handler
    }

    typealias Connection = NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>

    func run() async throws {
        let open = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        let (deadline, cap) = (requestDeadline, maxConnections)
        let initializer: @Sendable (any Channel) -> EventLoopFuture<Connection> = { channel in
            guard open.withLockedValue({ $0.count < cap }) else {
                return channel.close().flatMapThrowing { throw ChannelError.ioOnClosedChannel }
            }
            return channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                try channel.pipeline.syncOperations.addHandler(RequestDeadline(limit: deadline))
                let id = ObjectIdentifier(channel)
                open.withLockedValue { $0[id] = channel }
                channel.closeFuture.whenComplete { _ in _ = open.withLockedValue { $0.removeValue(forKey: id) } }
                return try Connection(wrappingChannelSynchronously: channel)
            }
        }
        let server: NIOAsyncChannel<Connection, Never>
        switch address {
        case .tcp(let host, let port):
            server = try await bootstrap.bind(host: host, port: port, childChannelInitializer: initializer)
        case .unix(let path):
            // A socket file left by a crash goes; ControlServer.prepareSocket has made sure no running peerd owns it.
            server = try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true, childChannelInitializer: initializer)
        }
        onBound()
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { connections in
                    for try await connection in connections {
                        group.addTask { await serve(connection) }
                    }
                }
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
            for channel in open.withLockedValue({ Array($0.values) }) {
                channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
            }
        }
    }

    private func serve(_ connection: Connection) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                var head: HTTPRequestHead?
                var body = ByteBuffer()
                var tooLarge = false
                for try await part in inbound {
                    switch part {
                    case .head(let next):
                        head = next
                        body.clear()
                        tooLarge = false
                    case .body(var chunk):
                        if body.readableBytes + chunk.readableBytes > maxBodyBytes { tooLarge = true } else { body.writeBuffer(&chunk) }
                    case .end:
                        guard let request = head else { continue }
                        head = nil
                        let response: Response
                        if tooLarge {
                            response = Response(
                                status: .payloadTooLarge, contentType: "text/plain; charset=utf-8",
                                body: .bytes(Array("request body over \(maxBodyBytes) bytes\n".utf8)))
                        } else {
                            let path = request.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? "/"
                            response = await handler(Request(method: request.method, path: path, headers: request.headers, body: body))
                        }
                        try await write(response, for: request, to: outbound)
                        if !request.isKeepAlive { return }
                    }
                }
            }
        } catch {
            // A client that went away mid-response: nothing to answer any more.
            logger.debug("http connection ended", metadata: ["http.server": "\(address)", "error": "\(error)"])
        }
    }

    private func write(
        _ response: Response, for request: HTTPRequestHead, to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>
    ) async throws {
        var headers = HTTPHeaders([("content-type", response.contentType)])
        if !request.isKeepAlive { headers.add(name: "connection", value: "close") }
        switch response.body {
        case .bytes(let bytes):
            headers.add(name: "content-length", value: String(bytes.count))
            try await outbound.write(.head(HTTPResponseHead(version: request.version, status: response.status, headers: headers)))
            if request.method != .HEAD, !bytes.isEmpty { try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: bytes)))) }
        case .stream(let produce):
            headers.add(name: "transfer-encoding", value: "chunked")
            try await outbound.write(.head(HTTPResponseHead(version: request.version, status: response.status, headers: headers)))
            try await produce { chunk in
                if !chunk.isEmpty { try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: chunk)))) }
            }
        }
        try await outbound.write(.end(nil))
    }
}

/// Closes a connection that has not sent a complete request (head and body) within `limit` of opening or of the
/// previous response's end. Between a request's end and its response's end there is no limit (a streamed deploy).
final class RequestDeadline: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let limit: TimeAmount
    private var timer: Scheduled<Void>?

    init(limit: TimeAmount) { self.limit = limit }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // The whole request, body included: a head followed by a stalled body holds nothing for long either.
        if case .end = unwrapInboundIn(data) {
            timer?.cancel()
            timer = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { arm(context) }
        context.write(data, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    private func arm(_ context: ChannelHandlerContext) {
        timer?.cancel()
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: limit) { channel.close(promise: nil) }
    }
}
