import AsyncHTTPClient
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
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

final class NIOLockedCounter: Sendable {
    private let value = NIOLockedValueBox(0)
    func increment() { value.withLockedValue { $0 += 1 } }
    func load() -> Int { value.withLockedValue { $0 } }
}
