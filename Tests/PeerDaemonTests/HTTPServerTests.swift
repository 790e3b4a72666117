import AsyncHTTPClient
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Testing

@testable import PeerDaemon

/// peerd's own HTTP/1.1 server (control API and /metrics), over real TCP on loopback.
@Suite struct HTTPServerTests {
    @Test func answersInOrderStreamsChunksAndCapsBodies() async throws {
        let port = Int.random(in: 20_000..<40_000)
        let calls = NIOLockedCounter()
        let server = HTTPServer(address: .tcp(host: "127.0.0.1", port: port), maxBodyBytes: 16, logger: Logger(label: "test")) { request in
            calls.increment()
            switch request.path {
            case "/echo":
                return .init(contentType: "text/plain", body: .bytes(Array("\(request.method) \(String(buffer: request.body))".utf8)))
            case "/stream":
                return .init(
                    contentType: "application/x-ndjson",
                    body: .stream { write in
                        for i in 1...3 { try await write(Array("line \(i)\n".utf8)) }
                    })
            default:
                return .init(status: .notFound, contentType: "text/plain", body: .bytes([]))
            }
        }
        let group = ServiceGroup(services: [server], logger: Logger(label: "test"))
        try await withThrowingTaskGroup { tasks in
            tasks.addTask { try await group.run() }
            let client = HTTPClient(eventLoopGroupProvider: .singleton)
            func send(_ method: HTTPMethod, _ path: String, body: String? = nil) async throws -> (UInt, String, HTTPHeaders) {
                var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)?query=ignored")
                request.method = method
                if let body { request.body = .bytes(ByteBuffer(string: body)) }
                for _ in 0..<50 {
                    do {
                        let response = try await client.execute(request, timeout: .seconds(5))
                        let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
                        return (response.status.code, text, response.headers)
                    } catch  where "\(error)".contains("connect") {
                        try await Task.sleep(for: .milliseconds(50))  // not listening yet
                    }
                }
                throw HTTPClientError.connectTimeout
            }
            // Several requests on the client's kept-alive connection, each answered whole.
            for i in 0..<3 {
                let (status, text, headers) = try await send(.POST, "/echo", body: "hi \(i)")
                #expect(status == 200 && text == "POST hi \(i)")
                #expect(headers["content-length"].first == String(text.utf8.count))
            }
            let (status, text, headers) = try await send(.GET, "/stream")
            #expect(status == 200 && text == "line 1\nline 2\nline 3\n")
            #expect(headers["transfer-encoding"].first == "chunked")
            #expect(try await send(.GET, "/nowhere").0 == 404)
            let before = calls.load()
            let big = try await send(.POST, "/echo", body: String(repeating: "x", count: 17))
            #expect(big.0 == 413, "a body over the cap is refused")
            #expect(calls.load() == before, "and never reaches the handler")
            #expect(try await send(.POST, "/echo", body: "after").1 == "POST after", "the server still answers")
            try await client.shutdown()
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }
}

extension HTTPServerTests {
    /// A raw TCP client: what it reads until the server closes (or `limit` passes: nil).
    static func readUntilClosed(_ channel: NIOAsyncChannelWrapper, within limit: Duration) async throws -> String? {
        try await withThrowingTaskGroup(of: String?.self) { group in
            group.addTask {
                var text = ""
                for try await chunk in channel.inbound { text += String(buffer: chunk) }
                return text
            }
            group.addTask {
                try await Task.sleep(for: limit)
                return nil
            }
            let first = try await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    static func connect(_ port: Int) async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
        for _ in 0..<50 {
            do {
                return try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port) { channel in
                    channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
                }
            } catch {
                try await Task.sleep(for: .milliseconds(50))  // not listening yet
            }
        }
        throw HTTPClientError.connectTimeout
    }

