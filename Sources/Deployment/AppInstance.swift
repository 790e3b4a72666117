/// One running copy of the app: a container of peer's, reachable on a loopback host port.
public struct AppInstance: Sendable, Hashable, Codable, CustomStringConvertible {
    /// Monotonic per node: every swap starts a new generation; nginx config names the generation it routes to.
    public var generation: Int
    public var image: String
    public var containerID: String
    public var containerName: String
    public var hostPort: Int

    public init(generation: Int, image: String, containerID: String, containerName: String, hostPort: Int) {
        self.generation = generation
        self.image = image
        self.containerID = containerID
        self.containerName = containerName
        self.hostPort = hostPort
    }

    public var shortID: String { String(containerID.prefix(12)) }

    public var description: String { "\(containerName) (\(image), 127.0.0.1:\(hostPort))" }
}

/// What one health probe of a new container saw.
public enum HealthObservation: Sendable, Hashable {
    /// The health endpoint answered 2xx.
    case healthy(status: Int)
    /// The endpoint answered, but not 2xx; `body` is a short excerpt for the operator.
    case unhealthy(status: Int, body: String)
    /// No HTTP answer (refused, reset, timed out) while the container is still running.
    case unreachable(String)
    /// The container is no longer running, or crashed and was restarted by its restart policy; `logs` is the
    /// tail of its output. `code` is -1 when unknown.
    case exited(code: Int, logs: String)

    public var isHealthy: Bool { if case .healthy = self { true } else { false } }

    /// One line an operator can act on.
    public var summary: String {
        switch self {
        case .healthy(let status): "answered \(status)"
        case .unhealthy(let status, let body):
            body.isEmpty ? "answered \(status)" : "answered \(status): \(body)"
        case .unreachable(let why): "no answer (\(why))"
        case .exited(let code, _):
            code >= 0 ? "container exited with code \(code)" : "container exited (exit code unknown: it was restarted or removed)"
        }
    }
}
