import AsyncHTTPClient
import CloudflareDNS
import DNSPlanning
import Foundation
import NIOCore
import Logging
import Notify
import PeerTestKit
import Testing

/// The real Cloudflare client and notification backends against the test kit's stand-ins, over HTTP.
@Suite(.serialized, .timeLimit(.minutes(6))) struct CloudflareClientTests {
    static let token = "test-token-abcdef"

    /// Runs a stub while `body` runs, with a client for it.
    func withStub(
        zone: String = "example.test", token: String = Self.token,
        _ body: @Sendable (CloudflareStub, CloudflareClient, Int) async throws -> Void
    ) async throws {
        let stub = CloudflareStub(token: Self.token, zone: "example.test")
        try await stub.serving { port in
            var logger = Logger(label: "test")
            logger.logLevel = .critical
            let client = CloudflareClient(
                settings: .init(baseURL: "http://127.0.0.1:\(port)/client/v4", zone: zone, attempts: 3, requestTimeout: .seconds(2)),
                token: token, http: TestBed.http, logger: logger)
            try await body(stub, client, port)
        }
    }

    /// A token made from the "Edit zone DNS" template (DNS Edit, no Zone Read) cannot look the zone up by name;
    /// with `dns.zone_id` it needs not.
    @Test func aTokenWithDNSEditAloneWorksWithTheZoneID() async throws {
        try await withStub { stub, client, port in
            stub.withoutZoneRead()
            stub.seed(name: "shop.example.test", content: "203.0.113.1")
            let error = await #expect(throws: CloudflareClient.Failure.self) { _ = try await client.records(name: "shop.example.test") }
            #expect(error?.description.contains("dns.zone_id") == true, "\(String(describing: error))")
            var logger = Logger(label: "test")
            logger.logLevel = .critical
            let direct = CloudflareClient(
                settings: .init(baseURL: "http://127.0.0.1:\(port)/client/v4", zone: "example.test", zoneID: stub.zoneID), token: Self.token,
                http: TestBed.http, logger: logger)
            let calls = stub.calls
            let listed = try await direct.records(name: "shop.example.test")
            #expect(listed.map(\.content) == ["203.0.113.1"])
            #expect(stub.calls == calls + 1, "no zone lookup, only the listing")
        }
    }

    @Test func listsPagesAndAppliesOneBatch() async throws {
        try await withStub { stub, client, _ in
            try await client.verifyToken()
            for i in 1...150 { stub.seed(name: "shop.example.test", content: "203.0.113.\(i % 250)") }
            stub.seed(type: "A", name: "other.example.test", content: "198.51.100.1")
            let records = try await client.records(name: "shop.example.test")
            #expect(records.count == 150)  // two pages of 100
            let calls = stub.calls
            let batch = DNSBatch(
                deletes: Array(records.prefix(148)), guarded: (records[149], "web-9"),
                creates: [.init(member: "web-10", address: "192.0.2.10"), .init(member: "web-11", address: "2001:db8::10")])
            let created = try await client.apply(batch, name: "shop.example.test", term: 7)
            #expect(stub.calls == calls + 1, "one call for the whole batch")
            #expect(Set(created.map(\.type)) == ["A", "AAAA"])
            #expect(created.map(\.comment) == ["managed by peer · node web-10 · term 7", "managed by peer · node web-11 · term 7"])
            #expect(created.allSatisfy { $0.proxied == true })
            #expect(stub.records.filter { $0.name == "shop.example.test" }.count == 4)
            #expect(stub.records.first { $0.id == records[149].id }?.comment == "managed by peer · node web-9 · term 7", "the guard is patched")
            #expect(stub.records.contains { $0.name == "other.example.test" })
            #expect(stub.mutations.last?.term == 7)
        }
    }

    /// The provider runs a batch as one transaction: when the record it keeps (and patches) is gone — deleted by
    /// hand, or by a late write — the whole batch is refused and nothing is deleted, whatever the caller's cache
    /// said. That is what keeps a leader planning from a stale cache from taking the name to zero records.
    @Test func aBatchWhoseGuardRecordIsGoneDeletesNothing() async throws {
        try await withStub { stub, client, _ in
            stub.seed(name: "shop.example.test", content: "192.0.2.1")
            stub.seed(name: "shop.example.test", content: "192.0.2.2")
            let cached = try await client.records(name: "shop.example.test")
            stub.handDelete(name: "shop.example.test", content: "192.0.2.2")
            let doomed = cached.first { $0.content == "192.0.2.1" }!
            let kept = cached.first { $0.content == "192.0.2.2" }!
            let error = await #expect(throws: CloudflareClient.Failure.self) {
                _ = try await client.apply(DNSBatch(deletes: [doomed], guarded: (kept, "b")), name: "shop.example.test", term: 3)
            }
            #expect(error?.description.contains("81044") == true, "\(String(describing: error))")
            #expect(stub.records.map(\.content) == ["192.0.2.1"], "nothing was deleted: the name keeps its last record")
        }
    }

    /// A fenced write is tried once, and not at all when its deadline leaves less than the minimum write time;
    /// a batch the provider commits after the client gave up still lands (the stand-in models that late commit).
    @Test func aFencedWriteIsSentOnceBeforeItsDeadlineAndMayStillLandLate() async throws {
        try await withStub { stub, client, _ in
            let soon = NIODeadline.now() + .milliseconds(100)
            await #expect(throws: CloudflareClient.NotSent.self) {
                _ = try await client.apply(
                    DNSBatch(creates: [.init(member: "a", address: "192.0.2.1")]), name: "shop.example.test", term: 1, deadline: soon)
            }
            #expect(stub.mutations.isEmpty && stub.calls <= 1, "nothing sent")
            stub.setCommitLatency(.milliseconds(900))
            let calls = stub.calls
            await #expect(throws: CloudflareClient.Failure.self) {
                _ = try await client.apply(
                    DNSBatch(creates: [.init(member: "a", address: "192.0.2.1")]), name: "shop.example.test", term: 1,
                    deadline: NIODeadline.now() + .milliseconds(500))
            }
            #expect(await TestBed.eventually(within: .seconds(3)) { stub.records.count == 1 }, "committed after the client gave up")
            #expect(stub.calls == calls + 1, "tried once: a fenced write is never retried")
        }
    }

    @Test func aWrongTokenOrAMissingZoneIsAClearError() async throws {
        try await withStub(token: "wrong") { _, client, _ in
            let error = await #expect(throws: CloudflareClient.Failure.self) { try await client.verifyToken() }
            #expect(error?.description.contains("9109 Invalid access token") == true)
            #expect(error?.description.contains("wrong") == false, "the token never appears in errors")
        }
        try await withStub(zone: "nope.test") { _, client, _ in
            let error = await #expect(throws: CloudflareClient.Failure.self) { _ = try await client.records(name: "shop.nope.test") }
            #expect(error?.description.contains("zone nope.test does not exist") == true)
        }
    }

    @Test func retriesServerErrorsAndBacksOffOn429() async throws {
        try await withStub { stub, client, _ in
            stub.fail(2, status: 503)
            #expect(try await client.records(name: "shop.example.test").isEmpty)  // third try works
            stub.fail(5, status: 429, retryAfter: 1)
            let error = await #expect(throws: CloudflareClient.Failure.self) { _ = try await client.records(name: "shop.example.test") }
            #expect(error?.status == 429)
            // Blocked locally for the Retry-After: the next call does not even reach the API.
            let calls = stub.calls
            _ = try? await client.records(name: "shop.example.test")
            #expect(stub.calls == calls)
            // Once the Retry-After has passed (and not before), calls reach the API again.
            let blockedAt = ContinuousClock.now
            stub.fail(0, status: 0)
            var reached = false
            while !reached, ContinuousClock.now - blockedAt < .seconds(5) {
                _ = try? await client.records(name: "shop.example.test")
                reached = stub.calls > calls
                if !reached { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(reached)
            #expect(ContinuousClock.now - blockedAt >= .milliseconds(900), "calls were blocked for the Retry-After")
        }
    }

    @Test func everyBackendSpeaksItsServicesShape() async throws {
        try await withStub { stub, _, port in
            let base = "http://127.0.0.1:\(port)/notify"
            let notice = Notice(
                kind: .nodeRemoved, title: "web-2 removed from shop.example.test", body: "web-2 (203.0.113.2) is down <b>.", key: "k1")
            let backends: [any Notifier] = [
                Ntfy(server: base + "/ntfy", topic: "peer-test", token: "tk_secret"),
                Pushover(endpoint: base + "/pushover/1/messages.json", token: "apptoken", user: "userkey"),
                SlackWebhook(url: base + "/slack/T1/B2/xyz"),
                DiscordWebhook(url: base + "/discord/api/v10/webhooks/1/tok"),
            ]
            for backend in backends { try await backend.send(notice, http: TestBed.http) }
            let got = Dictionary(grouping: stub.notifications, by: \.backend)
            #expect(got["ntfy"]?.first?.headers["priority"] == "5")
            #expect(got["ntfy"]?.first?.headers["authorization"] == "Bearer tk_secret")
            #expect(got["pushover"]?.first?.body.contains("priority=1") == true)
            #expect(got["slack"]?.first?.body.contains("&lt;b&gt;") == true)
            #expect(got["discord"]?.first?.body.contains("allowed_mentions") == true)
            // A backend that is down fails on its own, with a reason.
            let down = Ntfy(server: "http://127.0.0.1:1", topic: "x", token: nil)
            await #expect(throws: NotifyFailure.self) { try await down.send(notice, http: TestBed.http) }
        }
    }

    @Test func theDispatcherSendsEachKeyOnceAndNothingWithoutTheLease() async throws {
        try await withStub { stub, _, port in
            let leads = LeadFlag()
            var logger = Logger(label: "test")
            logger.logLevel = .critical
            let dispatcher = NoticeDispatcher(
                backends: [
                    Ntfy(server: "http://127.0.0.1:\(port)/notify/ntfy", topic: "t", token: nil),
                    Ntfy(server: "http://127.0.0.1:1", topic: "down", token: nil),
                ],
                http: TestBed.http, logger: logger, fence: { await leads.value })
            let running = Task { await dispatcher.run() }
            await leads.set(true)
            for _ in 0..<3 { await dispatcher.post(Notice(kind: .leaderChanged, title: "n1 leads", body: "", key: "leader/1")) }
            #expect(await TestBed.eventually(within: .seconds(5)) { stub.notifications.count == 1 })
            await leads.set(false)
            await dispatcher.post(Notice(kind: .leaderChanged, title: "n1 leads", body: "", key: "leader/2"))
            // Everything queued is taken and every delivery has ended once run() returns.
            await dispatcher.finish()
            await running.value
            #expect(await dispatcher.handled == 2, "the three posts of one key are one notice")
            #expect(stub.notifications.count == 1, "a node without the lease sends nothing")
        }
    }
}

actor LeadFlag {
    var value = false
    func set(_ v: Bool) { value = v }
}
