import PeerConfiguration
import AsyncHTTPClient
import CloudflareDNS
import Cluster
import DNSPlanning
import Foundation
import Logging
import Notify
import PeerCore
import ServiceLifecycle

/// Runs on every node; acts only while this node holds the lease. Keeps the app's A/AAAA records equal to the
/// members that serve (``DNSPlanner``), with one `/batch` call per change set, and tells the operator.
///
/// Fencing: the lease is checked right before each write, and the write must finish while the lease still
/// holds (its deadline is the lease's remaining time minus a margin); a node that cannot promise that does
/// not write.
actor DNSService: Service {
    nonisolated let settings: PeerConfig.DNS
    nonisolated let client: CloudflareClient
    nonisolated let cluster: Published<ClusterState>
    nonisolated let notices: NoticeDispatcher?
    nonisolated let logger: Logger
    nonisolated let clock: any PeerClock
    private var planner: DNSPlanner
    /// What the provider holds, as of the last list or our last successful write.
    private var records: [DNSRecord]?
    private var fetchedAt: Instant?
    private var lastSignature: [String]?
    private var tokenVerified = false
    /// When a member held down will have served long enough to get its record back.
    private var heldDownUntil: Instant?
    public private(set) var writes = 0

    /// Minimum lease left to start a write; the write's own timeout is kept under it.
    static let writeWindow = Duration.milliseconds(900)

    init(
        settings: PeerConfig.DNS, token: String, http: HTTPClient, cluster: Published<ClusterState>, notices: NoticeDispatcher?,
        clock: any PeerClock = EventLoopClock(), logger: Logger
    ) {
        self.settings = settings
        self.client = CloudflareClient(
            settings: .init(baseURL: settings.apiBase, zone: settings.zone, proxied: settings.proxied, ttl: settings.ttl),
            token: token, http: http, logger: logger)
        self.cluster = cluster
        self.notices = notices
        self.clock = clock
        self.logger = logger
        self.planner = DNSPlanner(holdDown: settings.holdDown)
    }

    public func run() async throws {
        let wakeup = Wakeup()
        cluster.watch(wakeup) { old, new in old.members != new.members || old.lease.holding?.term != new.lease.holding?.term }
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await self.step()
                // Woken when a member's state or the leadership changes; otherwise it looks again when a held-down
                // member's time is up, and at least every second (start-up grace, the periodic list of records).
                let now = self.clock.now()
                let next = min(await self.heldDownUntil ?? now + .seconds(1), now + .seconds(1))
                await wakeup.wait(atMost: next - now, clock: self.clock)
            }
        }
    }

    private func step() async {
        // A node that just started does not know the others' state yet: it would take their records for
        // strangers. It writes nothing until its view has had the start-up grace to fill in.
        guard cluster.current.settled(now: clock.now(), margin: .seconds(1)) else { return }
        guard cluster.current.fence(now: clock.now(), atLeast: Self.writeWindow) != nil else {
            // Not the leader: forget what we knew; a new term starts from a fresh list.
            records = nil
            lastSignature = nil
            heldDownUntil = nil
            return
        }
        if !tokenVerified {
            do {
                try await measured("verify") { try await client.verifyToken() }
                tokenVerified = true
                logger.info("Cloudflare token verified", metadata: ["dns.zone": "\(settings.zone)", "dns.name": "\(settings.name)"])
            } catch {
                await alert(
                    "Cloudflare token rejected", "\(error). DNS failover is off until a valid token (DNS Write, Zone Read) is configured.",
                    key: "dns-token/\(error)")
                try? await clock.sleep(for: .seconds(30))
                return
            }
        }
        // A suspect still serves: only a death (which a live member cannot fail to refute) removes a record.
        let members = cluster.current.appMembers.compactMap { m in
            m.app.address.map { DNSMember(name: m.id.name, address: $0, serving: m.status != .dead && m.app.healthy == true) }
        }
        let signature = members.map { "\($0.name)=\($0.address)/\($0.serving)" }.sorted()
        let now = clock.now()
        let stale = fetchedAt.map { now - $0 > settings.refresh } ?? true
        if signature == lastSignature, !stale, let records {
            let plan = planner.plan(members: members, records: records, name: settings.name, now: now)
            heldDownUntil = plan.heldDownUntil
            if plan.changes.isEmpty { return }
        }
        do {
            if records == nil || stale {
                records = try await measured("list") { try await client.records(name: settings.name) }
                fetchedAt = now
            }
            lastSignature = signature
            let plan = planner.plan(members: members, records: records!, name: settings.name, now: now)
            heldDownUntil = plan.heldDownUntil
            if plan.failOpen {
                await alert(
                    "No node is healthy: keeping every DNS record",
                    "Every node of \(settings.name) is down or unhealthy; peer keeps the records as they are (fail open) rather than remove them all.",
                    key: "all-unhealthy/\(signature.joined(separator: ","))")
            }
            guard !plan.changes.isEmpty else { return }
            // Fence: still the leader, with time to finish the write under this term.
            guard let fence = cluster.current.fence(now: clock.now(), atLeast: Self.writeWindow) else { return }
            let deadline = fence.remaining - .milliseconds(300)
            let created = try await measured("batch") { try await client.apply(plan.changes, name: settings.name, deadline: deadline) }
            writes += 1
            let deleted = Set(plan.changes.deletes.map(\.id))
            records = records!.filter { !deleted.contains($0.id) } + created
            let byAddress = Dictionary(members.map { ($0.address, $0.name) }, uniquingKeysWith: { a, _ in a })
            for record in plan.changes.deletes {
                let who = byAddress[record.content] ?? record.content
                logger.info(
                    "DNS record removed",
                    metadata: [
                        "dns.name": "\(settings.name)", "dns.content": "\(record.content)", "member.name": "\(who)", "lease.term": "\(fence.term)",
                    ])
                await notices?.post(
                    Notice(
                        kind: .nodeRemoved, title: "\(who) removed from \(settings.name)",
                        body: "\(who) (\(record.content)) is down or unhealthy; its DNS record was removed.",
                        key: "removed/\(record.content)/\(record.id)"))
            }
            for address in plan.changes.creates {
                let who = byAddress[address] ?? address
                logger.info(
                    "DNS record added",
                    metadata: ["dns.name": "\(settings.name)", "dns.content": "\(address)", "member.name": "\(who)", "lease.term": "\(fence.term)"])
                await notices?.post(
                    Notice(
                        kind: .nodeRestored, title: "\(who) back in \(settings.name)",
                        body: "\(who) (\(address)) serves again; its DNS record is back.",
                        key: "restored/\(address)/\(created.first { $0.content == address }?.id ?? "")"))
            }
        } catch {
            records = nil  // list again next time
            logger.warning("DNS reconcile failed", metadata: ["error": "\(error)", "dns.name": "\(settings.name)"])
            await alert("DNS update failed", "\(error)", key: "dns-error/\(error)")
            try? await clock.sleep(for: .seconds(1))
        }
    }

    private func alert(_ title: String, _ body: String, key: String) async {
        logger.error("\(title)", metadata: ["detail": "\(body)"])
        await notices?.post(Notice(kind: title.hasPrefix("No node") ? .allUnhealthy : .dnsError, title: title, body: body, key: key))
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
