import AsyncHTTPClient
import Metrics
import Foundation
import Logging
import NIOCore
import NIOFoundationCompat

/// Something the operator should hear about, from the leader.
public struct Notice: Sendable, Hashable, Codable {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        case nodeRemoved = "node-removed"
        case nodeRestored = "node-restored"
        case leaderChanged = "leader-changed"
        case deployStarted = "deploy-started"
        case deployFinished = "deploy-finished"
        case deployFailed = "deploy-failed"
        case deployRolledBack = "deploy-rolled-back"
        case certificateExpiring = "certificate-expiring"
        case configurationBehind = "configuration-behind"
        /// A member taken out of the cluster's configuration lost its DNS record (planned: not urgent).
        case memberRetired = "member-retired"
        case allUnhealthy = "all-unhealthy"
        case dnsError = "dns-error"
    }

    public var kind: Kind
    public var title: String
    public var body: String
    /// Identifies one occurrence: the same key is sent once (e.g. `node-removed/web-2/term-7/inc-12`).
    public var key: String

    public init(kind: Kind, title: String, body: String, key: String) {
        self.kind = kind
        self.title = title
        self.body = body
        self.key = key
    }

    /// Wakes someone up: losing capacity, failing deploys, serving from unhealthy nodes.
    public var urgent: Bool {
        switch kind {
        case .nodeRemoved, .deployFailed, .deployRolledBack, .allUnhealthy, .dnsError: true
        default: false
        }
    }
}

/// A notification backend (see ../shared/specs/notifications.md).
public protocol Notifier: Sendable {
    var name: String { get }
    func send(_ notice: Notice, http: HTTPClient) async throws
}

public struct NotifyFailure: Error, CustomStringConvertible, Sendable {
    public var description: String
    /// 4xx other than 429: retrying will not help.
    public var permanent: Bool
}

/// ntfy: `POST {server}/{topic}`, body = text, `Title`, `Priority` (1–5), `Tags`; optional bearer token.
public struct Ntfy: Notifier {
    public var server: String
    public var topic: String
    public var token: String?
    public var name: String { "ntfy" }

    public init(server: String = "https://ntfy.sh", topic: String, token: String?) {
        self.server = server
        self.topic = topic
        self.token = token
    }

    public func send(_ notice: Notice, http: HTTPClient) async throws {
        var request = HTTPClientRequest(url: server.trimmingSuffix("/") + "/" + topic)
        request.method = .POST
        request.headers.add(name: "Title", value: Self.ascii(notice.title))
        request.headers.add(name: "Priority", value: notice.urgent ? "5" : "3")
        request.headers.add(name: "Tags", value: notice.urgent ? "rotating_light,\(notice.kind.rawValue)" : notice.kind.rawValue)
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        request.body = .bytes(ByteBuffer(string: notice.body))
        try await post(request, http: http, backend: name)
    }

    /// Header values must be ASCII; ntfy accepts RFC 2047 for the rest.
    static func ascii(_ s: String) -> String {
        s.allSatisfy(\.isASCII) ? s : "=?UTF-8?B?\(Data(s.utf8).base64EncodedString())?="
    }
}

/// Pushover: form-encoded `POST /1/messages.json` with token, user, title, message, priority (1 for urgent:
/// bypasses quiet hours; never 2, which would need acknowledgement).
public struct Pushover: Notifier {
    public var endpoint: String
    public var token: String
    public var user: String
    public var name: String { "pushover" }

    public init(endpoint: String = "https://api.pushover.net/1/messages.json", token: String, user: String) {
        self.endpoint = endpoint
        self.token = token
        self.user = user
    }

    public func send(_ notice: Notice, http: HTTPClient) async throws {
        var request = HTTPClientRequest(url: endpoint)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        let fields = [
            ("token", token), ("user", user), ("title", String(notice.title.prefix(250))), ("message", String(notice.body.prefix(1024))),
            ("priority", notice.urgent ? "1" : "0"),
        ]
        request.body = .bytes(ByteBuffer(string: fields.map { "\($0)=\(Self.formEncode($1))" }.joined(separator: "&")))
        try await post(request, http: http, backend: name)
    }

    static func formEncode(_ s: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return (s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s)
    }
}

/// Slack incoming webhook: `{"text": …}`, answered `ok`.
public struct SlackWebhook: Notifier {
    public var url: String
    public var name: String { "slack" }
    public init(url: String) { self.url = url }

    public func send(_ notice: Notice, http: HTTPClient) async throws {
        let text = "*\(Self.escape(notice.title))*\n\(Self.escape(notice.body))"
        try await postJSON(["text": text], to: url, http: http, backend: name)
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}

/// Discord webhook: `{"content": …, "allowed_mentions": {"parse": []}}` (≤ 2,000 characters), answered 204.
public struct DiscordWebhook: Notifier {
    public var url: String
    public var name: String { "discord" }
    public init(url: String) { self.url = url }

