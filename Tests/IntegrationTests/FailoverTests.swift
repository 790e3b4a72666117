import Deployment
import Control
import Foundation
import PeerDaemon
import PeerTestKit
import Testing

/// Three real peerd processes, each with its own nginx and the test app in dockerd, in one mesh with real
/// certificates; DNS at the Cloudflare stub (the real client code talks to it over HTTP), notifications to the
/// stub's ntfy and Discord endpoints. kill -9 a follower, then the leader.
@Suite(.serialized, .timeLimit(.minutes(6))) struct FailoverTests {
    static let zone = MeshCluster.zone
    static let name = MeshCluster.name
    static let token = MeshCluster.token

    typealias Cluster = MeshCluster

    func cluster(stubPort: Int, witness: Bool = false) async throws -> Cluster {
        try await MeshCluster.start(stubPort: stubPort, witness: witness)
    }

    func eventually(within timeout: Duration, _ condition: () -> Bool) async -> Bool {
        await TestBed.eventually(within: timeout, condition)
    }

    func addresses(_ stub: CloudflareStub) -> Set<String> {
        Set(stub.records.filter { $0.name == Self.name && $0.type == "A" }.map(\.content))
    }

    @Test func deadNodesLeaveDNSAndTheLeaderMovesOn() async throws {
        try await TestBed.require()
        let stub = CloudflareStub(token: Self.token, zone: Self.zone)
        // Someone else's record on the name: peer must leave it alone.
        stub.seed(name: Self.name, content: "198.51.100.77")
        try await stub.serving { port in
            let cluster = try await cluster(stubPort: port)
            defer { cluster.tearDown() }
            let all = Set(cluster.nodes.map(\.address))

            // Every serving node gets its record, created by the leader.
            #expect(await eventually(within: .seconds(30)) { addresses(stub) == all.union(["198.51.100.77"]) }, "\(stub.records)")
            let leaderName = try #require(cluster.who(cluster.peers[0])?.leader)
            let firstTerm = try #require(cluster.who(cluster.peer(leaderName))?.term)

            let follower = try #require(cluster.names.first { $0 != leaderName })
            // Deploys on every node are reported by the leader (each node gossips its deploy's state): a good
            // one rolls through all three, a broken one stops at the first node in the rolling order.
            let first = cluster.names.sorted()[0]
            #expect(try cluster.peer(follower).peerctl(["deploy", TestBed.image("v2")]).status == 0)
            #expect(try cluster.peer(follower).peerctl(["deploy", TestBed.image("crash")]).status != 0)
            #expect(
                await eventually(within: .seconds(10)) {
                    let titles = stub.notifications.filter { $0.backend == "ntfy" }.compactMap { $0.headers["title"] }
                    return cluster.names.allSatisfy { n in titles.contains { $0.contains("\(n): deploy of \(TestBed.image("v2")) done") } }
                        && titles.contains { $0.contains("\(first): deploy of \(TestBed.image("crash")) failed") }
                }, "\(stub.notifications.compactMap { $0.headers["title"] })")

            // kill -9 a follower: its record goes, once; the foreign record stays. First every record is back (the
            // last node of a rollout may still be held down after its swap: its record's return is a write too).
            let followerAddress = cluster.nodes[cluster.names.firstIndex(of: follower)!].address
            #expect(await eventually(within: .seconds(30)) { addresses(stub) == all.union(["198.51.100.77"]) }, "\(stub.records)")
            let writesBefore = stub.mutations.count
            cluster.peer(follower).kill()
            #expect(await eventually(within: .seconds(10)) { !addresses(stub).contains(followerAddress) })
            #expect(addresses(stub).contains("198.51.100.77"))
            #expect(
                stub.mutations.count == writesBefore + 1,
                "one API write for the change: \(stub.mutations.map { "\($0.call) -\($0.deleted.map(\.content)) +\($0.created.map(\.content)) term \($0.term.map(String.init) ?? "-")" })"
            )
            let removed = { stub.notifications.filter { $0.backend == "ntfy" && $0.headers["title"]?.contains("\(follower) removed") == true } }
            #expect(await eventually(within: .seconds(10)) { !removed().isEmpty })
            let removedNotes = removed()
            #expect(removedNotes.count == 1)
            #expect(removedNotes.first?.headers["priority"] == "5")
            #expect(stub.notifications.contains { $0.backend == "discord" })

            // kill -9 the leader: the last node leads under a higher term and removes the old leader's record.
            let leaderAddress = cluster.nodes[cluster.names.firstIndex(of: leaderName)!].address
            cluster.peer(leaderName).kill()
            let survivor = try #require(cluster.names.first { $0 != leaderName && $0 != follower })
            // Two of three voters are gone: no majority, so no leader and no DNS change (by design).
            try await Task.sleep(for: .seconds(5))
            #expect(cluster.who(cluster.peer(survivor))?.thisNodeLeads == false)
            #expect(addresses(stub).contains(leaderAddress))

            // Restart the follower: a majority again; the survivor or the follower leads with a higher term, the
            // dead leader's record goes and the follower's returns after its hold-down.
            try await cluster.peer(follower).start()
            #expect(
                await eventually(within: .seconds(30)) {
                    addresses(stub) == Set([cluster.nodes[cluster.names.firstIndex(of: survivor)!].address, followerAddress, "198.51.100.77"])
                }, "\(addresses(stub))")
            let newTerm = [survivor, follower].compactMap { cluster.who(cluster.peer($0))?.term }.max() ?? 0
            #expect(newTerm > firstTerm)

            // Never zero records for the name, after any write.
            for m in stub.mutations {
                #expect(m.after.contains { $0.name == Self.name }, "a write left no record: \(m)")
            }
        }
    }

    /// `peerctl node remove` of a node that still runs and serves (a VPS being retired): the removal is committed and
    /// the leader takes its record away — the node is no member, so nothing else would — and leaves the others'.
    @Test func aNodeRemovedFromTheClusterLeavesDNS() async throws {
        try await TestBed.require()
        let stub = CloudflareStub(token: Self.token, zone: Self.zone)
        try await stub.serving { port in
            let cluster = try await cluster(stubPort: port)
            defer { cluster.tearDown() }
            let all = Set(cluster.nodes.map(\.address))
            #expect(await eventually(within: .seconds(30)) { addresses(stub) == all }, "\(stub.records)")
            let leader = try #require(cluster.who(cluster.peers[0])?.leader)
            let retired = try #require(cluster.names.first { $0 != leader })
            let retiredAddress = cluster.nodes[cluster.names.firstIndex(of: retired)!].address
            let removed = try cluster.peer(leader).peerctl(["node", "remove", retired, "--wait", "10"])
            #expect(removed.status == 0 && removed.output.contains("\(retired) is out of the cluster's configuration"), "\(removed.output)")
            #expect(
                await eventually(within: .seconds(15)) { addresses(stub) == all.subtracting([retiredAddress]) },
                "\(addresses(stub))\n\(cluster.peer(leader).log().suffix(1500))")
            let shown = try cluster.peer(leader).peerctl(["config", "show"]).output
            #expect(shown.contains("removed (their DNS records are taken away): \(retired)"), "\(shown)")
            // It still runs and serves locally: only the cluster let it go.
            #expect(try await cluster.nodes[cluster.names.firstIndex(of: retired)!].get("/").status == 200)
            for m in stub.mutations { #expect(m.after.contains { $0.name == Self.name }, "a write left no record: \(m)") }
        }
    }

    /// The leader is cut off from the other two (iptables), but not from the DNS API: it must stop writing when
    /// its lease runs out — it sees the others as dead and would remove their records — while the other two
    /// elect a new leader under a higher term, which removes the cut-off node's record.
    @Test func aPartitionedLeaderStopsWriting() async throws {
        try await TestBed.require()
        let stub = CloudflareStub(token: Self.token, zone: Self.zone)
        try await stub.serving { port in
            let cluster = try await cluster(stubPort: port)
            defer {
                MeshProcessTests.Firewall.clear()
                cluster.tearDown()
            }
            let all = Set(cluster.nodes.map(\.address))
            #expect(await eventually(within: .seconds(30)) { addresses(stub) == all }, "\(stub.records)")
            let leaderName = try #require(cluster.who(cluster.peers[0])?.leader)
            let oldTerm = try #require(cluster.who(cluster.peer(leaderName))?.term)
            let leader = cluster.nodes[cluster.names.firstIndex(of: leaderName)!]
            let others = cluster.nodes.filter { $0.name != leaderName }
            let logLinesBefore = cluster.peer(leaderName).log().split(separator: "\n").count
            for other in others {
                try MeshProcessTests.Firewall.add(["-s", leader.address, "-d", other.address, "-j", "DROP"])
                try MeshProcessTests.Firewall.add(["-s", other.address, "-d", leader.address, "-j", "DROP"])
            }
            #expect(await eventually(within: .seconds(15)) { addresses(stub) == Set(others.map(\.address)) }, "\(addresses(stub))")
            let newLeader = others.compactMap { cluster.who(cluster.peer($0.name)) }.first { $0.thisNodeLeads }
            #expect((newLeader?.term ?? 0) > oldTerm)
            // Give the cut-off node every chance to misbehave, then read what it did.
            try await Task.sleep(for: .seconds(3))
            let after = cluster.peer(leaderName).log().split(separator: "\n").dropFirst(logLinesBefore)
            #expect(after.contains { $0.contains("this node no longer leads") })
            #expect(!after.contains { $0.contains("DNS record removed") }, "the cut-off leader wrote DNS: \(after.filter { $0.contains("DNS") })")
            #expect(addresses(stub) == Set(others.map(\.address)))
            for m in stub.mutations {
                #expect(m.after.contains { $0.name == Self.name }, "a write left no record: \(m)")
            }
        }
    }

    func serving(_ peer: PeerdProcess) -> String? {
        guard let r = try? peer.peerctl(["status", "--json"]), r.status == 0,
            let status = try? ControlAPI.decoder.decode(ControlAPI.NodeStatus.self, from: Data(r.output.utf8))
        else { return nil }
        return status.serving?.image
    }

    func history(_ peer: PeerdProcess) -> [DeployRecord] {
        guard let r = try? peer.peerctl(["deploys", "--json"]), r.status == 0 else { return [] }
        return (try? ControlAPI.decoder.decode([DeployRecord].self, from: Data(r.output.utf8))) ?? []
    }

    /// `peerctl deploy` on any node rolls the image across the cluster one node at a time, in name order; a
    /// broken image stops at the first node (which keeps serving the previous version) and goes no further;
    /// from CI with an operator certificate over the mesh port.
    @Test func rollingDeploys() async throws {
        try await TestBed.require()
        let stub = CloudflareStub(token: Self.token, zone: Self.zone)
        try await stub.serving { port in
            let cluster = try await cluster(stubPort: port)
            defer { cluster.tearDown() }
            let order = cluster.names.sorted()
            #expect(cluster.peers.allSatisfy { serving($0) == TestBed.image("v1") })

            // A good image, from the last node in the order: every node, in order, one at a time.
            let good = try cluster.peer(order[2]).peerctl(["deploy", TestBed.image("v2")])
            #expect(good.status == 0, "\(good.output)")
            #expect(good.output.contains("succeeded"), "\(good.output)")
            #expect(cluster.peers.allSatisfy { serving($0) == TestBed.image("v2") })
            // Each node's /metrics: the mesh seen alive, one leader, its deploys; the leader's DNS calls.
            var leaders = 0.0
            var dnsCalls = 0.0
            for node in cluster.nodes {
                let metrics = try await PrometheusText.scrape(node.metricsURL)
                #expect(metrics.value("peer_members", ["state": "alive"]) == 3, "\(node.name)")
                #expect(metrics.value("peer_member_status", ["member": cluster.names[0]]) == 0)
                #expect((metrics.value("peer_member_rtt_seconds") ?? 0) > 0)
                #expect((metrics.value("peer_lease_term") ?? 0) >= 1)
                #expect(metrics.value("peer_deploys_total", ["result": "succeeded"]) == 2, "v1 and v2 on \(node.name)")
                #expect((metrics.value("peer_mesh_datagrams_received_total") ?? 0) > 0)
                // Every member's state relayed by another carried its owner's signature, and it checked out.
                for reason in ["bad_signature", "no_signature"] {
                    #expect(metrics.value("peer_mesh_claims_refused_total", ["reason": reason]) == 0, "\(node.name): \(reason)")
                }
                leaders += metrics.value("peer_leader") ?? 0
                dnsCalls += metrics.value("peer_dns_api_calls_total", ["result": "ok"]) ?? 0
            }
            #expect(leaders == 1)
            #expect(dnsCalls >= 2, "the leader verified the token and listed the records")
            let records = order.compactMap { name in history(cluster.peer(name)).last { $0.image == TestBed.image("v2") } }
            #expect(records.count == 3)
            for (a, b) in zip(records, records.dropFirst()) {
                // The next node started after the previous one finished (durationMs from startedAt).
                #expect(b.startedAt >= a.startedAt.addingTimeInterval(Double(a.durationMs) / 1000 - 0.05), "\(records.map(\.startedAt))")
            }

            // A broken image: tried on the first node only, refused there; nobody serves it.
            let bad = try cluster.peer(order[1]).peerctl(["deploy", TestBed.image("crash")])
            #expect(bad.status != 0)
            #expect(bad.output.contains("FAILED"), "\(bad.output)")
            #expect(cluster.peers.allSatisfy { serving($0) == TestBed.image("v2") })
            #expect(history(cluster.peer(order[0])).contains { $0.image == TestBed.image("crash") })
            #expect(!history(cluster.peer(order[1])).contains { $0.image == TestBed.image("crash") })
            #expect(!history(cluster.peer(order[2])).contains { $0.image == TestBed.image("crash") })

            // From CI: an operator certificate, over the mesh port of any node.
            let peerctl = PeerdProcess.binDirectory + "/peerctl"
            #expect(try Shell.run(peerctl, ["cert", "issue-operator", "ci", "--dir", cluster.pki]).status == 0)
            let remote = [
                "--peer", "\(cluster.nodes[0].address):\(cluster.nodes[0].port + 1000)", "--cert", cluster.pki + "/operator-ci.pem",
                "--key", cluster.pki + "/operator-ci-key.pem", "--ca", cluster.pki + "/ca.pem",
            ]
            // The connection options also before the subcommand, as the docs write them for CI.
            let who = try Shell.run(peerctl, remote + ["who"])
            #expect(who.status == 0 && who.output.contains("leader:"), "\(who.output)")
            let rollback = try Shell.run(peerctl, ["rollback"] + remote)
            #expect(rollback.status == 0, "\(rollback.output)")
            #expect(cluster.peers.allSatisfy { serving($0) == TestBed.image("v1") })
            #expect(try Shell.run(peerctl, ["deploy", TestBed.image("v2")] + remote).status == 0)
            #expect(cluster.peers.allSatisfy { serving($0) == TestBed.image("v2") })
            #expect(cluster.peers[0].log().contains("operator request"))
            // A node's certificate is not an operator's.
            let wrong = try Shell.run(
                peerctl,
                [
                    "who", "--peer", remote[1], "--cert", cluster.pki + "/\(order[0]).pem", "--key", cluster.pki + "/\(order[0])-key.pem", "--ca",
                    cluster.pki + "/ca.pem",
                ])
            #expect(wrong.status != 0 && wrong.output.contains("operator certificate"), "\(wrong.output)")
            // Whom it talks to: a node named with --node must be the one answering (nothing is sent otherwise);
            // without --node, the address asked must be in the node's certificate (it is here).
            let other = cluster.nodes[1].name
            let misdirected = try Shell.run(peerctl, remote + ["--node", other, "who"])
            #expect(misdirected.status != 0 && misdirected.output.contains("not \(other)'s"), "\(misdirected.output)")
            let pinned = try Shell.run(
                peerctl, remote + ["who"], environment: ProcessInfo.processInfo.environment.merging(["PEER_NODE": cluster.nodes[0].name]) { $1 })
            #expect(pinned.status == 0, "\(pinned.output)")

            // Concurrent deploys, a killed client, a killed leader and cancellation: RolloutTests.
            // systemctl stop on a mesh node: every service ends cleanly, peerd exits 0.
            #expect(cluster.peer(order[1]).stop(SIGTERM) == 0, "\(cluster.peer(order[1]).log().suffix(1500))")
        }
    }

    /// A token Cloudflare refuses: the leader says so (log and notification, without the token) and keeps
    /// running; nothing is written.
    @Test func aRefusedTokenIsReportedAndHarmsNothing() async throws {
        try await TestBed.require()
        let stub = CloudflareStub(token: Self.token, zone: Self.zone)
        stub.seed(name: Self.name, content: "198.51.100.77")
        try await stub.serving { port in
            let node = try TestNode()
            let pki = NSTemporaryDirectory() + "peer-token-pki-\(getpid())"
            defer {
                node.tearDown()
                try? FileManager.default.removeItem(atPath: pki)
            }
            let peerctl = PeerdProcess.binDirectory + "/peerctl"
            #expect(try Shell.run(peerctl, ["ca", "init", "--dir", pki]).status == 0)
            #expect(try Shell.run(peerctl, ["cert", "issue", "--dir", pki, node.name, "--address", node.address]).status == 0)
            let wrong = "wrong-token-SECRET-value"
            try wrong.write(toFile: pki + "/cf-token", atomically: true, encoding: .utf8)
            chmod(pki + "/cf-token", 0o600)
            // A mesh of one: it is its own majority, so it leads at once.
            try node.appendToConfig(
                node.meshSection(pki: pki, members: node.meshMember) + """
                    dns:
                      api_base: http://127.0.0.1:\(port)/client/v4
                      zone: \(Self.zone)
                      name: \(Self.name)
                      token_file: \(pki)/cf-token
                    notify:
                      ntfy:
                        server: http://127.0.0.1:\(port)/notify/ntfy
                        topic: peer-token-test

                    """)
            let peer = PeerdProcess(node: node)
            try await peer.start()
            defer { peer.kill() }
            #expect(
                await eventually(within: .seconds(15)) {
                    stub.notifications.contains { $0.headers["title"]?.contains("Cloudflare token rejected") == true }
                })
            let note = stub.notifications.first { $0.headers["title"]?.contains("token") == true }
            #expect(note?.body.contains("9109") == true)
            #expect(note?.body.contains(wrong) == false, "the token must not appear in a notification")
            #expect(!peer.log().contains(wrong), "the token must not appear in the log")
            #expect(stub.mutations.isEmpty)
            #expect(try peer.peerctl(["who"]).output.contains("leader: \(node.name)"))
            #expect(try peer.peerctl(["status"]).status == 0)
        }
    }

    /// Two app nodes and a witness (a third, small peerd that only votes): losing either app node, the other
    /// leads with the witness's vote and takes the dead one out of DNS. The witness never leads, has no record,
    /// and refuses deploys.
    @Test func twoNodesAndAWitnessFailOver() async throws {
        try await TestBed.require()
        let stub = CloudflareStub(token: Self.token, zone: Self.zone)
        try await stub.serving { port in
            let cluster = try await cluster(stubPort: port, witness: true)
            defer { cluster.tearDown() }
            let (a, b, w) = (cluster.nodes[0], cluster.nodes[1], cluster.nodes[2])
            #expect(await eventually(within: .seconds(30)) { addresses(stub) == [a.address, b.address] }, "\(stub.records)")
            #expect(cluster.who(cluster.peers[2])?.thisNodeLeads == false)
            let refused = try cluster.peers[2].peerctl(["deploy", TestBed.image("v1")])
            #expect(refused.status != 0 && refused.output.contains("witness"), "\(refused.output)")

            // Kill whichever app node leads: the other one takes over with the witness and removes it.
            let leader = try #require(cluster.who(cluster.peers[0])?.leader)
            let (dead, alive) = leader == a.name ? (a, b) : (b, a)
            cluster.peer(dead.name).kill()
            #expect(await eventually(within: .seconds(15)) { addresses(stub) == [alive.address] }, "\(addresses(stub))")
            #expect(cluster.who(cluster.peer(alive.name))?.thisNodeLeads == true)
            #expect(!addresses(stub).contains(w.address))
        }
    }
}
