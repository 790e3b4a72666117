import Deployment
import Foundation
import PeerDaemon
import PeerTestKit
import Testing

/// The swap with the real dockerd, registry and nginx: what an operator relies on when a deploy goes well or badly.
@Suite(.serialized, .timeLimit(.minutes(6))) struct EngineTests {
    @Test func swapsVersionsUnderTrafficWithoutAFailedRequest() async throws {
        let node = try TestNode()
        defer { node.tearDown() }
        try await withEngine(node) { engine async throws in
            let first = try await deploy(engine, TestBed.image("v1"))
            #expect(first.result == .succeeded, "\(first.reason ?? "")")
            #expect(try await node.get("/").body == "v1")
            let before = try node.containers()

            let probe = try await TrafficProbe.during(node) {
                try await Task.sleep(for: .milliseconds(300))
                let second = try await deploy(engine, TestBed.image("v2"))
                #expect(second.result == .succeeded, "\(second.reason ?? "")")
                #expect(second.steps.map(\.step) == ["pull", "start", "health", "switch", "verify", "drain", "stop"])
                try await Task.sleep(for: .milliseconds(300))
            }
            #expect(await probe.failures == [])
            #expect(await probe.ok > 20)
            #expect(await probe.bodies == ["v1", "v2"])
            #expect(try await node.get("/").body == "v2")
            let after = try node.containers()
            #expect(after.count == 1)
            #expect(Set(after).isDisjoint(with: before), "the v1 container must be gone")
            let status = await engine.status()
            #expect(status.serving?.image == TestBed.image("v2"))
            #expect(status.previousImage == TestBed.image("v1"))
            #expect(status.routedGeneration == status.serving?.generation)
        }
    }

    @Test func unhealthyImageNeverServesAndTheOldOneKeepsServing() async throws {
        let node = try TestNode(healthTimeout: "2s")
        defer { node.tearDown() }
        try await withEngine(node) { engine async throws in
            #expect(try await deploy(engine, TestBed.image("v1")).result == .succeeded)
            let serving = try node.containers()
            let record = try await deploy(engine, TestBed.image("bad"))
            #expect(record.result == .failed)
            #expect(record.reason?.contains("did not become healthy within 2.0s") == true, "\(record.reason ?? "")")
            #expect(record.evidence?.contains("answered 404") == true, "\(record.evidence ?? "")")
            #expect(record.evidence?.contains("/health will fail (HEALTH=fail)") == true, "the app's own output is included")
            #expect(try await node.get("/").body == "v1")
            #expect(try node.containers() == serving, "only the v1 container remains")
            #expect(await engine.status().serving?.image == TestBed.image("v1"))
        }
    }

    @Test func containerThatExitsAtOnceIsReportedWithItsOutput() async throws {
        let node = try TestNode()
        defer { node.tearDown() }
        try await withEngine(node) { engine async throws in
            #expect(try await deploy(engine, TestBed.image("v1")).result == .succeeded)
            let record = try await deploy(engine, TestBed.image("crash"))
            #expect(record.result == .failed)
            let explained = (record.reason ?? "") + (record.evidence ?? "")
            // Caught at start ("exited with code 3"), or — when Docker already restarted it — by the health check
            // ("exited (exit code unknown …)"): either way it is reported as an exit, with the app's output.
            #expect(explained.contains("exited"), "\(explained)")
            #expect(explained.contains("crashing at start"), "\(explained)")
            #expect(try await node.get("/").body == "v1")
            #expect(try node.containers().count == 1)
        }
    }

    /// A container that crashes after it started, while its restart policy keeps bringing it back: the
    /// health check must see the crash, not wait out its deadline on a container Docker calls "running".
    @Test func containerThatCrashesWhileRestartingIsCaughtBeforeTheHealthDeadline() async throws {
        let node = try TestNode(healthTimeout: "20s")
        defer { node.tearDown() }
        try await withEngine(node) { engine async throws in
            #expect(try await deploy(engine, TestBed.image("v1")).result == .succeeded)
            let record = try await deploy(engine, TestBed.image("crashlater"))
            #expect(record.result == .failed)
            #expect(record.reason?.contains("container exited") == true, "\(record.reason ?? "")")
            #expect(record.reason?.contains("before it became healthy") == true, "caught as a crash, not a timeout")
            #expect(record.evidence?.contains("crashing at start") == true)
            #expect(try await node.get("/").body == "v1")
            #expect(try node.containers().count == 1)
        }
    }

    @Test func unknownTagFailsAtPullAndChangesNothing() async throws {
        let node = try TestNode()
        defer { node.tearDown() }
        try await withEngine(node) { engine async throws in
            #expect(try await deploy(engine, TestBed.image("v1")).result == .succeeded)
            let record = try await deploy(engine, TestBed.image("no-such-tag"))
            #expect(record.result == .failed)
            #expect(record.steps.last?.step == "pull")
            #expect(record.reason?.contains("no-such-tag") == true)
            #expect(record.reason?.contains("check the image name and tag") == true, "\(record.reason ?? "")")
            #expect(try await node.get("/").body == "v1")

            let unknownRegistry = try await deploy(engine, "127.0.0.1:1/nothing:v1")
            #expect(unknownRegistry.result == .failed)
            #expect(unknownRegistry.reason?.contains("could not pull") == true)
        }
    }

    @Test func configThatNginxRejectsKeepsTheOldVersionServing() async throws {
        let node = try TestNode(extraNginx: ["custom_include: \(NSTemporaryDirectory())peer-custom-\(UUID().uuidString).conf"])
        defer { node.tearDown() }
        try await withEngine(node) { engine async throws in
            #expect(try await deploy(engine, TestBed.image("v1")).result == .succeeded)
            let include = try node.config().nginx.customInclude!
            defer { try? FileManager.default.removeItem(atPath: include) }
            #expect(FileManager.default.fileExists(atPath: include), "peer creates the user's include once")
            try "this_is_not_a_directive on;\n".write(toFile: include, atomically: true, encoding: .utf8)
            let siteBefore = try String(contentsOfFile: try node.config().nginx.site, encoding: .utf8)

            let record = try await deploy(engine, TestBed.image("v2"))
            #expect(record.result == .failed)
            #expect(record.steps.contains { $0.step == "switch" && $0.status == "failed" })
            #expect(record.reason?.contains("this_is_not_a_directive") == true, "\(record.reason ?? "")")
            #expect(try await node.get("/").body == "v1")
            #expect(try String(contentsOfFile: try node.config().nginx.site, encoding: .utf8) == siteBefore)
            #expect(try node.containers().count == 1, "the v2 container was removed")

            // The user's file is theirs: once fixed, the next deploy goes through and it is left as they wrote it.
            try "add_header X-Custom yes;\n".write(toFile: include, atomically: true, encoding: .utf8)
            #expect(try await deploy(engine, TestBed.image("v2")).result == .succeeded)
            #expect(try await node.get("/").header("X-Custom") == "yes")
            #expect(try String(contentsOfFile: include, encoding: .utf8) == "add_header X-Custom yes;\n")
        }
    }

    @Test func nginxThatIsNotRunningIsNamedAndNothingIsLeftBehind() async throws {
        let node = try TestNode()
        defer { node.tearDown() }
        try await withEngine(node, startNginx: false) { engine async throws in
            let record = try await deploy(engine, TestBed.image("v1"))
            #expect(record.result == .failed)
            #expect(record.reason?.contains("nginx is not running") == true, "\(record.reason ?? "")")
            #expect(try node.containers().isEmpty)
        }
    }

    @Test func aSecondDeployWhileOneRunsIsRefusedByName() async throws {
        let node = try TestNode()
        defer { node.tearDown() }
        try await withEngine(node) { engine async throws in
            let (id, events) = try await engine.submit(.deploy, image: TestBed.reference("slowstart"))
            do {
                _ = try await engine.submit(.deploy, image: TestBed.reference("v2"))
                Issue.record("a concurrent deploy was accepted")
            } catch let busy as NodeEngine.Busy {
                #expect(busy.description.contains(id))
                #expect(busy.description.contains("slowstart"))
            }
            var result: DeployRecord?
            for await event in events { if case .result(let r) = event { result = r } }
            #expect(result?.result == .succeeded)
            #expect(try await node.get("/").body == "slowstart")
        }
    }

    @Test func rollbackSwapsBackToThePreviousImage() async throws {
        let node = try TestNode()
        defer { node.tearDown() }
        try await withEngine(node) { engine async throws in
            await #expect(throws: NodeEngine.Refused.self) { try await engine.submit(.rollback, image: nil) }
            #expect(try await deploy(engine, TestBed.image("v1")).result == .succeeded)
            #expect(try await deploy(engine, TestBed.image("v2")).result == .succeeded)
            let back = try await deploy(engine, nil, kind: .rollback)
            #expect(back.result == .succeeded)
            #expect(back.image == TestBed.image("v1"))
            #expect(try await node.get("/").body == "v1")
            #expect(await engine.status().previousImage == TestBed.image("v2"))
        }
    }

    @Test func stateIsPersistedPrivatelyAndSurvivesARestart() async throws {
        let node = try TestNode()
        defer { node.tearDown() }
        let served = try await withEngine(node) { engine async throws in
            let record = try await deploy(engine, TestBed.image("v1"))
            #expect(record.result == .succeeded)
            return await engine.status().serving
        }
        let path = try node.config().stateDirectory + "/state.json"
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let state = try StateDirectory(try node.config().stateDirectory).read(.node) ?? NodeState()
        #expect(state.current == served)
        #expect(state.inProgress == nil)
        // A new engine on the same node adopts the same container without touching it.
        try await withEngine(node, startNginx: false) { engine async throws in
            #expect(await engine.status().serving == served)
            #expect(try await node.get("/").body == "v1")
        }
    }

    @Test func fullDiskRefusesTheDeployAndKeepsServing() async throws {
        let stateDir = NSTemporaryDirectory() + "peer-tmpfs-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true)
        let mount = try Shell.run("mount", ["-t", "tmpfs", "-o", "size=32k", "tmpfs", stateDir])
        try #require(mount.status == 0, "tests run as root and may mount a tmpfs: \(mount.output)")
        defer {
            _ = try? Shell.run("umount", [stateDir])
            try? FileManager.default.removeItem(atPath: stateDir)
        }
        let node = try TestNode(stateDir: stateDir)
        defer { node.tearDown() }
        try await withEngine(node) { engine async throws in
            #expect(try await deploy(engine, TestBed.image("v1")).result == .succeeded)
            let before = try node.containers()
            // Fill the disk.
            _ = try Shell.run("dd", ["if=/dev/zero", "of=\(stateDir)/fill", "bs=1k", "count=64"])
            let record = try await deploy(engine, TestBed.image("v2"))
            #expect(record.result == .failed)
            #expect(record.reason?.contains("No space left on device") == true, "\(record.reason ?? "")")
            #expect(try node.containers() == before, "nothing was started")
            #expect(try await node.get("/").body == "v1")
        }
    }

    @Test func dockerdThatIsDownIsNamedAndDeploysAreRefused() async throws {
        let node = try TestNode()
        defer { node.tearDown() }
        try await withEngine(node, dockerSocket: "/tmp/peer-no-dockerd.sock", waitUntilReady: false) { engine async throws in
            var starting: String?
            for _ in 0..<100 {
                starting = await engine.status().starting
                if starting?.contains("dockerd") == true { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(starting?.contains("cannot reach dockerd at /tmp/peer-no-dockerd.sock") == true, "\(starting ?? "")")
            do {
                _ = try await engine.submit(.deploy, image: TestBed.reference("v1"))
                Issue.record("deploy accepted without dockerd")
            } catch {
                #expect("\(error)".contains("start Docker"))
            }
            guard case .failure = await engine.status().docker else {
                Issue.record("dockerd counted as reachable")
                return
            }
        }
    }
}

@Suite(.serialized, .timeLimit(.minutes(6))) struct PortClashTests {
    /// Another program holds the listen address: nginx validates the config but cannot bind on reload. The
    /// verify step notices (the answer does not carry the new generation) and nothing is left half-done.
    @Test func listenAddressHeldByAnotherProgramIsDetectedAndUndone() async throws {
        let node = try TestNode()
        defer { node.tearDown() }
        let squatter = try SquatterServer(address: node.address, port: node.port)
        defer { squatter.stop() }
        try await withEngine(node) { engine async throws in
            let record = try await deploy(engine, TestBed.image("v1"))
            #expect(record.result == .failed)
            #expect(record.steps.contains { $0.step == "verify" && $0.status == "failed" })
            #expect(
                record.evidence?.contains("generation none") == true || record.evidence?.contains("no answer") == true, "\(record.evidence ?? "")")
            #expect(record.evidence?.contains("another program may hold the listen address") == true)
            #expect(try node.containers().isEmpty, "the new container was removed")
            #expect(await engine.status().serving == nil)
        }
    }
}

/// A plain HTTP server (python3) squatting on an address, as another program on the VPS would.
final class SquatterServer: Sendable {
    let pid: pid_t

    init(address: String, port: Int) throws {
        pid = try Spawn.start(
            "/usr/bin/python3", ["-m", "http.server", "--bind", address, String(port), "--directory", "/tmp"], output: "/dev/null")
        for _ in 0..<100 {
            if (try? Shell.run("curl", ["-s", "-o", "/dev/null", "http://\(address):\(port)/"]))?.status == 0 { return }
            usleep(50_000)
        }
        stop()
        throw TestBed.NotReady(description: "python3 http.server did not listen on \(address):\(port)")
    }

    func stop() {
        kill(pid, SIGKILL)
        Spawn.wait(pid)
    }
}
