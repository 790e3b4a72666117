import Deployment
import PeerCore
import Testing

@Suite struct ImageReferenceTests {
    @Test(arguments: [
        ("nginx", "nginx", "latest", "docker.io"),
        ("nginx:1.27", "nginx", "1.27", "docker.io"),
        ("ghcr.io/acme/shop:1.4.2", "ghcr.io/acme/shop", "1.4.2", "ghcr.io"),
        ("127.0.0.1:5000/peer-testapp:v1", "127.0.0.1:5000/peer-testapp", "v1", "127.0.0.1:5000"),
        ("localhost:5000/app", "localhost:5000/app", "latest", "localhost:5000"),
        ("acme/shop", "acme/shop", "latest", "docker.io"),
    ])
    func parses(raw: String, repository: String, tag: String, registry: String) throws {
        let ref = try ImageReference(parsing: raw)
        #expect(ref.repository == repository)
        #expect(ref.tag == tag)
        #expect(ref.registry == registry)
    }

    @Test func digestsWin() throws {
        let digest = "sha256:" + String(repeating: "ab", count: 32)
        let ref = try ImageReference(parsing: "ghcr.io/acme/shop:1.0@\(digest)")
        #expect(ref.repository == "ghcr.io/acme/shop")
        #expect(ref.tag == digest)
        #expect(ref.isDigest)
    }

    @Test(arguments: [
        "", "Shop:1", "shop:", "shop:bad tag", "shop@sha256:123", "/shop", "shop//x", "shop:-x", "shöp",
        "registry.example/" + String(repeating: "a", count: 240) + ":v1",
    ])
    func rejectsWithAReason(raw: String) {
        #expect(throws: ImageReference.Invalid.self) { try ImageReference(parsing: raw) }
        do {
            _ = try ImageReference(parsing: raw)
        } catch {
            #expect(error.description.contains("expected [registry/]name[:tag]"))
        }
    }
}

@Suite struct AdoptionTests {
    func container(_ gen: Int, running: Bool = true, port: Int? = nil) -> ManagedContainer {
        ManagedContainer(
            id: "c\(gen)", name: "peer-n-app-\(gen)", image: "app:\(gen)", generation: gen, running: running,
            hostPort: running ? (port ?? 30000 + gen) : nil)
    }

    @Test func keepsWhatTheProxyServesWithoutTouchingIt() {
        let plan = AdoptionPlan.plan(containers: [container(3)], routed: (3, 30003), recordedCurrent: nil, nextGeneration: 1)
        #expect(plan.serving?.containerID == "c3")
        #expect(!plan.reroute)
        #expect(plan.remove.isEmpty)
        #expect(plan.nextGeneration == 4)
    }

    @Test func crashBeforeTheSwitchRemovesTheHalfStartedContainer() {
        let plan = AdoptionPlan.plan(containers: [container(3), container(4)], routed: (3, 30003), recordedCurrent: nil, nextGeneration: 5)
        #expect(plan.serving?.containerID == "c3")
        #expect(plan.remove.map(\.id) == ["c4"])
        #expect(!plan.reroute)
        #expect(plan.nextGeneration == 5)
    }

    @Test func crashAfterTheSwitchKeepsTheNewAndRemovesTheOld() {
        let plan = AdoptionPlan.plan(containers: [container(3), container(4)], routed: (4, 30004), recordedCurrent: nil, nextGeneration: 5)
        #expect(plan.serving?.containerID == "c4")
        #expect(plan.remove.map(\.id) == ["c3"])
    }

    @Test func aContainerThatMovedPortIsReroutedNotReplaced() {
        let plan = AdoptionPlan.plan(containers: [container(3, port: 40000)], routed: (3, 30003), recordedCurrent: nil, nextGeneration: 4)
        #expect(plan.serving?.hostPort == 40000)
        #expect(plan.reroute)
    }

    @Test func whenTheRoutedContainerIsGoneTheRecordedOneServes() {
        let current = container(2).instance
        let plan = AdoptionPlan.plan(
            containers: [container(2), container(5, running: false)], routed: (5, 30005), recordedCurrent: current, nextGeneration: 3)
        #expect(plan.serving?.containerID == "c2")
        #expect(plan.reroute)
        #expect(plan.remove.map(\.id) == ["c5"])
        #expect(plan.nextGeneration == 6)
    }

    @Test func nothingRunning() {
        let plan = AdoptionPlan.plan(containers: [container(2, running: false)], routed: nil, recordedCurrent: nil, nextGeneration: 1)
        #expect(plan.serving == nil)
        #expect(plan.remove.count == 1)
        #expect(plan.nextGeneration == 3)
    }
}

@Suite struct DurationParsingTests {
    @Test(arguments: [("250ms", 250), ("2s", 2000), ("1.5s", 1500), ("5m", 300_000), ("1h", 3_600_000), ("90", 90_000)])
    func parses(text: String, ms: Int64) {
        #expect(Duration(configString: text)?.milliseconds == ms)
    }

    @Test(arguments: ["", "fast", "-1s", "10 parsecs", "1e300s"])
    func rejects(text: String) {
        #expect(Duration(configString: text) == nil)
    }
}
