import AsyncHTTPClient
import CloudflareDNS
import DNSPlanning
import Foundation
import Logging
import Notify
import PeerTestKit
import Testing

/// The real Cloudflare client and notification backends against the test kit's stand-ins, over HTTP.
@Suite(.serialized) struct CloudflareClientTests {
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

    @Test func listsPagesAndAppliesOneBatch() async throws {
        try await withStub { stub, client, _ in
            try await client.verifyToken()
            for i in 1...150 { stub.seed(name: "shop.example.test", content: "203.0.113.\(i % 250)") }
            stub.seed(type: "A", name: "other.example.test", content: "198.51.100.1")
            let records = try await client.records(name: "shop.example.test")
            #expect(records.count == 150)  // two pages of 100
            let calls = stub.calls
            let created = try await client.apply(
                DNSChangeSet(deletes: Array(records.prefix(149)), creates: ["192.0.2.10", "2001:db8::10"]), name: "shop.example.test")
            #expect(stub.calls == calls + 1, "one call for the whole change set")
            #expect(Set(created.map(\.type)) == ["A", "AAAA"])
            #expect(created.allSatisfy { $0.comment == DNSPlanner.comment && $0.proxied == true })
            #expect(stub.records.filter { $0.name == "shop.example.test" }.count == 3)
            #expect(stub.records.contains { $0.name == "other.example.test" })
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
            try await Task.sleep(for: .milliseconds(1100))
            stub.fail(0, status: 0)
            _ = try? await client.records(name: "shop.example.test")
            #expect(stub.calls > calls)
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
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await dispatcher.run() }
                defer { group.cancelAll() }
                await leads.set(true)
                for _ in 0..<3 { await dispatcher.post(Notice(kind: .leaderChanged, title: "n1 leads", body: "", key: "leader/1")) }
                try await Task.sleep(for: .milliseconds(500))
                #expect(stub.notifications.count == 1)
                await leads.set(false)
                await dispatcher.post(Notice(kind: .leaderChanged, title: "n1 leads", body: "", key: "leader/2"))
                try await Task.sleep(for: .milliseconds(500))
                #expect(stub.notifications.count == 1, "a node without the lease sends nothing")
                await dispatcher.finish()
            }
        }
    }
}

actor LeadFlag {
    var value = false
    func set(_ v: Bool) { value = v }
}
