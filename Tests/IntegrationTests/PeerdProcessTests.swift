import Control
import Deployment
import Foundation
import PeerDaemon
import PeerTestKit
import Testing

/// The real `peerd` and `peerctl` binaries: what an operator types, and what happens when peerd dies.
@Suite(.serialized, .timeLimit(.minutes(6))) struct PeerdProcessTests {
    /// The test bed checked, the node's nginx up and its peerd adopted and answering.
    func started(_ node: TestNode, _ arguments: [String] = []) async throws -> PeerdProcess {
        try await TestBed.require()
        try node.startNginx()
        let peerd = PeerdProcess(node: node, extraArguments: arguments)
        try await peerd.start()
        return peerd
    }

    func status(_ peerd: PeerdProcess) throws -> ControlAPI.NodeStatus {
        let result = try peerd.peerctl(["status", "--json"])
        try #require(result.status == 0, "\(result.output)")
        return try ControlAPI.decoder.decode(ControlAPI.NodeStatus.self, from: Data(result.output.utf8))
    }

    @Test func peerctlDeployPrintsEachStepAndExitsNonZeroOnFailure() async throws {
        let node = try TestNode(healthTimeout: "2s")
        defer { node.tearDown() }
        let peerd = try await started(node)
        defer { peerd.kill(SIGTERM) }

        let good = try peerd.peerctl(["deploy", TestBed.image("v1")])
        #expect(good.status == 0, "\(good.output)")
        for step in ["pull", "start", "health", "switch", "verify"] {
            #expect(good.output.contains("] \(step)"), "no \(step) line in:\n\(good.output)")
        }
        #expect(good.output.contains("succeeded"))
        #expect(try await node.get("/").body == "v1")

        let bad = try peerd.peerctl(["deploy", TestBed.image("bad")])
        #expect(bad.status == 1)
        #expect(bad.output.contains("FAILED"))
        #expect(bad.output.contains("answered 404"), "\(bad.output)")
        #expect(bad.output.contains("\(TestBed.image("v1")) keeps serving"))

        // A bad image name is a usage error (exit 64, as documented), not a failed deploy.
        let nonsense = try peerd.peerctl(["deploy", "Not An Image"])
        #expect(nonsense.status == 64)
        #expect(nonsense.output.contains("invalid image reference"))

        let state = try status(peerd)
        #expect(state.serving?.image == TestBed.image("v1"))
        #expect(state.lastDeploy?.result == .failed)
        let human = try peerd.peerctl(["status"])
        #expect(human.output.contains("serving") && human.output.contains(TestBed.image("v1")))

        let history = try peerd.peerctl(["deploys", "--json"])
        let records = try ControlAPI.decoder.decode([DeployRecord].self, from: Data(history.output.utf8))
        #expect(records.map(\.result) == [.succeeded, .failed])

        // Root-only control socket.
        let mode = try FileManager.default.attributesOfItem(atPath: node.directory + "/run/peerd.sock")[.posixPermissions] as? Int
        #expect(mode == 0o600)
    }

    /// `/metrics` on the node's metrics address (loopback by default): what Prometheus scrapes, parsed as it would.
    @Test func metricsCountDeploysAndSwapDurations() async throws {
        let node = try TestNode(healthTimeout: "2s")
        defer { node.tearDown() }
        let peerd = try await started(node)
        defer { peerd.kill(SIGTERM) }
        #expect(try peerd.peerctl(["deploy", TestBed.image("v1")]).status == 0)
        #expect(try peerd.peerctl(["deploy", TestBed.image("v2")]).status == 0)
        #expect(try peerd.peerctl(["deploy", TestBed.image("bad")]).status != 0)
        let metrics = try await PrometheusText.scrape(node.metricsURL)
        #expect(metrics.value("peer_deploys_total", ["kind": "deploy", "result": "succeeded"]) == 2)
        #expect(metrics.value("peer_deploys_total", ["kind": "deploy", "result": "failed"]) == 1)
        #expect(metrics.types["peer_swap_duration_seconds"] == "histogram")
        #expect(metrics.value("peer_swap_duration_seconds_count") == 3)
        #expect(metrics.value("peer_swap_serving_after_seconds_count") == 2)
        let servingSum = metrics.value("peer_swap_serving_after_seconds_sum") ?? 0
        #expect(servingSum > 0 && servingSum < 20, "\(servingSum)")
        // One node without a mesh: no membership series.
        #expect(metrics.value("peer_members") == nil)
    }

    @Test func peerdRestartAdoptsTheRunningContainerWithoutABlip() async throws {
        let node = try TestNode()
        defer { node.tearDown() }
        let peerd = try await started(node)
        #expect(try peerd.peerctl(["deploy", TestBed.image("v1")]).status == 0)
        let before = try node.containers()

        let probe = try await TrafficProbe.during(node) {
            try await Task.sleep(for: .milliseconds(300))
            peerd.kill(SIGKILL)
            try await Task.sleep(for: .milliseconds(300))
            try await peerd.start()
            try await Task.sleep(for: .milliseconds(500))
        }
        defer { peerd.kill(SIGTERM) }
        #expect(await probe.failures == [])
        #expect(await probe.ok > 10)
        #expect(try node.containers() == before, "the same container serves, untouched")
        #expect(try status(peerd).serving?.containerID == before.first)
        #expect(peerd.log().contains("adopted"))
    }

    @Test func crashMidSwapIsCleanedUpAndTheOldVersionKeepsServing() async throws {
        let node = try TestNode()
        defer { node.tearDown() }
        let peerd = try await started(node)
        #expect(try peerd.peerctl(["deploy", TestBed.image("v1")]).status == 0)
        let v1 = try node.containers()

        // slowstart listens after 3 s: kill peerd while it waits for the new container's health.
        let deploying = Task.detached { try peerd.peerctl(["deploy", TestBed.image("slowstart")]) }
        for _ in 0..<100 where try node.containers().count < 2 {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(try node.containers().count == 2, "the new container started")
        peerd.kill(SIGKILL)
        let interrupted = try await deploying.value
        #expect(interrupted.status != 0, "peerctl reports that the deploy did not finish")
        #expect(try await node.get("/").body == "v1")

        try await peerd.start()
        defer { peerd.kill(SIGTERM) }
        #expect(try node.containers() == v1, "the half-started container is gone")
        #expect(try await node.get("/").body == "v1")
        let state = try status(peerd)
        #expect(state.lastDeploy?.result == .interrupted)
        #expect(state.lastDeploy?.image == TestBed.image("slowstart"))
        #expect(state.serving?.image == TestBed.image("v1"))
        // And the next deploy works, with a fresh generation.
        #expect(try peerd.peerctl(["deploy", TestBed.image("v2")]).status == 0)
        #expect(try await node.get("/").body == "v2")
    }

    /// `systemctl stop/restart peerd` sends SIGTERM: a deploy in progress is finished (not left half-done), the
    /// client gets its result, peerd exits 0, and the app keeps running without peerd.
    @Test func sigtermFinishesTheRunningDeployAndLeavesTheAppRunning() async throws {
        let node = try TestNode()
        defer { node.tearDown() }
        let peerd = try await started(node)
        #expect(try peerd.peerctl(["deploy", TestBed.image("v1")]).status == 0)
        let deploying = Task.detached { try peerd.peerctl(["deploy", TestBed.image("slowstart")]) }
        for _ in 0..<100 where try node.containers().count < 2 {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(peerd.stop(SIGTERM) == 0, "peerd exits cleanly")
        let client = try await deploying.value
        #expect(client.status == 0, "\(client.output)")
        #expect(client.output.contains("succeeded"))
        #expect(try await node.get("/").body == "slowstart", "the app serves with peerd stopped")
        let serving = try node.containers()
        #expect(serving.count == 1)

        try await peerd.start()
        defer { peerd.kill(SIGTERM) }
        #expect(try status(peerd).serving?.containerID == serving.first)
    }

    /// peerd releases its executable's pages when idle (every minute; SIGUSR1 at once): its resident set
    /// shrinks, and the code that runs next — a deploy — comes back from the page cache.
    @Test func releasedPagesComeBackForTheNextDeploy() async throws {
        let node = try TestNode()
        defer { node.tearDown() }
        let peerd = try await started(node)
        #expect(try peerd.peerctl(["deploy", TestBed.image("v1")]).status == 0)
        let before = try Self.fileBackedResidentKiB(peerd.pid)
        kill(peerd.pid, SIGUSR1)
        // Released when peerd handles the signal: wait for it (5 s at most), not for a guess at how long it takes.
        var after = try Self.fileBackedResidentKiB(peerd.pid)
        let end = ContinuousClock.now + .seconds(5)
        while after >= before, ContinuousClock.now < end {
            try await Task.sleep(for: .milliseconds(20))
            after = try Self.fileBackedResidentKiB(peerd.pid)
        }
        #expect(after < before, "file-backed resident set \(before) kB before SIGUSR1, \(after) kB after")
        #expect(try peerd.peerctl(["deploy", TestBed.image("v2")]).status == 0)
        #expect(try await node.get("/").body == "v2")
        #expect(peerd.stop(SIGTERM) == 0, "peerd exits cleanly")
    }

    static func fileBackedResidentKiB(_ pid: pid_t) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("RssFile:") })
        return try #require(Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]))
    }

    @Test func jsonLogsAreOneObjectPerLineWithStructuredKeys() async throws {
        let node = try TestNode()
        defer { node.tearDown() }
        let peerd = try await started(node, ["--log-format", "json"])
        #expect(try peerd.peerctl(["deploy", TestBed.image("v1")]).status == 0)
        peerd.kill(SIGTERM)
        let lines = peerd.log().split(separator: "\n")
        #expect(lines.count > 5)
        var deployLines = 0
        for line in lines {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String], "not JSON: \(line)")
            #expect(object["level"] != nil && object["msg"] != nil && object["ts"] != nil)
            if object["deploy.image"] == TestBed.image("v1") && object["deploy.id"] != nil { deployLines += 1 }
        }
        #expect(deployLines > 3, "deploy steps carry deploy.id and deploy.image as keys")
    }

    @Test func peerdRefusesABadConfigAndConfigCheckNamesTheKey() async throws {
        let node = try TestNode()
        defer { node.tearDown() }
        var yaml = try String(contentsOfFile: node.configPath, encoding: .utf8)
        yaml = yaml.replacingOccurrences(of: "port: 8080", with: "port: eighty")
        try yaml.write(toFile: node.configPath, atomically: true, encoding: .utf8)

        let check = try Shell.run(PeerdProcess.binDirectory + "/peerctl", ["config", "check", "--config", node.configPath])
        #expect(check.status == 1)
        #expect(check.output.contains(node.configPath))
        #expect(check.output.contains("app.port"))
        #expect(check.output.contains("\"eighty\" is not a whole number"))

        let daemon = try Shell.run(PeerdProcess.binDirectory + "/peerd", ["--config", node.configPath])
        #expect(daemon.status == 78)
        #expect(daemon.output.contains("app.port"))
        #expect(try node.containers().isEmpty)
    }
}