    public func send(_ notice: Notice, http: HTTPClient) async throws {
        let content = String("**\(notice.title)**\n\(notice.body)".prefix(2000))
        try await postJSON(["content": content, "allowed_mentions": ["parse": [String]()]], to: url, http: http, backend: name)
    }
}

/// A webhook call: `body` as JSON, POSTed to `url`.
func postJSON(_ body: [String: Any], to url: String, http: HTTPClient, backend: String) async throws {
    var request = HTTPClientRequest(url: url)
    request.method = .POST
    request.headers.add(name: "Content-Type", value: "application/json")
    request.body = .bytes(ByteBuffer(data: try JSONSerialization.data(withJSONObject: body)))
    try await post(request, http: http, backend: backend)
}

func post(_ request: HTTPClientRequest, http: HTTPClient, backend: String) async throws {
    let response: HTTPClientResponse
    do {
        response = try await http.execute(request, timeout: .seconds(10))
    } catch {
        throw NotifyFailure(description: "\(backend): \(error)", permanent: false)
    }
    let body = try? await response.body.collect(upTo: 64 * 1024)
    let status = Int(response.status.code)
    guard (200..<300).contains(status) else {
        let text = body.map { String(buffer: $0).prefix(200) } ?? ""
        throw NotifyFailure(description: "\(backend) answered \(status): \(text)", permanent: status != 429 && status < 500)
    }
}

extension String {
    func trimmingSuffix(_ suffix: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) : self
    }
}

/// Sends notices to every backend without ever blocking the caller: ``post(_:)`` queues and returns. Each key
/// is sent once; each backend gets three tries with back-off; a failing backend delays only itself. `fence`
/// is asked right before each send: a node that no longer leads sends nothing.
public actor NoticeDispatcher {
    public struct Sent: Sendable, Hashable {
        public var backend: String
        public var key: String
    }

    nonisolated let backends: [any Notifier]
    nonisolated let http: HTTPClient
    nonisolated let logger: Logger
    nonisolated let fence: @Sendable () async -> Bool
    private let stream: AsyncStream<Notice>
    private let continuation: AsyncStream<Notice>.Continuation
    private var seen: [String] = []
    private var seenSet: Set<String> = []
    public private(set) var sent: [Sent] = []
    public private(set) var failures = 0
    /// Notices taken from the queue so far: sent on to the backends, or dropped because this node does not lead.
    public private(set) var handled = 0

    public init(backends: [any Notifier], http: HTTPClient, logger: Logger, fence: @escaping @Sendable () async -> Bool) {
        self.backends = backends
        self.http = http
        self.logger = logger
        self.fence = fence
        (stream, continuation) = AsyncStream.makeStream(of: Notice.self, bufferingPolicy: .bufferingNewest(200))
    }

    /// Queues a notice unless its key was already queued.
    public func post(_ notice: Notice) {
        guard !seenSet.contains(notice.key) else { return }
        seenSet.insert(notice.key)
        seen.append(notice.key)
        if seen.count > 2000 {
            seenSet.remove(seen.removeFirst())
        }
        continuation.yield(notice)
    }

    /// Runs until cancelled.
    public func run() async {
        await withDiscardingTaskGroup { group in
            for await notice in stream {
                guard await fence() else {
                    logger.debug("notice dropped: this node does not lead", metadata: ["notice.key": "\(notice.key)"])
                    handled += 1
                    continue
                }
                for backend in backends {
                    group.addTask { await self.deliver(notice, to: backend) }
                }
                handled += 1
            }
        }
    }

    public func finish() { continuation.finish() }

    private func deliver(_ notice: Notice, to backend: any Notifier) async {
        var delay = Duration.seconds(1)
        for attempt in 1...3 {
            // Every attempt, not only the first: a node that lost the lease while it retried sends nothing more.
            if attempt > 1, await !fence() {
                logger.debug("notice dropped: this node no longer leads", metadata: ["notice.key": "\(notice.key)"])
                return
            }
            do {
                try await backend.send(notice, http: http)
                sent.append(Sent(backend: backend.name, key: notice.key))
                Counter(label: "peer_notifications_total", dimensions: [("backend", backend.name), ("result", "sent")]).increment()
                logger.info("notification sent", metadata: ["notify.backend": "\(backend.name)", "notice.kind": "\(notice.kind.rawValue)"])
                return
            } catch let error as NotifyFailure {
                failures += 1
                logger.warning(
                    "notification failed", metadata: ["notify.backend": "\(backend.name)", "error": "\(error)", "attempt": "\(attempt)"])
                if error.permanent {
                    Counter(label: "peer_notifications_total", dimensions: [("backend", backend.name), ("result", "failed")]).increment()
                    return
                }
            } catch {
                failures += 1
                logger.warning("notification failed", metadata: ["notify.backend": "\(backend.name)", "error": "\(error)"])
            }
            try? await Task.sleep(for: delay)
            delay *= 4
        }
        Counter(label: "peer_notifications_total", dimensions: [("backend", backend.name), ("result", "failed")]).increment()
    }
}
