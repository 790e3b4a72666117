import Cluster
import Logging
import PeerCore
import ServiceLifecycle

/// Checks the app on this node every second and announces its health, image and deploys (debounced: one slow
/// answer is not an outage, ``AppHealthDebounce``). A node behind the cluster's last finished rollout (back from
/// a crash during one) announces itself unhealthy until it caught up, so it stays out of DNS.
struct AppAnnouncer: Service {
    let engine: NodeEngine
    let rollouts: RolloutService?
    let announcements: Published<Announcement>
    let clock: any PeerClock
    let logger: Logger

    func run() async throws {
        try await cancelWhenGracefulShutdown { try await loop() }
    }

    private func loop() async throws {
        var debounce = AppHealthDebounce()
        while !Task.isCancelled {
            let observed = await check()
            let announced = announcements.current.app
            let next = debounce.next(observed: observed, announced: announced)
            if next != announced {
                logger.info(
                    "app state changed",
                    metadata: ["app.healthy": "\(next.healthy.map { "\($0)" } ?? "-")", "app.image": "\(next.image ?? "-")"])
                announcements.update { $0.app = next }
            }
            try await clock.sleep(for: .seconds(1))
        }
    }

    private func check() async -> AppReport {
        let check = await engine.appCheck()
        let deploys = await engine.deploys()
        let behind = await rollouts?.isBehind() ?? false
        return AppReport(
            healthy: check.healthy && !behind, image: check.image,
            runningDeploy: deploys.running.map { DeployMark(id: $0.id, kind: "deploy", image: $0.image, state: "running") },
            lastDeploy: deploys.last.map { DeployMark(id: $0.id, kind: $0.kind, image: $0.image, state: $0.state, reason: $0.reason) })
    }
}
