import AsyncHTTPClient
import CloudflareDNS
import Cluster
import DNSPlanning
import Foundation
import Leadership
import Logging
import NIOCore
import Notify
import PeerConfiguration
import PeerCore
import ServiceLifecycle

/// The shell around the ``DNSReconciler``: runs on every node, acts only while this node holds the lease. It
/// feeds the reconciler the published cluster state, carries out its directives one at a time (Cloudflare calls,
/// a lease confirmation, a step-down) and reports their outcomes back. How writes are fenced is the reconciler's
/// (and docs/architecture.md's, "DNS writes").
actor DNSService: Service {
    nonisolated let settings: PeerConfig.DNS
    nonisolated let client: CloudflareClient
    nonisolated let cluster: Published<ClusterState>
    nonisolated let lease: Published<LeaseRequests>
    nonisolated let notices: NoticeDispatcher?
    nonisolated let logger: Logger
    nonisolated let clock: any PeerClock
    /// Test-only: while the file `<this>.<node name>` exists, a write waits after its lease confirmation, before its
    /// last check (a real-process test stops the leader there). Set only by the tests, through the environment.
    nonisolated let holdBeforeWrite: String?
    private var reconciler: DNSReconciler

    init(
        settings: PeerConfig.DNS, token: String, http: HTTPClient, cluster: Published<ClusterState>, lease: Published<LeaseRequests>,
        leaseSettings: LeaseSettings = .standard, notices: NoticeDispatcher?, clock: any PeerClock, logger: Logger,
        holdBeforeWrite: String? = ProcessInfo.processInfo.environment["PEER_TEST_HOLD_BEFORE_DNS_WRITE"]
    ) {
        self.settings = settings
        self.client = CloudflareClient(
            settings: .init(baseURL: settings.apiBase, zone: settings.zone, proxied: settings.proxied, ttl: settings.ttl, zoneID: settings.zoneID),
            token: token, http: http, logger: logger)
        self.cluster = cluster
        self.lease = lease
        self.notices = notices
        self.clock = clock
        self.logger = logger
        self.holdBeforeWrite = holdBeforeWrite
        var reconciler = DNSReconciler.Settings(name: settings.name, holdDown: settings.holdDown, refresh: settings.refresh)
        reconciler.minimumWrite = client.settings.minimumWrite
        // The voters' answer takes a lease round trip: as long as the lease allows for one (wan: 3 s).
        reconciler.confirmTimeout = max(reconciler.confirmTimeout, leaseSettings.requestTimeout)
        self.reconciler = DNSReconciler(settings: reconciler)
    }

    func run() async throws {
        let wakeup = Wakeup()
        // Members and the leadership; this node's own lease too (a confirmation's answer), which only changes
        // while this node leads.
        cluster.watch(wakeup) { old, new in old.members != new.members || old.lease.holding != new.lease.holding }
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await self.step()
                let now = self.clock.now()
                let next = min(await self.reconciler.nextWake(now: now) ?? now + .seconds(1), now + .seconds(1))
                await wakeup.wait(atMost: max(next - now, .milliseconds(10)), clock: self.clock)
            }
        }
    }

    /// Steps the reconciler and carries out what it asks, until it waits for a change.
    private func step() async {
        var directives = reconciler.step(view(), now: clock.now())
        while !directives.isEmpty {
            var next: [DNSReconciler.Directive] = []
            for directive in directives { next += await carryOut(directive) }
            next += reconciler.step(view(), now: clock.now())
            directives = next
        }
    }

    private func view() -> DNSReconciler.View { cluster.current.dnsView(now: clock.now()) }

    private func carryOut(_ directive: DNSReconciler.Directive) async -> [DNSReconciler.Directive] {
        switch directive {
        case .verifyToken:
            do {
                try await measured("verify") { try await client.verifyToken() }
                logger.info("Cloudflare token verified", metadata: ["dns.zone": "\(settings.zone)", "dns.name": "\(settings.name)"])
                return reconciler.tokenChecked(nil, now: clock.now())
            } catch {
                return reconciler.tokenChecked("\(error)", now: clock.now())
            }
        case .list:
            do {
                let records = try await measured("list") { try await client.records(name: settings.name) }
                return reconciler.listed(records, now: clock.now())
            } catch {
                return reconciler.listFailed("\(error)", incapacity: Self.isIncapacity(error), now: clock.now())
            }
        case .confirmLease:
            lease.update { $0.confirmations += 1 }
            return []
        case .write(let batch, let term, let deadline):
            return await write(batch, term: term, deadline: deadline)
        case .stepDown(let until, let reason):
            logger.error("stepping down: this node cannot do the leader's DNS work", metadata: ["reason": "\(reason)"])
            lease.update { $0.stepDown = .init(id: ($0.stepDown?.id ?? 0) + 1, until: until, reason: reason) }
            return []
        case .notice(let notice):
            await tell(notice)
            return []
        }
    }

    private func write(_ batch: DNSBatch, term: UInt64, deadline: Instant) async -> [DNSReconciler.Directive] {
        if let holdBeforeWrite, case let hold = "\(holdBeforeWrite).\(cluster.current.me.name)", FileManager.default.fileExists(atPath: hold) {
            logger.info("test hook: DNS write held before its last check", metadata: ["lease.term": "\(term)"])
            while FileManager.default.fileExists(atPath: hold) { try? await clock.sleep(for: .milliseconds(20)) }
        }
        // The last check on this side (the client checks once more as the request leaves): the lease this write
        // was confirmed under still holds, with time for the write before its deadline.
        let now = clock.now()
        guard cluster.current.lease.validTerm(now: now) == term, deadline - now > client.settings.minimumWrite else {
            return reconciler.writeFailed("not sent: the lease no longer leaves time for the write", incapacity: false, now: now)
        }
        do {
            let created = try await measured("batch") {
                // NIO's deadline runs on CLOCK_MONOTONIC, which NTP may slew by up to 8.3 %: the time left on the raw
                // clock is shortened by that much before it becomes one.
                let left = Int64(Double((deadline - now).nanoseconds) / 1.09)
                return try await client.apply(batch, name: settings.name, term: term, deadline: NIODeadline.now() + .nanoseconds(left))
            }
            return reconciler.written(created: created, now: clock.now())
        } catch {
            return reconciler.writeFailed("\(error)", incapacity: Self.isIncapacity(error), now: clock.now())
        }
    }

    /// Failures that say this node cannot write (no way out, a token refused to it), as opposed to a refusal for
    /// cause (a guard record gone, a record that already exists), a write not sent, or a failure of the provider.
    static func isIncapacity(_ error: any Error) -> Bool {
        if error is CloudflareClient.NotSent { return false }
        guard let failure = error as? CloudflareClient.Failure, let status = failure.status else { return true }
        // Cloudflare down (5xx) or throttling (429) meets every node alike: stepping down would only leave the
        // cluster without a leader.
        return status == 401 || status == 403
    }

    private func tell(_ notice: DNSReconciler.Notice) async {
        let name = settings.name
        switch notice {
        case .failOpen(let members):
            await alert(
                .allUnhealthy, "No node is healthy: keeping every DNS record",
                "Every node of \(name) is down or unhealthy; peer keeps the records as they are (fail open) rather than remove them all.",
                key: "all-unhealthy/\(members.joined(separator: ","))")
        case .removed(let member, let record, let term):
            logger.info(
                "DNS record removed",
                metadata: ["dns.name": "\(name)", "dns.content": "\(record.content)", "member.name": "\(member)", "lease.term": "\(term)"])
            // Taken out of the cluster (peerctl node remove, or made a witness): planned, nobody to wake.
            let retired = cluster.current.configuration?.withoutApp.contains { $0.id.name == member } == true
            await notices?.post(
                Notice(
                    kind: retired ? .memberRetired : .nodeRemoved, title: "\(member) removed from \(name)",
                    body: retired
                        ? "\(member) (\(record.content)) no longer serves the app in the cluster's configuration; its DNS record was removed."
                        : "\(member) (\(record.content)) is down or unhealthy; its DNS record was removed.",
                    key: "removed/\(record.content)/\(record.id)"))
        case .restored(let member, let record, let term):
            logger.info(
                "DNS record added",
                metadata: ["dns.name": "\(name)", "dns.content": "\(record.content)", "member.name": "\(member)", "lease.term": "\(term)"])
            await notices?.post(
                Notice(
                    kind: .nodeRestored, title: "\(member) back in \(name)",
                    body: "\(member) (\(record.content)) serves again; its DNS record is back.",
                    key: "restored/\(record.content)/\(record.id)"))
        case .writeFailed(let failure):
            logger.warning("DNS reconcile failed", metadata: ["error": "\(failure)", "dns.name": "\(name)"])
            await alert(.dnsError, "DNS update failed", failure, key: "dns-error/\(failure)")
        case .tokenRejected(let failure):
            await alert(
                .dnsError, "Cloudflare token rejected",
                "\(failure). DNS failover is off on this node until a valid token (DNS Write, Zone Read) is configured.", key: "dns-token/\(failure)")
        case .steppedDown(let reason, let standDown):
            let me = cluster.current.me.name
            await alert(
                .dnsError, "\(me) stepped down as leader",
                "\(reason). Another node takes over; \(me) does not campaign for \(standDown).", key: "step-down/\(me)/\(clock.now())")
        }
    }

    private func alert(_ kind: Notice.Kind, _ title: String, _ body: String, key: String) async {
        logger.error("\(title)", metadata: ["detail": "\(body)"])
        await notices?.post(Notice(kind: kind, title: title, body: body, key: key))
    }
}

extension DNSService {
    /// Counts one API call and its outcome (peer_dns_api_calls_total).
    func measured<T>(_ call: String, _ body: () async throws -> T) async throws -> T {
        do {
            let result = try await body()
            PeerMetrics.dnsCall(call, error: nil)
            return result
        } catch {
            PeerMetrics.dnsCall(call, error: error)
            throw error
        }
    }
}