    /// A client that connects and says nothing, or trickles its request a byte at a time, is closed after the
    /// request deadline; a response streamed for longer than the deadline is not cut.
    @Test(.timeLimit(.minutes(1))) func stalledClientsAreClosedAndLongStreamsAreNot() async throws {
        let port = Int.random(in: 20_000..<40_000)
        let server = HTTPServer(
            address: .tcp(host: "127.0.0.1", port: port), maxBodyBytes: 16, logger: Logger(label: "test"), requestDeadline: .milliseconds(400),
            maxConnections: 3
        ) { request in
            .init(
                contentType: "text/plain",
                body: .stream { write in
                    for i in 1...4 {
                        try await Task.sleep(for: .milliseconds(250))
                        try await write(Array("part \(i)\n".utf8))
                    }
                })
        }
        let group = ServiceGroup(services: [server], logger: Logger(label: "test"))
        try await withThrowingTaskGroup { tasks in
            tasks.addTask { try await group.run() }
            // Silent: closed by the server.
            let silent = try await Self.connect(port)
            let silentRead = try await silent.executeThenClose { inbound, _ in
                try await Self.readUntilClosed(NIOAsyncChannelWrapper(inbound: inbound), within: .seconds(5))
            }
            #expect(silentRead == "", "a silent connection was not closed")
            // A byte every 100 ms: never idle, but no complete head within the deadline.
            let trickle = try await Self.connect(port)
            let trickled: String? = try await trickle.executeThenClose { inbound, outbound in
                let request = Array("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
                var closed = false
                for byte in request.prefix(20) {
                    do {
                        try await outbound.write(ByteBuffer(bytes: [byte]))
                    } catch {
                        closed = true
                        break
                    }
                    try await Task.sleep(for: .milliseconds(100))
                }
                if closed { return "" }
                return try await Self.readUntilClosed(NIOAsyncChannelWrapper(inbound: inbound), within: .seconds(5))
            }
            #expect(trickled == "", "a trickling client got an answer or was not closed")
            // A whole head announcing a body that never comes.
            let stalledBody = try await Self.connect(port)
            let stalledRead = try await stalledBody.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(string: "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab"))
                return try await Self.readUntilClosed(NIOAsyncChannelWrapper(inbound: inbound), within: .seconds(5))
            }
            #expect(stalledRead == "", "a client stalling in its body was not closed")
            // A whole request answered by a 1 s stream: complete, though longer than the deadline.
            let streamed = try await Self.connect(port)
            let answer = try await streamed.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(string: "GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
                return try await Self.readUntilClosed(NIOAsyncChannelWrapper(inbound: inbound), within: .seconds(10))
            }
            #expect(answer?.contains("part 4") == true, "\(answer ?? "timed out")")
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }
}

extension HTTPServerTests {
    /// Connections over the cap are closed as they arrive; those within it are still answered.
    @Test(.timeLimit(.minutes(1))) func connectionsOverTheCapAreClosed() async throws {
        let port = Int.random(in: 20_000..<40_000)
        let server = HTTPServer(address: .tcp(host: "127.0.0.1", port: port), maxBodyBytes: 16, logger: Logger(label: "test"), maxConnections: 3) {
            _ in .init(contentType: "text/plain", body: .bytes(Array("hello".utf8)))
        }
        let group = ServiceGroup(services: [server], logger: Logger(label: "test"))
        try await withThrowingTaskGroup { tasks in
            tasks.addTask { try await group.run() }
            var held: [NIOAsyncChannel<ByteBuffer, ByteBuffer>] = []
            for _ in 0..<3 { held.append(try await Self.connect(port)) }
            // The server counts a connection when it accepts it: an answer on the last one proves all three counted.
            let (answeredHeld, extraRead) = try await held[2].executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
                var text = ""
                for try await chunk in inbound {
                    text += String(buffer: chunk)
                    if text.hasSuffix("hello") { break }
                }
                // All three held: a fourth is closed as it arrives.
                let extra = try await Self.connect(port)
                let extraRead = try await extra.executeThenClose { inbound, _ in
                    try await Self.readUntilClosed(NIOAsyncChannelWrapper(inbound: inbound), within: .seconds(5))
                }
                return (text.hasSuffix("hello"), extraRead)
            }
            #expect(answeredHeld)
            #expect(extraRead == "", "a connection over the cap was kept")
            // The held ones are still served.
            let answered = try await held[0].executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
                return try await Self.readUntilClosed(NIOAsyncChannelWrapper(inbound: inbound), within: .seconds(5))
            }
            #expect(answered?.hasSuffix("hello") == true, "a connection within the cap is not answered")
            try await held[1].executeThenClose { _, _ in }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }
}

/// The inbound side of a connection as the helper reads it.
struct NIOAsyncChannelWrapper {
    let inbound: NIOAsyncChannelInboundStream<ByteBuffer>
}

final class NIOLockedCounter: Sendable {
    private let value = NIOLockedValueBox(0)
    func increment() { value.withLockedValue { $0 += 1 } }
    func load() -> Int { value.withLockedValue { $0 } }
}
