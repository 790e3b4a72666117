import Deployment
import PeerConfiguration
import Foundation
import Cluster
import Logging
import PeerCore
import Metrics
import NIOCore
import Prometheus
import ServiceLifecycle

/// What peer counts, through swift-metrics (any backend; peerd bootstraps Prometheus). Names follow Prometheus
/// conventions; every series is documented in docs/operations.md.
public enum PeerMetrics {
    /// peerd's registry: `MetricsSystem` is bootstrapped with it once, in `peerd`.
    public static func bootstrap() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["peer_swap_duration_seconds"] = [0.5, 1, 2, 5, 10, 30, 60, 120, 300].map { .milliseconds(Int64($0 * 1000)) }
        factory.durationHistogramBuckets["peer_swap_serving_after_seconds"] = [0.25, 0.5, 1, 1.5, 2, 5, 10, 30, 60].map {
            .milliseconds(Int64($0 * 1000))
        }
        MetricsSystem.bootstrap(factory)
        return registry
    }

    /// A finished deploy, rollback or restore on this node.
    static func finished(_ record: DeployRecord) {
        Counter(label: "peer_deploys_total", dimensions: [("kind", record.kind.rawValue), ("result", record.result.rawValue)]).increment()
        Metrics.Timer(label: "peer_swap_duration_seconds", dimensions: [("result", record.result.rawValue)])
            .recordMilliseconds(record.durationMs)
        if let serving = record.servingAfterMs {
            Metrics.Timer(label: "peer_swap_serving_after_seconds").recordMilliseconds(serving)
        }
    }

    /// One call to the DNS provider's API.
    static func dnsCall(_ call: String, error: (any Error)?) {
        Counter(label: "peer_dns_api_calls_total", dimensions: [("call", call), ("result", error == nil ? "ok" : "error")]).increment()
    }
}

/// `GET /metrics` in Prometheus' text format on `metrics.listen` (loopback by default), and the gauges that are
/// read rather than counted (membership, RTTs, the lease), refreshed every 2 s.
struct MetricsService: Service {
    let registry: PrometheusCollectorRegistry
    let settings: PeerConfig.Metrics
    /// The mesh's published state and measurements; nil for a node without a mesh.
    let mesh: (cluster: Published<ClusterState>, stats: MeshStats)?
    let clock: any PeerClock
    let logger: Logger

    func run() async throws {
        var serverLogger = logger
        serverLogger[metadataKey: "peer.component"] = "metrics"
        let server = HTTPServer(address: .tcp(host: settings.host, port: settings.port), maxBodyBytes: 0, logger: serverLogger) { request in
            guard request.path == "/metrics" else {
                return HTTPServer.Response(
                    status: .notFound, contentType: "text/plain; charset=utf-8", body: .bytes(Array("only /metrics here\n".utf8)))
            }
            guard request.method == .GET || request.method == .HEAD else {
                return HTTPServer.Response(
                    status: .methodNotAllowed, contentType: "text/plain; charset=utf-8", body: .bytes(Array("GET /metrics\n".utf8)))
            }
            return HTTPServer.Response(contentType: "text/plain; version=0.0.4; charset=utf-8", body: .bytes(registry.emitToBuffer()))
        }
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask {
                do {
                    try await server.run()
                } catch {
                    // Metrics are for watching: a port in use must not stop failover or deploys.
                    logger.error(
                        "metrics endpoint not available", metadata: ["metrics.listen": "\(settings.host):\(settings.port)", "error": "\(error)"])
                }
            }
            group.addTask {
                try await cancelWhenGracefulShutdown { try await refresh() }
            }
        }
    }

    /// Membership and lease gauges, and the datagram counters (as deltas of the service's own counts).
    private func refresh() async throws {
        guard let mesh else { return }
        var last = MeshStats.Counters()
        while !Task.isCancelled {
            let state = mesh.cluster.current
            let measured = mesh.stats.current
            let time = clock.now()
            var counts = ["alive": 0, "suspect": 0, "dead": 0]
            for member in state.members {
                let name = member.id.name
                counts["\(member.status)", default: 0] += 1
                Gauge(label: "peer_member_status", dimensions: [("member", name)]).record(Double(member.status.rawValue))
                if let rtt = measured.rtt[member.id] {
                    Gauge(label: "peer_member_rtt_seconds", dimensions: [("member", name)]).record(Double(rtt.nanoseconds) / 1e9)
                }
                if let healthy = member.app.healthy {
                    Gauge(label: "peer_member_app_healthy", dimensions: [("member", name)]).record(healthy ? 1 : 0)
                }
            }
            for (state, count) in counts { Gauge(label: "peer_members", dimensions: [("state", state)]).record(count) }
            Gauge(label: "peer_leader").record(state.lease.validTerm(now: time) != nil ? 1 : 0)
            Gauge(label: "peer_lease_term").record(Double(state.lease.knownLeader(now: time)?.term ?? state.lease.promised))
            let now = measured.counters
            Counter(label: "peer_mesh_datagrams_sent_total").increment(by: now.datagramsSent - last.datagramsSent)
            Counter(label: "peer_mesh_datagrams_received_total").increment(by: now.datagramsReceived - last.datagramsReceived)
            Counter(label: "peer_mesh_datagrams_dropped_total").increment(by: now.datagramsDropped - last.datagramsDropped)
            Counter(label: "peer_mesh_datagrams_replayed_total").increment(by: now.datagramsReplayed - last.datagramsReplayed)
            for (reason, count) in [
                ("no_signature", now.claimsRefused.noSignature - last.claimsRefused.noSignature),
                ("bad_signature", now.claimsRefused.badSignature - last.claimsRefused.badSignature),
                ("certificate_not_seen", now.claimsRefused.certificateNotSeen - last.claimsRefused.certificateNotSeen),
            ] {
                Counter(label: "peer_mesh_claims_refused_total", dimensions: [("reason", reason)]).increment(by: count)
            }
            Counter(label: "peer_mesh_bytes_sent_total").increment(by: now.bytesSent - last.bytesSent)
            last = now
            // Cancelled on graceful shutdown: end the loop, do not throw (an error would stop the other services).
            try? await clock.sleep(for: .seconds(2))
        }
    }
}
