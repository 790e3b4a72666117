/// Errors from the Docker Engine, phrased for the operator: what failed, what dockerd said, what to do.
public enum DockerError: Error, CustomStringConvertible, Sendable {
    /// dockerd does not answer on its socket.
    case unreachable(socket: String, reason: String)
    /// The engine answered with an error status.
    case api(operation: String, status: Int, message: String)
    /// A pull failed after the stream began (unknown tag, registry refused auth, …).
    case pullFailed(image: String, message: String)
    /// The container stopped right after it started.
    case exitedAtStart(name: String, code: Int, logs: String)
    case unexpectedResponse(operation: String, detail: String)

    public var description: String {
        switch self {
        case .unreachable(let socket, let reason):
            "cannot reach dockerd at \(socket) (\(reason)); start Docker (systemctl start docker) or set docker.socket in the config"
        case .api(let operation, let status, let message):
            "\(operation): dockerd answered \(status): \(message)\(Self.hint(status: status, message: message))"
        case .pullFailed(_, let message):
            // The caller names the image; this says what the registry answered and what to do.
            "\(message)\(Self.hint(status: 0, message: message))"
        case .exitedAtStart(let name, let code, let logs):
            "\(name) exited with code \(code) right after it started" + (logs.isEmpty ? "" : "; its last output:\n\(logs)")
        case .unexpectedResponse(let operation, let detail):
            "\(operation): unexpected answer from dockerd: \(detail)"
        }
    }

    private static func hint(status: Int, message: String) -> String {
        let lower = message.lowercased()
        if lower.contains("unauthorized") || lower.contains("authentication required") || lower.contains("denied")
            || lower.contains("no basic auth credentials")
        {
            return " (check the registry credentials in the config: registries[].username / password_env / password_file)"
        }
        if status == 404 || lower.contains("not found") || lower.contains("manifest unknown") {
            return " (check the image name and tag)"
        }
        return ""
    }
}
