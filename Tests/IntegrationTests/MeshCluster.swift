import Control
import Foundation
import PeerDaemon
import PeerTestKit
import Testing

/// Three real peerd processes, each with its own nginx and the test app in dockerd, in one mesh with real
/// certificates; DNS at the Cloudflare stub, notifications to the stub's ntfy and Discord endpoints.
struct MeshCluster {
    static let zone = "example.test"
    static let name = "shop.example.test"
    static let token = "cf-test-token-0123456789"

    let nodes: [TestNode]
    let peers: [PeerdProcess]
    let pki: String

    var names: [String] { nodes.map(\.name) }

    func peer(_ name: String) -> PeerdProcess { peers[names.firstIndex(of: name)!] }

    func who(_ peer: PeerdProcess) -> ControlAPI.Who? {
        guard let r = try? peer.peerctl(["who", "--json"]), r.status == 0 else { return nil }
        return try? ControlAPI.decoder.decode(ControlAPI.Who.self, from: Data(r.output.utf8))
    }

    func tearDown() {
        for p in peers { p.kill() }
        for n in nodes { n.tearDown() }
        try? FileManager.default.removeItem(atPath: pki)
    }

    /// The ntfy notifications the stub received of these kinds (`node-removed`, `all-unhealthy`, …).
    static func notices(_ stub: CloudflareStub, kinds: Set<String>) -> [CloudflareStub.Notification] {
        stub.notifications.filter { notice in
            notice.backend == "ntfy"
                && notice.headers.contains {
                    $0.key.lowercased() == "tags" && !kinds.isDisjoint(with: $0.value.split(separator: ",").map(String.init))
                }
        }
    }

    /// Writes certificates with `peerctl`, appends mesh, dns and notify sections to each node's config, starts
    /// nginx and peerd on each and deploys v1 everywhere.
    /// `tokens`: a Cloudflare token per node by index (default: the stub's); `environment`: added to each peerd's.
    static func start(
        stubPort: Int, count: Int = 3, witness: Bool = false, extraNginx: [String] = [], tokens: [Int: String] = [:],
        environment: [String: String] = [:], extraConfig: String = ""
    ) async throws -> MeshCluster {
        let nodes = try (0..<count).map { _ in try TestNode(extraNginx: extraNginx) }
        let witnessName = witness ? nodes[2].name : nil
        let pki = NSTemporaryDirectory() + "peer-failover-pki-\(getpid())-\(UUID().uuidString.prefix(8))"
        let peerctl = PeerdProcess.binDirectory + "/peerctl"
        try? FileManager.default.removeItem(atPath: pki)
        #expect(try Shell.run(peerctl, ["ca", "init", "--dir", pki, "--cluster", "failover-test"]).status == 0)
        for node in nodes {
            let issued = try Shell.run(peerctl, ["cert", "issue", "--dir", pki, node.name, "--address", node.address])
            #expect(issued.status == 0, "\(issued.output)")
        }
        for index in nodes.indices {
            try (tokens[index] ?? MeshCluster.token).write(toFile: pki + "/cf-token-\(index)", atomically: true, encoding: .utf8)
            chmod(pki + "/cf-token-\(index)", 0o600)
        }
        let members = nodes.map { $0.meshMember + ($0.name == witnessName ? "\n      role: witness" : "") }.joined(separator: "\n")
        for (index, node) in nodes.enumerated() {
            if node.name == witnessName {
                // A witness's whole config: who it is, where it keeps state, and the mesh. No app, no nginx.
                try """
                node:
                  name: \(node.name)
                  address: \(node.address)
                state_dir: \(node.directory)/state
                control:
                  socket: \(node.directory)/run/peerd.sock
                """.write(toFile: node.configPath, atomically: true, encoding: .utf8)
            }
            try node.appendToConfig(
                node.meshSection(pki: pki, members: members) + """
                    dns:
                      api_base: http://127.0.0.1:\(stubPort)/client/v4
                      zone: \(MeshCluster.zone)
                      name: \(MeshCluster.name)
                      token_file: \(pki)/cf-token-\(index)
                      hold_down: 2s
                    notify:
                      ntfy:
                        server: http://127.0.0.1:\(stubPort)/notify/ntfy
                        topic: peer-failover-test
                      discord:
                        url: http://127.0.0.1:\(stubPort)/notify/discord/api/v10/webhooks/123/secret-token
                    \(extraConfig)
                    """)
            chmod(node.configPath, 0o600)  // it now holds a webhook URL, which is a secret
        }
        var peers: [PeerdProcess] = []
        for node in nodes {
            if node.name != witnessName { try node.startNginx() }
            let peer = PeerdProcess(node: node, environment: environment)
            try await peer.start()
            peers.append(peer)
        }
        // One deploy, on any node, rolls across all of them.
        let deployed = try peers[0].peerctl(["deploy", TestBed.image("v1")])
        #expect(deployed.status == 0, "\(deployed.output)")
        return MeshCluster(nodes: nodes, peers: peers, pki: pki)
    }
}
