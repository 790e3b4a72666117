public enum NginxError: Error, CustomStringConvertible, Sendable {
    case notInstalled(String)
    case configRejected(output: String)
    case notRunning(pidFile: String, reason: String)
    case reloadFailed(String)
    case notServing(expected: Int, seen: String)
    case notServingCertificate(listen: String, expected: String, seen: String)

    public var description: String {
        switch self {
        case .notInstalled(let binary):
            "nginx binary \"\(binary)\" not found; install nginx (apt-get install nginx) or set nginx.binary in the config"
        case .configRejected(let output):
            "nginx -t rejected the new config, so nginx was not reloaded and keeps serving as before:\n\(output)"
        case .notRunning(let pidFile, let reason):
            "nginx is not running (\(pidFile): \(reason)); start it (systemctl start nginx) or set nginx.pid_file in the config"
        case .reloadFailed(let reason): "nginx reload failed: \(reason)"
        case .notServing(let expected, let seen):
            "nginx does not serve generation \(expected) yet: \(seen) (if this persists, the reload failed: another program may hold the listen address, see nginx's error log)"
        case .notServingCertificate(let listen, let expected, let seen):
            "nginx's HTTPS listener \(listen) does not present certificate \(expected)… after the reload (seen: \(seen)); the previous server block is back. Another program may hold the address: see nginx's error log"
        }
    }
}
