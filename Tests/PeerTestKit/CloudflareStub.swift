import Foundation
import HTTPTypes
import Logging
import Hummingbird
import NIOCore
import NIOFoundationCompat
import NIOConcurrencyHelpers

/// A local stand-in for the Cloudflare API v4 subset peer uses, following the official schema
/// (../shared/specs/cloudflare-dns.md): the envelope (`success`, `errors`, `messages`, `result`, `result_info`),
/// Bearer auth with error 9109/10000, `GET /user/tokens/verify`, `GET /zones?name=`, paginated
/// `GET /zones/{id}/dns_records` (`name`, `type`, `page`, `per_page`), `POST` create, `DELETE`, and
/// `POST …/dns_records/batch` (deletes, patches, puts, posts, in that order, all or nothing). It can answer 429
/// with `Retry-After`, or 500, on demand. Every mutation is recorded with its time, so tests check invariants
/// ("never zero records", "one call per change set") on what really reached the API.
///
/// It also records notification requests (ntfy, Pushover, Slack, Discord shapes) under `/notify/…`.
public final class CloudflareStub: Sendable {
    public struct Record: Codable, Sendable, Hashable {
        public var id: String
        public var type: String
        public var name: String
        public var content: String
        public var proxied: Bool
        public var ttl: Int
        public var comment: String?
    }

    public struct Mutation: Sendable {
        public var at: Date
        /// "create", "delete", "batch"
        public var call: String
        public var deleted: [Record]
        public var created: [Record]
        /// Records of the zone right after the call.
        public var after: [Record]
        /// The highest leader's term named in the comments this call wrote (`managed by peer · … · term N`).
        public var term: UInt64?
    }

    public struct Notification: Sendable {
        public var at: Date
        public var backend: String
        public var path: String
        public var headers: [String: String]
        public var body: String
    }

    struct State {
        var records: [Record] = []
        var mutations: [Mutation] = []
        var calls = 0
        var failNext: [(status: Int, retryAfter: Int?)] = []
        var notifications: [Notification] = []
        var nextID = 1
        /// How long a batch takes to commit after it arrives (the answer comes after the commit).
        var commitLatency: Duration = .zero
        /// Whether the token may list zones (Zone Read): without it, `GET /zones` finds none.
        var zoneRead = true
    }

    public let token: String
    public let zoneName: String
    public let zoneID = "023e105f4ecef8ad9ca31a8372d0c353"
    private let state = NIOLockedValueBox(State())

    public init(token: String, zone: String) {
        self.token = token
        self.zoneName = zone
    }

    // MARK: - Test controls

    public var records: [Record] { state.withLockedValue { $0.records } }
    public var mutations: [Mutation] { state.withLockedValue { $0.mutations } }
    public var calls: Int { state.withLockedValue { $0.calls } }
    /// A token with DNS Edit but not Zone Read: it sees no zone when it lists them.
    public func withoutZoneRead() { state.withLockedValue { $0.zoneRead = false } }
    public var notifications: [Notification] { state.withLockedValue { $0.notifications } }

    public func seed(type: String = "A", name: String, content: String, comment: String? = nil) {
        state.withLockedValue { s in
            s.records.append(Record(id: Self.id(s.nextID), type: type, name: name, content: content, proxied: true, ttl: 1, comment: comment))
            s.nextID += 1
        }
    }

    /// A hand edit, as in the dashboard: the records of `name` pointing at `content` are deleted.
    public func handDelete(name: String, content: String) {
        state.withLockedValue { s in
            let gone = s.records.filter { $0.name == name && $0.content == content }
            s.records.removeAll { $0.name == name && $0.content == content }
            s.mutations.append(Mutation(at: Date(), call: "hand-delete", deleted: gone, created: [], after: s.records))
        }
    }

    /// Batches commit `latency` after they arrive — later than a client that gave up on them expects.
    public func setCommitLatency(_ latency: Duration) { state.withLockedValue { $0.commitLatency = latency } }

    /// The next `count` API calls answer `status` (429 with `Retry-After: retryAfter`).
    public func fail(_ count: Int, status: Int, retryAfter: Int? = nil) {
        state.withLockedValue { s in s.failNext += Array(repeating: (status, retryAfter), count: count) }
    }

    static func id(_ n: Int) -> String {
        let hex = String(n, radix: 16)
        return String(repeating: "0", count: 32 - hex.count) + hex
    }

    // MARK: - Server

