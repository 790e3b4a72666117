import Control
import Foundation
import PKI
import PeerDaemon
import PeerTestKit
import Testing

/// `peerctl tls set` on three real nodes: the origin certificate (made here by a stand-in of Cloudflare's
/// Origin CA) reaches every node over the mesh and real nginx serves it on 443 of each node's loopback address;
/// wrong pairs change nothing; a new pair under HTTPS load drops nothing; a node that was down gets the current
/// pair when it is back; the leader warns before expiry. Checked with curl and openssl, not with peer's code.
@Suite(.serialized, .timeLimit(.minutes(6))) struct OriginTLSTests {
    static let host = MeshCluster.name

    /// The certificate the HTTPS listener at `address:443` presents, by SHA-256 (lowercase hex), from openssl.
    func served(_ address: String) -> String? {
        let r = try? Shell.run(
            "sh",
            [
                "-c",
                "openssl s_client -connect \(address):443 -servername \(Self.host) </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256",
            ])
        guard let r, r.status == 0, let eq = r.output.firstIndex(of: "=") else { return nil }
        return r.output[r.output.index(after: eq)...].replacingOccurrences(of: ":", with: "").trimmingCharacters(in: .whitespacesAndNewlines)
            .lowercased()
    }

    /// One HTTPS request as a client that trusts `caFile`: the status, or 0 when the connection failed.
    func https(_ address: String, caFile: String, extra: [String] = []) -> Int {
        let r = try? Shell.run(
            "curl",
            ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "--cacert", caFile, "--resolve", "\(Self.host):443:\(address)"]
                + extra + ["https://\(Self.host)/"])
        return Int(r?.output.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
    }

    func write(_ leaf: TestOriginCA.Leaf, to dir: String, as name: String) throws -> [String] {
        try leaf.certificatePEM.write(toFile: "\(dir)/\(name).pem", atomically: true, encoding: .utf8)
        try leaf.keyPEM.write(toFile: "\(dir)/\(name)-key.pem", atomically: true, encoding: .utf8)
        return ["--cert", "\(dir)/\(name).pem", "--key", "\(dir)/\(name)-key.pem"]
    }

    @Test func theOriginCertificateReachesEveryNodeAndNginxServesIt() async throws {
        try await TestBed.require()
        let stub = CloudflareStub(token: MeshCluster.token, zone: MeshCluster.zone)
        try await stub.serving { port in
            let cluster = try await MeshCluster.start(
                stubPort: port, extraNginx: ["tls:", "  listen: $ADDRESS:443", "  hostname: \(Self.host)"])
            defer { cluster.tearDown() }
            let origin = try TestOriginCA(name: "Test Origin CA (stands in for CloudFlare Origin SSL ECC Certificate Authority)")
            let dir = cluster.pki
            try origin.certificatePEM.write(toFile: dir + "/origin-ca.pem", atomically: true, encoding: .utf8)
            let addresses = cluster.nodes.map(\.address)
            let sites = { cluster.nodes.map { FileManager.default.contents(atPath: $0.directory + "/nginx/sites/peer-testapp.conf") } }
            #expect(addresses.allSatisfy { served($0) == nil }, "nothing listens on 443 before a certificate is set")

            // Wrong pairs: refused with the reason, and not a byte of any node's nginx config changes.
            let before = sites()
            let good = try origin.issue(names: ["example.test", "*.example.test"])
            let other = try origin.issue(names: ["*.example.test"])
            let mismatched = try write(
                TestOriginCA.Leaf(certificatePEM: good.certificatePEM, keyPEM: other.keyPEM, fingerprint: ""), to: dir, as: "mismatched")
            let expired = try write(
                try origin.issue(
                    names: ["*.example.test"], notBefore: Date().addingTimeInterval(-400 * 86_400), notAfter: Date().addingTimeInterval(-86_400)),
                to: dir, as: "expired")
            let wrongHost = try write(try origin.issue(names: ["*.elsewhere.test"]), to: dir, as: "wrong-host")
            for (arguments, reason) in [(mismatched, "does not belong"), (expired, "expired"), (wrongHost, "does not cover \(Self.host)")] {
                let refused = try cluster.peers[0].peerctl(["tls", "set"] + arguments)
                #expect(refused.status != 0 && refused.output.contains(reason), "\(refused.output)")
            }
            #expect(sites() == before)
            #expect(addresses.allSatisfy { served($0) == nil })

            // Without the CA key where peerctl runs (here: next to each node's mesh.ca) and without an operator's key,
            // nothing signs the pair: the node refuses it, as the others would, before anything changes.
            #expect(try Shell.run(PeerdProcess.binDirectory + "/peerctl", ["operator", "add", "alice", "--scope", "tls", "--dir", dir]).status == 0)
            let caKey = dir + "/ca-key.pem"
            try FileManager.default.moveItem(atPath: caKey, toPath: caKey + ".away")
            let unsigned = try cluster.peers[1].peerctl(["tls", "set"] + (try write(good, to: dir, as: "good")))
            try FileManager.default.moveItem(atPath: caKey + ".away", toPath: caKey)
            #expect(unsigned.status != 0 && unsigned.output.contains("--operator-cert"), "\(unsigned.output)")
            #expect(sites() == before)

            // A good pair, given to one node (signed with the CA key): every node serves it on 443, stored 0600.
            let set = try cluster.peers[1].peerctl(["tls", "set"] + (try write(good, to: dir, as: "good")))
            #expect(set.status == 0, "\(set.output)")
            #expect(cluster.names.allSatisfy { set.output.contains("\($0): serving it") }, "\(set.output)")
            #expect(addresses.map(served) == Array(repeating: good.fingerprint, count: 3))
            #expect(addresses.allSatisfy { https($0, caFile: dir + "/origin-ca.pem") == 200 })
            for node in cluster.nodes {
                let keyFile = "\(node.directory)/state/tls/origin-\(good.fingerprint.prefix(16))-key.pem"
                let mode = (try FileManager.default.attributesOfItem(atPath: keyFile)[.posixPermissions] as? Int) ?? 0
                #expect(mode == 0o600, "\(keyFile): \(String(mode, radix: 8))")
                let site = try String(contentsOfFile: node.directory + "/nginx/sites/peer-testapp.conf", encoding: .utf8)
                #expect(site.contains("listen \(node.address):443 ssl;") && site.contains("ssl_protocols TLSv1.2 TLSv1.3;"))
            }
            #expect(!cluster.peers.contains { $0.log().contains("PRIVATE KEY") }, "the key is never logged")
            let status = try cluster.peers[2].peerctl(["status"])
            #expect(status.output.contains("origin tls") && status.output.contains("89 days left"), "\(status.output)")

            // A new pair while clients keep asking over HTTPS, each on a fresh connection: none fails.
            let rotated = try origin.issue(names: ["*.example.test"])
            let stop = dir + "/stop-load"
            var loads: [(pid: pid_t, output: String)] = []
            for address in addresses {
                let output = "\(dir)/load-\(address).out"
                let script = """
                    while [ ! -e \(stop) ]; do
                      curl -s -o /dev/null -w '%{http_code}\\n' --max-time 5 --cacert \(dir)/origin-ca.pem --resolve \(Self.host):443:\(address) https://\(Self.host)/
                    done
                    """
                loads.append((try Spawn.start("/bin/sh", ["-c", script], output: output), output))
            }
            try await Task.sleep(for: .seconds(1))
            // Signed by operator alice (scope tls), on a node without the CA key: the others take it from that node.
            try FileManager.default.moveItem(atPath: caKey, toPath: caKey + ".away")
            let again = try cluster.peers[0].peerctl(
                ["tls", "set"] + (try write(rotated, to: dir, as: "rotated"))
                    + ["--operator-cert", dir + "/operator-alice.pem", "--operator-key", dir + "/operator-alice-key.pem"])
            try FileManager.default.moveItem(atPath: caKey + ".away", toPath: caKey)
            #expect(again.status == 0, "\(again.output)")
            try await Task.sleep(for: .seconds(1))
            #expect(FileManager.default.createFile(atPath: stop, contents: nil), "the load loops stop on this file")
            var codes: [String] = []
            for load in loads {
                _ = Spawn.wait(load.pid)
                codes += ((try? String(contentsOfFile: load.output, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
            }
            #expect(codes.count > 30, "load ran: \(codes.count) requests")
            #expect(codes.allSatisfy { $0 == "200" }, "\(codes.filter { $0 != "200" }.count) of \(codes.count) failed: \(Set(codes))")
            #expect(addresses.map(served) == Array(repeating: rotated.fingerprint, count: 3))
            // A pair signed as set before the one installed (the signing machine's clock behind) is refused with the
            // reason: the others would keep the installed one and hand it back.
            let late = try origin.issue(names: ["*.example.test"])
            let backdated = try OriginAuthority.sign(
                certificatePEM: late.certificatePEM, setAt: 1_000_000, keyPEM: try String(contentsOfFile: caKey, encoding: .utf8))
            let body = try JSONEncoder().encode(ControlAPI.TLSRequest(certificatePEM: late.certificatePEM, keyPEM: late.keyPEM, authority: backdated))
            try body.write(to: URL(fileURLWithPath: dir + "/backdated.json"))
            let refusedLate = try Shell.run(
                "curl",
                [
                    "-s", "--max-time", "20", "--unix-socket", cluster.nodes[1].directory + "/run/peerd.sock", "-X", "POST",
                    "--data-binary", "@" + dir + "/backdated.json", "http://peerd/v1/tls",
                ])
            #expect(refusedLate.output.contains("clock is behind"), "\(refusedLate.output)")
            #expect(addresses.map(served) == Array(repeating: rotated.fingerprint, count: 3))
            let oldKey = "\(cluster.nodes[0].directory)/state/tls/origin-\(good.fingerprint.prefix(16))-key.pem"
            #expect(!FileManager.default.fileExists(atPath: oldKey), "the replaced key is removed")
            // A deploy rewrites the server block: HTTPS stays, with the same certificate.
            let deployed = try cluster.peers[0].peerctl(["deploy", TestBed.image("v2")])
            #expect(deployed.status == 0, "\(deployed.output)")
            #expect(addresses.map(served) == Array(repeating: rotated.fingerprint, count: 3))
            #expect(addresses.allSatisfy { https($0, caFile: dir + "/origin-ca.pem") == 200 })

            // A node that is down when a pair is set gets it when it is back; the leader warns that it expires soon.
            let away = cluster.peers[2]
            away.kill()
            let leader = cluster.peers[0]
            #expect(
                await TestBed.eventually(within: .seconds(10)) {
                    ((try? leader.peerctl(["members", "--json"]))?.output ?? "").contains("\"dead\"")
                })
            let expiring = try origin.issue(names: ["*.example.test"], notAfter: Date().addingTimeInterval(5 * 86_400 + 3600))
            let whileAway = try leader.peerctl(["tls", "set"] + (try write(expiring, to: dir, as: "expiring")))
            #expect(whileAway.status == 0, "\(whileAway.output)")
            #expect(served(addresses[2]) == rotated.fingerprint, "its nginx keeps serving what it had")
            try await away.start()
            #expect(await TestBed.eventually(within: .seconds(30)) { served(addresses[2]) == expiring.fingerprint }, "\(away.log().suffix(1500))")
            #expect(
                await TestBed.eventually(within: .seconds(15)) {
                    stub.notifications.contains { ($0.headers["title"] ?? "").contains("origin certificate for \(Self.host) expires in 5 days") }
                }, "\(stub.notifications.compactMap { $0.headers["title"] })")
        }
    }

    /// A single node (no mesh to resend the pair) keeps its origin certificate across a restart: `peerctl status`
    /// still shows it, and the next deploy renders the server block with the 443 listener. The earlier version
    /// wrote `tls/origin.json` with ISO 8601 dates and read it back expecting numbers, so every restart forgot it.
    @Test func aSingleNodeKeepsItsCertificateAcrossARestartAndTheNextDeploy() async throws {
        try await TestBed.require()
        let dir = NSTemporaryDirectory() + "peer-tls-restart-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await withSingleNode(extraNginx: ["tls:", "  listen: $ADDRESS:443", "  hostname: \(Self.host)"]) { node, peer in
            let origin = try TestOriginCA()
            let leaf = try origin.issue(names: [Self.host])
            let set = try peer.peerctl(["tls", "set"] + (try write(leaf, to: dir, as: "origin")))
            #expect(set.status == 0, "\(set.output)")
            #expect(served(node.address) == leaf.fingerprint)

            #expect(peer.stop(SIGTERM) == 0)
            try await peer.start()
            let status = try peer.peerctl(["status"])
            #expect(status.output.contains("sha256 \(leaf.fingerprint.prefix(16))"), "\(status.output)")
            let deployed = try peer.peerctl(["deploy", TestBed.image("v2")])
            #expect(deployed.status == 0, "\(deployed.output)")
            #expect(served(node.address) == leaf.fingerprint, "after a restart and a deploy, 443 still presents the certificate")
            let site = try String(contentsOfFile: node.directory + "/nginx/sites/peer-testapp.conf", encoding: .utf8)
            #expect(site.contains("listen \(node.address):443 ssl;"), "\(site)")
        }
    }

    /// One node with its nginx and peerd, serving v1, for `body`; torn down after it.
    func withSingleNode(extraNginx: [String], _ body: (TestNode, PeerdProcess) async throws -> Void) async throws {
        let node = try TestNode(extraNginx: extraNginx)
        defer { node.tearDown() }
        try node.startNginx()
        let peer = PeerdProcess(node: node)
        try await peer.start()
        defer { peer.kill() }
        #expect(try peer.peerctl(["deploy", TestBed.image("v1")]).status == 0)
        try await body(node, peer)
    }

    /// Authenticated Origin Pulls on one node: with `origin_pulls: on` nginx answers only clients that present a
    /// certificate of the origin-pull CA (Cloudflare's, here a stand-in made in the test).
    @Test func authenticatedOriginPullsRequireTheClientCertificate() async throws {
        try await TestBed.require()
        let pullCA = try TestOriginCA(name: "Test origin-pull CA (stands in for origin-pull.cloudflare.net)")
        let dir = NSTemporaryDirectory() + "peer-aop-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try pullCA.certificatePEM.write(toFile: dir + "/origin-pull-ca.pem", atomically: true, encoding: .utf8)
        try await withSingleNode(extraNginx: [
            "tls:", "  listen: $ADDRESS:443", "  hostname: \(Self.host)", "  origin_pulls: on", "  origin_pull_ca: \(dir)/origin-pull-ca.pem",
        ]) { node, peer in

            let origin = try TestOriginCA()
            try origin.certificatePEM.write(toFile: dir + "/origin-ca.pem", atomically: true, encoding: .utf8)
            let set = try peer.peerctl(["tls", "set"] + (try write(try origin.issue(names: [Self.host]), to: dir, as: "origin")))
            #expect(set.status == 0, "\(set.output)")
            let cloudflare = try pullCA.issue(names: ["origin-pull.cloudflare.test"], client: true)
            _ = try write(cloudflare, to: dir, as: "pull-client")
            let stranger = try TestOriginCA().issue(names: ["stranger.test"], client: true)
            _ = try write(stranger, to: dir, as: "stranger")
            #expect(https(node.address, caFile: dir + "/origin-ca.pem") == 400, "no client certificate: nginx answers 400")
            #expect(
                https(node.address, caFile: dir + "/origin-ca.pem", extra: ["--cert", dir + "/stranger.pem", "--key", dir + "/stranger-key.pem"])
                    == 400)
            #expect(
                https(
                    node.address, caFile: dir + "/origin-ca.pem", extra: ["--cert", dir + "/pull-client.pem", "--key", dir + "/pull-client-key.pem"])
                    == 200)
            // The plain listener no longer serves the app (that would bypass the client certificate): a direct
            // request gets a redirect to HTTPS and not a byte of the app; peer's own checks still pass through
            // it (a deploy verifies its reload there).
            let direct = try Shell.run(
                "curl",
                [
                    "-s", "-i", "--max-time", "5", "-H", "Host: testapp.local", "-H", "CF-Connecting-IP: 6.6.6.6",
                    "http://\(node.address):\(node.port)/",
                ])
            #expect(direct.output.hasPrefix("HTTP/1.1 308"), "\(direct.output)")
            #expect(direct.output.contains("Location: https://testapp.local/"), "\(direct.output)")
            #expect(!direct.output.contains("\nv1"), "the app's answer came through the plain listener: \(direct.output)")
            let redeploy = try peer.peerctl(["deploy", TestBed.image("v2")])
            #expect(redeploy.status == 0, "\(redeploy.output)")
            let status = try peer.peerctl(["status", "--json"])
            #expect(status.output.contains("\"originPulls\" : \"on\""), "\(status.output)")
        }
    }
}
