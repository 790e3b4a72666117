import Cluster
import Deployment
import Foundation
import Leadership
import Membership
@testable import PKI
@testable import PeerDaemon
import PeerCore

/// The values behind the golden fixtures in `Fixtures/`: files written by peerd of the version before the mesh
/// became a pure `MeshNode` (and what that version sent on the wire). A rolling upgrade mixes old and new nodes in one
/// mesh, and a new peerd starts on the files an old one left: what those bytes meant must not change.
enum GoldenValues {
    static let date = Date(timeIntervalSince1970: 1_795_000_000)

    static let intent: RolloutIntent = {
        var intent = RolloutIntent(
            id: "d-7f3a", seq: 4, kind: .deploy, image: "registry.example.com/shop:v2", previousImage: "registry.example.com/shop:v1",
            order: ["web-1", "web-2", "web-3"], requestedBy: "operator ci", settleMs: 2000, nodeTimeoutMs: 120_000)
        intent.olderImage = "registry.example.com/shop:v0"
        intent.parallel = 2
        intent.skipDown = true
        return intent
    }()

    static let report = RolloutReport(intent: "d-7f3a", phase: .swapping, reason: "health check")

    static let app: AppStatus = {
        var app = AppStatus(
            healthy: true, image: "registry.example.com/shop:v2", address: "203.0.113.10",
            runningDeploy: DeployMark(id: "d-1", kind: "deploy", image: "registry.example.com/shop:v2", state: "running"),
            lastDeploy: DeployMark(id: "d-0", kind: "rollback", image: "registry.example.com/shop:v1", state: "failed", reason: "unhealthy"),
            certificateDaysLeft: 200)
        app.rollout = intent
        app.rolloutReport = report
        app.origin = OriginMark(fingerprint: "0123456789abcdef", setAt: 1_795_000_000_123, notAfter: 1_900_000_000)
        return app
    }()

    static let sender = ClusterState.Member(id: MemberID("web-1"), address: "10.0.0.1:7946", incarnation: 3, status: .alive, app: app)
    static let suspect = ClusterState.Member(
        id: MemberID("web-2"), address: "10.0.0.2:7946", incarnation: 9, status: .suspect, app: .none, suspectedBy: MemberID("web-3"))

    static let envelopes: [MeshNode.Swim.Envelope] = [
        MeshNode.Swim.Envelope(sender: sender, message: .ping(seq: 17), gossip: [suspect]),
        MeshNode.Swim.Envelope(sender: sender, message: .pingRequest(seq: 18, target: MemberID("web-2")), gossip: []),
        MeshNode.Swim.Envelope(sender: sender, message: .ack(seq: 19, target: MemberID("web-3")), gossip: [sender, suspect]),
    ]

    static let leaseMessages: [Lease.Message] = [
        .request(term: 12, attempt: 2),
        .grant(term: 12, attempt: 2),
        .reject(term: 12, attempt: 2, promised: 13, holder: MemberID("web-3")),
        .reject(term: 12, attempt: 3, promised: 13, holder: nil),
        .release(term: 12),
    ]

    static let nodeState: NodeState = {
        var state = NodeState()
        state.current = AppInstance(
            generation: 7, image: "registry.example.com/shop:v2", containerID: String(repeating: "ab", count: 32),
            containerName: "peer-app-7", hostPort: 20107)
        state.previousImage = "registry.example.com/shop:v1"
        state.nextGeneration = 8
        state.inProgress = .init(id: "d-2", image: "registry.example.com/shop:v3", generation: 8, startedAt: date)
        state.history = [
            DeployRecord(
                id: "d-1", kind: .deploy, image: "registry.example.com/shop:v2", previousImage: "registry.example.com/shop:v1",
                generation: 7, result: .succeeded, reason: nil, evidence: nil, warnings: ["slow start"], startedAt: date,
                servingAfterMs: 2100, durationMs: 3400, steps: [.init(step: "pull", ms: 800, status: "done")])
        ]
        return state
    }()

    static let originInfo = OriginCertificateInfo(
        fingerprint: String(repeating: "0123456789abcdef", count: 4), names: ["shop.example.com", "*.shop.example.com"],
        issuer: "CloudFlare Origin SSL Certificate Authority", notValidBefore: date, notValidAfter: date.addingTimeInterval(86_400 * 365))
    static let originSetAt: Int64 = 1_795_000_000_123
    static let originPair = OriginPair(certificatePEM: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", keyPEM: "(key)")
}
