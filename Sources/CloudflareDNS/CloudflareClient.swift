import AsyncHTTPClient
import DNSPlanning
import Foundation
import Logging
import NIOCore
import NIOFoundationCompat
import NIOHTTP1

/// The Cloudflare API v4 calls peer needs (see ../shared/specs/cloudflare-dns.md): verify the token, find the
/// zone by name, list the records of a name (paginated), and apply a change set as one `/batch` call.
///
/// Retries 429 (honouring `Retry-After`), 5xx and timeouts with exponential back-off and jitter; keeps its own
/// request budget under Cloudflare's 1,200 requests per 5 minutes. The token is sent only in the
/// `Authorization` header and appears in no error or log line.
public actor CloudflareClient {
    public struct Settings: Sendable {
        public var baseURL: String
        public var zone: String
        /// `proxied` and `ttl` of the records peer creates.
        public var proxied: Bool
        public var ttl: Int
        public var attempts: Int
        public var requestTimeout: Duration
        /// Requests allowed per 5 minutes (Cloudflare allows 1,200; peer keeps a margin).
        public var budget: Int
        /// A fenced write is not sent with less time than this left before its deadline.
        public var minimumWrite: Duration
        /// The zone's id when the config gives it (`dns.zone_id`): no lookup by name, so a token with DNS Edit
        /// alone (without Zone Read) does.
        public var zoneID: String?

        public init(
            baseURL: String = "https://api.cloudflare.com/client/v4", zone: String, proxied: Bool = true, ttl: Int = 1,
            attempts: Int = 4, requestTimeout: Duration = .seconds(5), budget: Int = 1000, minimumWrite: Duration = .milliseconds(300),
            zoneID: String? = nil
        ) {
            self.zoneID = zoneID
            self.minimumWrite = minimumWrite
            self.baseURL = baseURL
            self.zone = zone
            self.proxied = proxied
            self.ttl = ttl
            self.attempts = attempts
            self.requestTimeout = requestTimeout
            self.budget = budget
        }
    }

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var status: Int?
        /// Cloudflare's error codes and messages, e.g. `9109 Invalid access token`.
        public var errors: [String]
        public var description: String {
            let what = errors.isEmpty ? "no error detail" : errors.joined(separator: "; ")
            return status.map { "Cloudflare API answered \($0): \(what)" } ?? "Cloudflare API: \(what)"
        }
    }

    /// A fenced write that was not sent (too little time left before its deadline).
    public struct NotSent: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    public nonisolated let settings: Settings
    private let token: String
    private let http: HTTPClient
    private let logger: Logger
    private var zoneID: String?
    private var sent: [ContinuousClock.Instant] = []
    private var blockedUntil: ContinuousClock.Instant?
    public private(set) var requests = 0

    public init(settings: Settings, token: String, http: HTTPClient, logger: Logger) {
        self.settings = settings
        self.token = token
        self.http = http
        self.logger = logger
        self.zoneID = settings.zoneID
    }

    // MARK: - Calls

    /// `GET /user/tokens/verify`: throws unless the token is active.
    public func verifyToken() async throws {
        let result: TokenStatus = try await call(.GET, "/user/tokens/verify")
        guard result.status == "active" else {
            throw Failure(status: nil, errors: ["the API token is \(result.status)"])
        }
    }

    /// The zone's id: from the config, or looked up once by name (`GET /zones?name=`, which needs Zone Read).
    public func zone() async throws -> String {
        if let zoneID { return zoneID }
        let zones: [Zone] = try await call(.GET, "/zones?name=\(escape(settings.zone))&per_page=50")
        guard let zone = zones.first(where: { $0.name.lowercased() == settings.zone.lowercased() }) else {
            throw Failure(
                status: nil,
                errors: [
                    "zone \(settings.zone) does not exist or the token cannot see it: looking a zone up by name needs Zone Read besides DNS Edit on it; or give its id as dns.zone_id (Cloudflare's zone overview shows it) and DNS Edit alone does"
                ])
        }
        zoneID = zone.id
        return zone.id
    }

    /// Every A and AAAA record of `name`, all pages.
    public func records(name: String) async throws -> [DNSRecord] {
        let zone = try await zone()
        var out: [DNSRecord] = []
        var page = 1
        while true {
            let (records, info): ([Record], ResultInfo?) = try await callPaged(
                .GET, "/zones/\(zone)/dns_records?name=\(escape(name))&per_page=100&page=\(page)")
            out += records.filter { $0.type == "A" || $0.type == "AAAA" }.map(\.plain)
            guard let info, !records.isEmpty else { break }
            if let pages = info.total_pages, page >= pages { break }
            if let total = info.total_count, let per = info.per_page, page * per >= total { break }
            page += 1
        }
        return out
    }

    /// One `POST /zones/{zone}/dns_records/batch` (the provider runs deletes, then patches, then posts, as one
    /// transaction). The guard record's comment is set to this write's, so the whole batch fails if it is gone;
    /// posts carry the comment too. Returns the records it created.
    ///
    /// `deadline`: the absolute instant by which the write must have been answered — fenced writes are tried once,
    /// and not at all when less than ``Settings/minimumWrite`` is left when the request is about to leave.
    public func apply(_ batch: DNSBatch, name: String, term: UInt64, deadline: NIODeadline? = nil) async throws -> [DNSRecord] {
        guard !batch.isEmpty else { return [] }
        let zone = try await zone()
        let body = Batch(
            deletes: batch.deletes.map { Batch.Delete(id: $0.id) },
            patches: batch.guarded.map { [Batch.Patch(id: $0.record.id, comment: DNSPlanner.comment(member: $0.member, term: term))] } ?? [],
            posts: batch.creates.map {
                NewRecord(
                    type: $0.address.contains(":") ? "AAAA" : "A", name: name, content: $0.address, ttl: settings.ttl,
                    proxied: settings.proxied, comment: DNSPlanner.comment(member: $0.member, term: term))
            })
        let result: BatchResult = try await call(.POST, "/zones/\(zone)/dns_records/batch", body: body, deadline: deadline)
        return (result.posts ?? []).map(\.plain)
    }

    // MARK: - Plumbing

    private func escape(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed.subtracting(CharacterSet(charactersIn: "&=+"))) ?? s
    }

    private func call<T: Decodable & Sendable>(
        _ method: HTTPMethod, _ path: String, body: (some Encodable & Sendable)? = Optional<Batch>.none, deadline: NIODeadline? = nil
    ) async throws -> T {
        try await callPaged(method, path, body: body, deadline: deadline).0
    }

    /// A call; retried (429, 5xx, timeouts) unless it has a `deadline`: a fenced write is tried once, since a retry
    /// could land after the lease is over.
    private func callPaged<T: Decodable & Sendable>(
        _ method: HTTPMethod, _ path: String, body: (some Encodable & Sendable)? = Optional<Batch>.none, deadline: NIODeadline? = nil
    ) async throws -> (T, ResultInfo?) {
        let retry = deadline == nil
        var attempt = 0
        var delay = Duration.milliseconds(250)
        while true {
            attempt += 1
            try await spend()
            var request = HTTPClientRequest(url: settings.baseURL + path)
            request.method = method
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            request.headers.add(name: "User-Agent", value: "peerd")
            if let body {
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(data: try JSONEncoder().encode(body)))
            }
            var until = NIODeadline.now() + .nanoseconds(settings.requestTimeout.nanoseconds)
            if let deadline {
                // The last look before the request leaves: nothing that can wait comes between it and the send.
                guard deadline - .nanoseconds(settings.minimumWrite.nanoseconds) > NIODeadline.now() else {
                    throw NotSent(description: "not sent: the lease no longer leaves time for the write")
                }
                until = min(until, deadline)
            }
            var retryAfter: Duration? = nil
            var failure = Failure(status: nil, errors: [])
            do {
                let response = try await http.execute(request, deadline: until)
                let data = Data(buffer: try await response.body.collect(upTo: 8 << 20))
                let status = Int(response.status.code)
                let envelope = try? JSONDecoder().decode(Envelope<T>.self, from: data)
                if (200..<300).contains(status), let envelope, envelope.success, let result = envelope.result {
                    return (result, envelope.result_info)
                }
                let errors = (try? JSONDecoder().decode(ErrorEnvelope.self, from: data))?.errors.map { "\($0.code) \($0.message)" } ?? []
                failure = Failure(status: status, errors: errors.isEmpty ? [String(decoding: data.prefix(200), as: UTF8.self)] : errors)
                if status == 429 {
                    let seconds = response.headers.first(name: "Retry-After").flatMap(Int.init) ?? 300
                    blockedUntil = .now + .seconds(seconds)
                    retryAfter = .seconds(seconds)
                } else if status >= 500 {
                    retryAfter = nil
                } else {
                    throw failure  // 4xx: permanent
                }
            } catch let error as Failure {
                throw error
            } catch {
                failure = Failure(status: nil, errors: ["\(method) \(path.split(separator: "?").first ?? ""): \(error)"])
                retryAfter = nil
            }
            guard retry, attempt < settings.attempts else { throw failure }
            let wait = retryAfter ?? (delay + .milliseconds(Int64.random(in: 0...delay.milliseconds)))
            // A long Retry-After is not slept through here: the caller's next reconcile finds the block.
            if wait > .seconds(10) { throw failure }
            logger.debug("Cloudflare API call failed; retrying", metadata: ["cloudflare.error": "\(failure)", "retry.in": "\(wait)"])
            try await Task.sleep(for: wait)
            delay *= 2
        }
    }

    /// The local budget (and any 429 block) before each request.
    private func spend() async throws {
        let now = ContinuousClock.now
        if let blockedUntil, now < blockedUntil {
            throw Failure(status: 429, errors: ["rate limited by Cloudflare for \(blockedUntil - now) more"])
        }
        sent = sent.filter { now - $0 < .seconds(300) }
        guard sent.count < settings.budget else {
            throw Failure(status: nil, errors: ["peer's own budget of \(settings.budget) requests per 5 minutes is spent"])
        }
        sent.append(now)
        requests += 1
    }

    // MARK: - Shapes (the official schema's fields that peer reads or writes)

    struct Envelope<T: Decodable>: Decodable {
        var success: Bool
        var result: T?
        var result_info: ResultInfo?
    }

    struct ErrorEnvelope: Decodable {
        struct Item: Decodable {
            var code: Int
            var message: String
        }
        var errors: [Item]
    }

    struct ResultInfo: Decodable, Sendable {
        var page: Int?
        var per_page: Int?
        var total_count: Int?
        var total_pages: Int?
    }

    struct TokenStatus: Decodable, Sendable {
        var id: String
        var status: String
    }

    struct Zone: Decodable, Sendable {
        var id: String
        var name: String
    }

    struct Record: Decodable, Sendable {
        var id: String
        var type: String
        var name: String
        var content: String
        var proxied: Bool?
        var ttl: Int?
        var comment: String?
        var plain: DNSRecord { DNSRecord(id: id, type: type, name: name, content: content, proxied: proxied, ttl: ttl, comment: comment) }
    }

    struct NewRecord: Codable, Sendable {
        var type: String
        var name: String
        var content: String
        var ttl: Int
        var proxied: Bool
        var comment: String
    }

    struct Batch: Encodable, Sendable {
        struct Delete: Encodable, Sendable { var id: String }
        struct Patch: Encodable, Sendable {
            var id: String
            var comment: String
        }
        var deletes: [Delete]
        var patches: [Patch]
        var posts: [NewRecord]
    }

    struct BatchResult: Decodable, Sendable {
        var deletes: [Record]?
        var posts: [Record]?
    }
}