    /// Serves on a free port of 127.0.0.1 while `body` runs (it gets the port), then stops.
    public func serving<T: Sendable>(_ body: @Sendable (Int) async throws -> T) async throws -> T {
        let bound = AsyncStream<Int>.makeStream()
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.run(onBound: { bound.continuation.yield($0) }) }
            defer { group.cancelAll() }
            var ports = bound.stream.makeAsyncIterator()
            guard let port = await ports.next() else { throw TestBed.NotReady(description: "the Cloudflare stub did not start") }
            return try await body(port)
        }
    }

    /// Serves on `host:port` (0: any free port) until cancelled; `onBound` gets the port.
    public func run(host: String = "127.0.0.1", port: Int = 0, onBound: @escaping @Sendable (Int) async -> Void) async throws {
        let router = Router()
        router.get("/client/v4/user/tokens/verify") { request, _ in
            try self.api(request) { _ in
                .ok(["id": "f267e341f3dd4697bd3b9f71dd96247f", "status": "active"])
            }
        }
        router.get("/client/v4/zones") { request, _ in
            try self.api(request) { s in
                let name = request.uri.queryParameters["name"].map(String.init)
                let zones: [[String: String]] =
                    s.zoneRead && (name == nil || name == self.zoneName)
                    ? [["id": self.zoneID, "name": self.zoneName, "status": "active"]] : []
                return .list(zones, page: 1, perPage: 20, total: zones.count)
            }
        }
        router.get("/client/v4/zones/:zone/dns_records") { request, context in
            try self.api(request, zone: context.parameters.get("zone")) { s in
                let q = request.uri.queryParameters
                var matching = s.records
                if let name = q["name"] { matching = matching.filter { $0.name.lowercased() == String(name).lowercased() } }
                if let type = q["type"] { matching = matching.filter { $0.type == String(type) } }
                let perPage = max(1, Int(q["per_page"].map(String.init) ?? "100") ?? 100)
                let page = max(1, Int(q["page"].map(String.init) ?? "1") ?? 1)
                let slice = Array(matching.dropFirst((page - 1) * perPage).prefix(perPage))
                return .list(slice, page: page, perPage: perPage, total: matching.count)
            }
        }
        router.post("/client/v4/zones/:zone/dns_records") { request, context in
            let body = try await request.body.collect(upTo: 1 << 20)
            return try self.api(request, zone: context.parameters.get("zone")) { s in
                guard let new = try? JSONDecoder().decode(NewRecord.self, from: Data(buffer: body)) else {
                    return .error(400, 9005, "Content for A record is invalid.")
                }
                let record = Self.make(new, in: &s)
                if let failure = Self.validate([record]) { return failure }
                if s.records.contains(where: { $0.type == record.type && $0.name == record.name && $0.content == record.content }) {
                    return .error(400, 81058, "An identical record already exists.")
                }
                s.records.append(record)
                s.mutations.append(Mutation(at: Date(), call: "create", deleted: [], created: [record], after: s.records))
                return .ok(record)
            }
        }
        router.delete("/client/v4/zones/:zone/dns_records/:id") { request, context in
            try self.api(request, zone: context.parameters.get("zone")) { s in
                let id = context.parameters.get("id") ?? ""
                guard let index = s.records.firstIndex(where: { $0.id == id }) else { return .error(404, 81044, "Record does not exist.") }
                let gone = s.records.remove(at: index)
                s.mutations.append(Mutation(at: Date(), call: "delete", deleted: [gone], created: [], after: s.records))
                return .ok(["id": id])
            }
        }
        router.post("/client/v4/zones/:zone/dns_records/batch") { request, context in
            let body = try await request.body.collect(upTo: 1 << 20)
            // Committed after the latency whether or not the client still waits (a late commit).
            let latency = self.state.withLockedValue { $0.commitLatency }
            if latency > .zero { try? await Task.sleep(for: latency) }
            return try self.api(request, zone: context.parameters.get("zone")) { s in
                guard let batch = try? JSONDecoder().decode(Batch.self, from: Data(buffer: body)) else {
                    return .error(400, 1004, "DNS Validation Error")
                }
                // All or nothing: work on a copy. Order: deletes, patches, puts, posts.
                var records = s.records
                var deleted: [Record] = []
                for d in batch.deletes ?? [] {
                    guard let index = records.firstIndex(where: { $0.id == d.id }) else { return .error(404, 81044, "Record does not exist.") }
                    deleted.append(records.remove(at: index))
                }
                var patched: [Record] = []
                for patch in batch.patches ?? [] {
                    guard let id = patch.id, let index = records.firstIndex(where: { $0.id == id }) else {
                        return .error(404, 81044, "Record does not exist.")
                    }
                    if let content = patch.content { records[index].content = content }
                    if let comment = patch.comment { records[index].comment = comment }
                    if let proxied = patch.proxied { records[index].proxied = proxied }
                    if let ttl = patch.ttl { records[index].ttl = ttl }
                    patched.append(records[index])
                }
                if !(batch.puts ?? []).isEmpty { return .error(400, 1004, "puts are not used by peer; this stub refuses them") }
                var created: [Record] = []
                var scratch = s
                for post in batch.posts ?? [] {
                    let record = Self.make(post, in: &scratch)
                    if records.contains(where: { $0.type == record.type && $0.name == record.name && $0.content == record.content }) {
                        return .error(400, 81058, "An identical record already exists.")
                    }
                    records.append(record)
                    created.append(record)
                }
                if let failure = Self.validate(created) { return failure }
                s.nextID = scratch.nextID
                s.records = records
                let terms = (patched + created).compactMap { Self.term(inComment: $0.comment) }
                s.mutations.append(Mutation(at: Date(), call: "batch", deleted: deleted, created: created, after: records, term: terms.max()))
                return .ok(BatchResult(deletes: deleted, patches: patched, puts: [], posts: created))
            }
        }
        // For scripts (chaos): the field's faults at the provider.
        router.post("/_stub/commit-latency") { request, _ in
            let ms = Int(request.uri.queryParameters["ms"].map(String.init) ?? "0") ?? 0
            self.setCommitLatency(.milliseconds(ms))
            return Response(status: .noContent)
        }
        router.post("/_stub/hand-delete") { request, _ in
            let q = request.uri.queryParameters
            self.handDelete(name: q["name"].map(String.init) ?? "", content: q["content"].map(String.init) ?? "")
            return Response(status: .noContent)
        }
        // For scripts (the benchmarks, the demo): everything the stub holds and saw, as JSON.
        router.get("/_stub/state") { _, _ in
            let state = self.state.withLockedValue { s in
                StubState(
                    records: s.records, calls: s.calls,
                    mutations: s.mutations.map {
                        .init(
                            at: $0.at.timeIntervalSince1970, call: $0.call, deleted: $0.deleted, created: $0.created, after: $0.after, term: $0.term)
                    },
                    notifications: s.notifications.map {
                        .init(at: $0.at.timeIntervalSince1970, backend: $0.backend, title: $0.headers["title"] ?? "", body: $0.body)
                    })
            }
            return Response(
                status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: try JSONEncoder().encode(state))))
        }
        // Notification backends.
        router.post("/notify/ntfy/:topic") { request, context in
            try await self.record(request, backend: "ntfy", path: "/\(context.parameters.get("topic") ?? "")")
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: "{\"id\":\"sPs71M8A2T\",\"event\":\"message\"}")))
        }
        router.post("/notify/pushover/1/messages.json") { request, _ in
            let body = try await self.record(request, backend: "pushover", path: "/1/messages.json")
            let fields = Dictionary(
                body.split(separator: "&").map { pair -> (String, String) in
                    let kv = pair.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? String($0) }
                    return (kv[0], kv.count > 1 ? kv[1] : "")
                }, uniquingKeysWith: { $1 })
            var errors: [String] = []
            for required in ["token", "user", "message"] where (fields[required] ?? "").isEmpty { errors.append("\(required) is missing") }
            if fields["priority"] == "2", fields["retry"] == nil || fields["expire"] == nil {
                errors.append("expire must be supplied with priority=2")
            }
            let json =
                errors.isEmpty
                ? "{\"status\":1,\"request\":\"5042853c-402d-4a18-abcb-168734a801de\"}" : "{\"status\":0,\"errors\":\(errors),\"request\":\"x\"}"
            return Response(
                status: errors.isEmpty ? .ok : .badRequest, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: json)))
        }
        router.post("/notify/slack/:a/:b/:c") { request, _ in
            let body = try await self.record(request, backend: "slack", path: "/services")
            let ok = (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])?["text"] is String
            return Response(status: ok ? .ok : .badRequest, body: .init(byteBuffer: ByteBuffer(string: ok ? "ok" : "no_text")))
        }
        router.post("/notify/discord/api/v10/webhooks/:id/:token") { request, _ in
            let body = try await self.record(request, backend: "discord", path: "/webhooks")
            let content = (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])?["content"] as? String
            guard let content, !content.isEmpty, content.count <= 2000 else {
                return Response(
                    status: .badRequest, body: .init(byteBuffer: ByteBuffer(string: "{\"message\":\"Cannot send an empty message\",\"code\":50006}")))
            }
            return Response(status: .noContent)
        }

        var logger = Logger(label: "cloudflare-stub")
        logger.logLevel = .critical
        let app = Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: "cloudflare-stub"),
            onServerRunning: { channel in await onBound(channel.localAddress?.port ?? port) }, logger: logger)
        try await app.runService()
    }

    @discardableResult
    private func record(_ request: Request, backend: String, path: String) async throws -> String {
        let body = String(buffer: try await request.body.collect(upTo: 1 << 20))
        var headers: [String: String] = [:]
        for field in request.headers { headers[field.name.canonicalName.lowercased()] = field.value }
        state.withLockedValue { $0.notifications.append(Notification(at: Date(), backend: backend, path: path, headers: headers, body: body)) }
        return body
    }

    enum Answer {
        case ok(any Encodable)
        case list(any Encodable, page: Int, perPage: Int, total: Int)
        case error(Int, Int, String)
    }

    private func api(_ request: Request, zone: String? = nil, _ handle: (inout State) -> Answer) throws -> Response {
        let answer: Answer = state.withLockedValue { s in
            s.calls += 1
            if !s.failNext.isEmpty {
                let failure = s.failNext.removeFirst()
                return failure.status == 429
                    ? .error(429, 10000, "Rate limited. Please wait and consider throttling your request speed")
                    : .error(failure.status, 10001, "service temporarily unavailable")
            }
            guard let auth = request.headers[.authorization], auth.hasPrefix("Bearer ") else {
                return .error(400, 6003, "Invalid request headers")
            }
            guard auth == "Bearer \(token)" else { return .error(403, 9109, "Invalid access token") }
            if let zone, zone != zoneID { return .error(404, 7003, "Could not route to /zones/\(zone), perhaps your object identifier is invalid?") }
            return handle(&s)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        var headers: HTTPFields = [.contentType: "application/json"]
        headers[HTTPField.Name("Ratelimit")!] = "\"default\";r=1199;t=300"
        let status: Int
        let body: Data
        switch answer {
        case .ok(let result):
            status = 200
            body = try encoder.encode(SuccessEnvelope(result: AnyEncodable(result), result_info: nil))
        case .list(let result, let page, let perPage, let total):
            status = 200
            let info = ResultInfo(
                count: min(perPage, max(0, total - (page - 1) * perPage)), page: page, per_page: perPage, total_count: total,
                total_pages: max(1, (total + perPage - 1) / perPage))
            body = try encoder.encode(SuccessEnvelope(result: AnyEncodable(result), result_info: info))
        case .error(let code, let cfCode, let message):
            status = code
            if code == 429 { headers[.retryAfter] = "\(state.withLockedValue { _ in 1 })" }
            body = try encoder.encode(FailureEnvelope(errors: [Message(code: cfCode, message: message)]))
        }
        return Response(status: .init(code: status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// `managed by peer · node web-1 · term 7` → 7.
    static func term(inComment comment: String?) -> UInt64? {
        guard let comment, let range = comment.range(of: "term ") else { return nil }
        return UInt64(comment[range.upperBound...].prefix { $0.isNumber })
    }

    private static func make(_ new: NewRecord, in s: inout State) -> Record {
        defer { s.nextID += 1 }
        return Record(
            id: id(s.nextID), type: new.type, name: new.name, content: new.content ?? "", proxied: new.proxied ?? false, ttl: new.ttl ?? 1,
            comment: new.comment)
    }

    private static func validate(_ records: [Record]) -> Answer? {
        for r in records {
            switch r.type {
            case "A" where r.content.split(separator: ".").count != 4 || r.content.contains(":"):
                return .error(400, 9005, "Content for A record is invalid. Must be a valid IPv4 address")
            case "AAAA" where !r.content.contains(":"):
                return .error(400, 9005, "Content for AAAA record is invalid. Must be a valid IPv6 address")
            case "A", "AAAA": break
            default: return .error(400, 1004, "this stub only keeps A and AAAA records")
            }
            if r.ttl != 1 && !(60...86400).contains(r.ttl) {
                return .error(400, 9021, "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic")
            }
        }
        return nil
    }
}
