import AsyncHTTPClient
import Deployment
import Foundation
import NIOCore
import PeerCore

/// One health probe of an instance: GET http://127.0.0.1:PORT/PATH. When the app does not answer, the
/// container's state tells "still starting" from "exited" (with the tail of its output).
struct HealthProbe: Sendable {
    let http: HTTPClient
    let runtime: any ContainerRuntime
    let path: String
    let requestTimeout: Duration

    func probe(_ instance: AppInstance) async -> HealthObservation {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(instance.hostPort)\(path)")
        request.headers.add(name: "User-Agent", value: "peerd-health")
        request.headers.add(name: "Connection", value: "close")
        do {
            let response = try await http.execute(request, timeout: .nanoseconds(requestTimeout.nanoseconds))
            let body = try await response.body.collect(upTo: 4096)
            let status = Int(response.status.code)
            if (200..<300).contains(status) { return .healthy(status: status) }
            let excerpt = String(decoding: body.readableBytesView.prefix(200), as: UTF8.self)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            return .unhealthy(status: status, body: excerpt)
        } catch {
            return await unanswered(instance, why: Self.describe(error))
        }
    }

    private func unanswered(_ instance: AppInstance, why: String) async -> HealthObservation {
        do {
            if let code = try await runtime.exitCode(of: instance.containerID) {
                let logs = (try? await runtime.logsTail(of: instance.containerID, lines: 20)) ?? ""
                return .exited(code: code, logs: logs)
            }
        } catch {
            return .exited(code: -1, logs: "container is gone: \(error)")
        }
        return .unreachable(why)
    }

    static func describe(_ error: any Error) -> String {
        let text = "\(error)"
        if text.contains("connectTimeout") || text.contains("deadlineExceeded") { return "timed out" }
        if text.contains("Connection refused") || text.contains("connection refused") { return "connection refused" }
        if text.contains("remoteConnectionClosed") || text.contains("Connection reset") { return "connection closed" }
        return text
    }
}
