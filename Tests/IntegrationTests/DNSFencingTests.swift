import Control
import Foundation
import PeerDaemon
import PeerTestKit
import Testing

/// DNS writes against the Cloudflare stand-in when time lies and people edit: three real peerd, each with its
/// own nginx and app. Every write is checked at the stand-in, which records each mutation with the record set it
/// left and the leader's term its comments carry.
@Suite(.serialized, .timeLimit(.minutes(5))) struct DNSFencingTests {
    static let name = MeshCluster.name

    func addresses(_ stub: CloudflareStub) -> Set<String> {
        Set(stub.records.filter { $0.name == Self.name }.map(\.content))
    }

    func leader(_ cluster: MeshCluster, among peers: [PeerdProcess]) -> String? {
        peers.lazy.compactMap { cluster.who($0) }.first { $0.thisNodeLeads }?.node
    }

    /// Every write the stand-in applied left at least one record, and no write of a term came after one of a
    /// higher term.
    func checkWrites(_ stub: CloudflareStub) {
        var highest: UInt64 = 0
        for m in stub.mutations where m.call != "hand-delete" {
            #expect(m.after.contains { $0.name == Self.name }, "a write left no record: \(m)")
            if let term = m.term {
                #expect(term >= highest, "a write of term \(term) after one of term \(highest)")
                highest = max(highest, term)
            }
        }
    }

    /// The leader is stopped (SIGSTOP) after its voters confirmed it and before its write's last check; another
    /// node leads and writes; the old leader runs again — and does not send its write.
    @Test func aLeaderStoppedBeforeItsWriteDoesNotWriteAfterANewLeader() async throws {
        try await TestBed.require()
        let stub = CloudflareStub(token: MeshCluster.token, zone: MeshCluster.zone)
        let hold = NSTemporaryDirectory() + "peer-dns-hold-\(getpid())"
        try await stub.serving { port in
            let cluster = try await MeshCluster.start(stubPort: port, environment: ["PEER_TEST_HOLD_BEFORE_DNS_WRITE": hold])
            defer { cluster.tearDown() }
            let all = Set(cluster.nodes.map(\.address))
            #expect(await TestBed.eventually(within: .seconds(30)) { addresses(stub) == all }, "\(stub.records)")
            let oldLeader = try #require(leader(cluster, among: cluster.peers))
            let oldTerm = try #require(cluster.who(cluster.peer(oldLeader))?.term)
            let follower = try #require(cluster.nodes.first { $0.name != oldLeader })

            // The leader will want to remove the follower's record; it stops at the hook (its own file).
            let held = cluster.peer(oldLeader)
            let hook = "\(hold).\(oldLeader)"
            defer { try? FileManager.default.removeItem(atPath: hook) }
            #expect(FileManager.default.createFile(atPath: hook, contents: nil))
            _ = try await follower.get("/cgi-bin/sick")
            #expect(await TestBed.eventually(within: .seconds(20)) { held.log().contains("test hook: DNS write held") }, "\(held.log().suffix(2000))")
            kill(held.pid, SIGSTOP)
            // The others elect a new leader, which removes the follower's record and the stopped node's.
            let others = cluster.peers.filter { $0.node.name != oldLeader }
            #expect(await TestBed.eventually(within: .seconds(30)) { leader(cluster, among: others) != nil })
            let newLeader = try #require(leader(cluster, among: others))
            let newTerm = try #require(cluster.who(cluster.peer(newLeader))?.term)
            #expect(newTerm > oldTerm)
            #expect(
                await TestBed.eventually(within: .seconds(30)) { stub.mutations.contains { ($0.term ?? 0) >= newTerm } },
                "\(stub.mutations.map(\.term))")

            // The old leader runs again, hook released: its write's last check finds the lease gone.
            let writes = stub.mutations.count
            try FileManager.default.removeItem(atPath: hook)
            kill(held.pid, SIGCONT)
            #expect(
                await TestBed.eventually(within: .seconds(15)) { held.log().contains("the lease no longer leaves time for the write") },
                "\(held.log().suffix(2000))")
            #expect(!stub.mutations.dropFirst(writes).contains { $0.term == oldTerm }, "no write of the old term after the new leader's")
            checkWrites(stub)
        }
    }

    /// Two of three records are deleted by hand (as in the dashboard); then the third node's app fails. The
    /// leader plans from a fresh listing, posts the two serving nodes' records first and removes the third only in
    /// a batch that keeps one of them: the name never has zero records.
    @Test func handDeletesThenAFailureNeverLeaveZeroRecords() async throws {
        try await TestBed.require()
        let stub = CloudflareStub(token: MeshCluster.token, zone: MeshCluster.zone)
        try await stub.serving { port in
            let cluster = try await MeshCluster.start(stubPort: port)
            defer { cluster.tearDown() }
            let all = Set(cluster.nodes.map(\.address))
            #expect(await TestBed.eventually(within: .seconds(30)) { addresses(stub) == all }, "\(stub.records)")
            let (a, b, c) = (cluster.nodes[0], cluster.nodes[1], cluster.nodes[2])
            stub.handDelete(name: Self.name, content: b.address)
            stub.handDelete(name: Self.name, content: c.address)
            _ = try await a.get("/cgi-bin/sick")
            #expect(
                await TestBed.eventually(within: .seconds(30)) { addresses(stub) == [b.address, c.address] }, "\(stub.records.map(\.content))")
            checkWrites(stub)
            for m in stub.mutations { #expect(!m.after.filter { $0.name == Self.name }.isEmpty, "zero records after \(m.call)") }
        }
    }

    /// Two of three nodes have a token Cloudflare refuses. Whichever of them leads steps down after three failed
    /// checks, says why (`peerctl who`), and does not campaign for a while; the node that can write ends up leading
    /// and the records follow the cluster.
    @Test func leadersWhoseTokenIsRefusedHandOver() async throws {
        try await TestBed.require()
        let stub = CloudflareStub(token: MeshCluster.token, zone: MeshCluster.zone)
        try await stub.serving { port in
            let cluster = try await MeshCluster.start(stubPort: port, tokens: [0: "a-revoked-token", 1: "another-revoked-token"])
            defer { cluster.tearDown() }
            let all = Set(cluster.nodes.map(\.address))
            #expect(await TestBed.eventually(within: .seconds(90)) { addresses(stub) == all }, "\(stub.records)")
            let good = cluster.peers[2]
            #expect(await TestBed.eventually(within: .seconds(10)) { cluster.who(good)?.thisNodeLeads == true })
            for bad in cluster.peers.prefix(2) where bad.log().contains("this node leads") {
                #expect(bad.log().contains("stepping down"), "a node that led and could not write stepped down")
            }
            if let stepped = cluster.peers.prefix(2).first(where: { $0.log().contains("stepping down") }) {
                let who = try stepped.peerctl(["who"])
                #expect(who.output.contains("stepped down: the Cloudflare token check failed"), "\(who.output)")
            }
            // The node that can write does the DNS work: a follower killed leaves DNS.
            let follower = cluster.nodes[1]
            cluster.peer(follower.name).kill()
            #expect(await TestBed.eventually(within: .seconds(30)) { !addresses(stub).contains(follower.address) }, "\(stub.records)")
            checkWrites(stub)
        }
    }
}
