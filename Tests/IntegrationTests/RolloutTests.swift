import Control
import Deployment
import Foundation
import PeerDaemon
import PeerTestKit
import Testing

/// Cluster deploys with real peerd processes, nginx and dockerd, driven the way CI drives them: `peerctl`
/// processes started at the same moment, killed mid-deploy, re-attached with `--follow`; the leader killed
/// while it holds an accepted intent.
@Suite(.serialized, .timeLimit(.minutes(12))) struct RolloutTests {
    static let peerctl = PeerdProcess.binDirectory + "/peerctl"

    func serving(_ peer: PeerdProcess) -> String? {
        guard let r = try? peer.peerctl(["status", "--json"]), r.status == 0,
            let status = try? ControlAPI.decoder.decode(ControlAPI.NodeStatus.self, from: Data(r.output.utf8))
        else { return nil }
        return status.serving?.image
    }

    /// Every node's log lines about rollouts, for a failure's message.
    static func rolloutLog(_ cluster: MeshCluster) -> String {
        cluster.peers.map { peer in
            peer.node.name + ":\n" + peer.log().split(separator: "\n").filter { $0.contains("rollout") }.suffix(30).joined(separator: "\n")
        }.joined(separator: "\n")
    }

    func read(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

    /// `peerctl deploy IMAGE` (or other arguments) on `peer`'s node, in the background; output to `output`.
    func spawn(_ peer: PeerdProcess, _ arguments: [String], output: String) throws -> pid_t {
        try? FileManager.default.removeItem(atPath: output)
        return try Spawn.start(Self.peerctl, arguments + ["--config", peer.node.configPath], output: output)
    }

    /// A normal rollout touches no DNS record and sends no alert; two clients deploying different images at the
    /// same moment, ten times: the cluster always ends on one image, and a client exits 0 only if it is its
    /// own (the other is refused: exit 3).
    @Test func concurrentDeploysNeverMixAndOnlyTheWinnerSucceeds() async throws {
        try await TestBed.require()
        let stub = CloudflareStub(token: MeshCluster.token, zone: MeshCluster.zone)
        try await stub.serving { port in
            let cluster = try await MeshCluster.start(stubPort: port)
            defer { cluster.tearDown() }
            #expect(await TestBed.eventually(within: .seconds(20)) { stub.records.filter { $0.name == MeshCluster.name }.count == 3 })
            let deletesBefore = stub.mutations.flatMap(\.deleted).count
            // Before the first deploy everyone was unhealthy: the alerts of the start do not count.
            let alertsBefore = MeshCluster.notices(stub, kinds: ["node-removed", "all-unhealthy"]).count

            let normal = try cluster.peers[1].peerctl(["deploy", TestBed.image("v2")])
            #expect(normal.status == 0 && normal.output.contains("succeeded"), "\(normal.output)")
            #expect(cluster.peers.allSatisfy { serving($0) == TestBed.image("v2") })
            // Each node stayed in DNS during its own turn: no delete, no "removed", no "no node is healthy".
            #expect(stub.mutations.flatMap(\.deleted).count == deletesBefore, "\(stub.mutations)")
            #expect(MeshCluster.notices(stub, kinds: ["node-removed", "all-unhealthy"]).count == alertsBefore, "\(stub.notifications.map(\.body))")

            let dir = cluster.nodes[0].directory
            // 6 rounds in CI (each node starts one and races one, twice); PEER_ROLLOUT_ROUNDS for longer runs.
            let rounds = ProcessInfo.processInfo.environment["PEER_ROLLOUT_ROUNDS"].flatMap(Int.init) ?? 6
            for round in 0..<rounds {
                let images = round % 2 == 0 ? ["v3", "v1"] : ["v1", "v3"]
                let a = cluster.peers[round % 3]
                let b = cluster.peers[(round + 1) % 3]
                let pa = try spawn(a, ["deploy", TestBed.image(images[0])], output: "\(dir)/race-a.out")
                let pb = try spawn(b, ["deploy", TestBed.image(images[1])], output: "\(dir)/race-b.out")
                let (sa, sb) = (Spawn.wait(pa), Spawn.wait(pb))
                let (oa, ob) = (read("\(dir)/race-a.out"), read("\(dir)/race-b.out"))
                let served = Set(cluster.peers.compactMap(serving))
                #expect(served.count == 1, "round \(round): the cluster serves \(served)")
                // Exactly one was accepted and rolled out; the other was refused, naming the running one.
                #expect([sa, sb].sorted() == [0, 3], "round \(round): exits \(sa), \(sb)\n\(oa)\n\(ob)")
                if sa == 0 { #expect(served == [TestBed.image(images[0])], "round \(round): \(oa)") }
                if sb == 0 { #expect(served == [TestBed.image(images[1])], "round \(round): \(ob)") }
                #expect((sa == 3 ? oa : ob).contains("still rolling out"), "round \(round)\n\(oa)\n\(ob)")
            }
            #expect(stub.mutations.flatMap(\.deleted).count == deletesBefore, "rollouts without faults delete no record")
        }
    }

    /// A CI job killed mid-deploy re-attaches with `--follow` and gets the result of its own rollout; a rollout
    /// can be cancelled (the nodes it reached go back, the deploy exits 1); the leader killed while it holds an
    /// accepted intent: the rollout completes under the next leader.
    @Test func followCancelAndALeaderKilledMidRollout() async throws {
        try await TestBed.require()
        let stub = CloudflareStub(token: MeshCluster.token, zone: MeshCluster.zone)
        try await stub.serving { port in
            // A settle time long enough to cancel between two nodes' turns.
            let cluster = try await MeshCluster.start(stubPort: port, extraConfig: "rollout:\n  settle: 3s\n")
            defer { cluster.tearDown() }
            let dir = cluster.nodes[0].directory

            // Killed after "accepted"; --follow picks it up.
            let ci = try spawn(cluster.peers[2], ["deploy", TestBed.image("v2")], output: "\(dir)/ci.out")
            #expect(await TestBed.eventually(within: .seconds(20)) { read("\(dir)/ci.out").contains("accepted") }, "\(read("\(dir)/ci.out"))")
            kill(ci, SIGKILL)
            _ = Spawn.wait(ci)
            let id = read("\(dir)/ci.out").split(separator: " ").dropFirst().first.map(String.init) ?? "?"
            let followed = try cluster.peers[0].peerctl(["deploy", "--follow", id])
            #expect(followed.status == 0, "\(followed.output)\n\(read("\(dir)/ci.out"))\n\(Self.rolloutLog(cluster))")
            #expect(followed.output.contains("rollout \(id) succeeded"), "\(followed.output)")
            #expect(cluster.peers.allSatisfy { serving($0) == TestBed.image("v2") })
            // An ended rollout: its result at once.
            let again = try cluster.peers[1].peerctl(["deploy", "--follow"])
            #expect(again.status == 0 && again.output.contains("succeeded"), "\(again.output)")

            // Cancelled after the first node moved: everyone back on v2, the deploy exits 1, cancel exits 0.
            let order = cluster.names.sorted()
            let first = cluster.peer(order[0])
            let deploy = try spawn(cluster.peers[1], ["deploy", TestBed.image("v3")], output: "\(dir)/cancelled.out")
            #expect(await TestBed.eventually(within: .seconds(60)) { serving(first) == TestBed.image("v3") })
            let cancel = try cluster.peers[2].peerctl(["rollout", "cancel"])
            #expect(cancel.status == 0 && cancel.output.contains("cancelled"), "\(cancel.output)")
            #expect(Spawn.wait(deploy) == 1, "\(read("\(dir)/cancelled.out"))")
            #expect(read("\(dir)/cancelled.out").contains("cancelled by"), "\(read("\(dir)/cancelled.out"))")
            #expect(await TestBed.eventually(within: .seconds(60)) { cluster.peers.allSatisfy { serving($0) == TestBed.image("v2") } })
            let nothing = try cluster.peers[0].peerctl(["rollout", "cancel"])
            #expect(nothing.status == 3, "\(nothing.output)")

            // The leader takes a deploy, detaches, and is killed: another node leads, and once the killed one is
            // back (the rollout waits for a node that is down, up to rollout.node_timeout) the cluster finishes it.
            guard let leaderName = cluster.who(cluster.peers[0])?.leader else {
                Issue.record("no leader")
                return
            }
            let leader = cluster.peer(leaderName)
            let detached = try leader.peerctl(["deploy", TestBed.image("v3"), "--detach"])
            #expect(detached.status == 0 && detached.output.contains("accepted"), "\(detached.output)")
            leader.kill()
            let others = cluster.peers.filter { $0 !== leader }
            #expect(
                await TestBed.eventually(within: .seconds(30)) {
                    others.allSatisfy { cluster.who($0)?.leader.map { $0 != leaderName } == true }
                })
            try await leader.start()
            #expect(
                await TestBed.eventually(within: .seconds(90)) { cluster.peers.allSatisfy { serving($0) == TestBed.image("v3") } },
                "\(Self.rolloutLog(cluster))")
        }
    }

    /// One app node alone in its mesh: a deploy is never "no node is healthy" and never takes its record out.
    @Test func aSingleNodeClusterDeploysWithoutAnAlert() async throws {
        try await TestBed.require()
        let stub = CloudflareStub(token: MeshCluster.token, zone: MeshCluster.zone)
        try await stub.serving { port in
            let cluster = try await MeshCluster.start(stubPort: port, count: 1)
            defer { cluster.tearDown() }
            #expect(await TestBed.eventually(within: .seconds(20)) { stub.records.filter { $0.name == MeshCluster.name }.count == 1 })
            let alertsBefore = MeshCluster.notices(stub, kinds: ["node-removed", "all-unhealthy"]).count
            let deploy = try cluster.peers[0].peerctl(["deploy", TestBed.image("v2")])
            #expect(deploy.status == 0, "\(deploy.output)")
            #expect(serving(cluster.peers[0]) == TestBed.image("v2"))
            #expect(stub.mutations.flatMap(\.deleted).isEmpty, "\(stub.mutations)")
            #expect(MeshCluster.notices(stub, kinds: ["node-removed", "all-unhealthy"]).count == alertsBefore, "\(stub.notifications.map(\.body))")
        }
    }
}
