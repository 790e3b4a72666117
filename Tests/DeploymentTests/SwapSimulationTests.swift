import Deployment
import PeerCore
import Testing

/// Thousands of swaps against a simulated node whose every answer is drawn from a seeded generator, with the
/// swap's safety rules checked after every step. A failing seed replays exactly.
@Suite struct SwapSimulationTests {
    struct World {
        var rng: SplitMix64
        var now = Instant.zero
        /// What the proxy routes to (generation), as the simulated nginx would.
        var routed: Int?
        var running: Set<String>
        var healthySeen: Set<Int> = []
        var verified: Set<Int> = []
        var drainEnded = false
        var stopped: [String] = []

        mutating func chance(_ p: Double) -> Bool { Double(rng.next() % 10_000) / 10_000 < p }
    }

    @Test(arguments: 0..<4)
    func swapIsSafeUnderRandomAnswers(shard: Int) {
        for seed in UInt64(shard * 1500)..<UInt64(shard * 1500 + 1500) {
            simulate(seed: seed)
        }
    }

    func simulate(seed: UInt64) {
        var world = World(rng: SplitMix64(seed: seed), routed: 1, running: ["old"])
        let hasOld = seed % 7 != 0
        if !hasOld {
            world.routed = nil
            world.running = []
        }
        let settings = Swap.Settings(
            healthInterval: .milliseconds(100), healthTimeout: .seconds(2), verifyTimeout: .milliseconds(300),
            verifyInterval: .milliseconds(20), drainTimeout: .seconds(1), drainInterval: .milliseconds(50), stopGrace: .seconds(1))
        var swap = Swap(image: "app:v2", generation: 2, old: hasOld ? v1 : nil, settings: settings)
        var queue = swap.handle(.begin, now: world.now)
        var outcome: Swap.Outcome?
        var steps = 0
        let healthyAfter = Int(world.rng.next() % 40)  // probes until the app would pass; may exceed the deadline
        var probes = 0

        while !queue.isEmpty {
            steps += 1
            #expect(steps < 10_000, "seed \(seed): swap does not terminate")
            if steps >= 10_000 { return }
            let action = queue.removeFirst()
            #expect(outcome == nil, "seed \(seed): action \(action) after the swap finished")
            var event: Swap.Event?
            world.now = world.now + .milliseconds(Int64(world.rng.next() % 30))
            switch action {
            case .report:
                continue
            case .finished(let o):
                outcome = o
                continue
            case .pull:
                event = world.chance(0.05) ? .pullFailed("registry down") : .pulled
            case .startContainer:
                if world.chance(0.05) {
                    event = .containerFailed("port clash")
                } else {
                    world.running.insert("new")
                    event = .containerStarted(v2)
                }
            case .probeHealth(let instance, let delay):
                world.now = world.now + delay
                probes += 1
                if world.chance(0.02) {
                    world.running.remove("new")
                    event = .health(.exited(code: 1, logs: "boom"))
                } else if probes > healthyAfter {
                    world.healthySeen.insert(instance.generation)
                    event = .health(.healthy(status: 200))
                } else {
                    event = .health(world.chance(0.5) ? .unreachable("refused") : .unhealthy(status: 503, body: ""))
                }
            case .routeProxy(let target):
                if let target {
                    // Safety 1: the proxy is only pointed at an instance whose health passed (or the old one).
                    #expect(target == v1 || world.healthySeen.contains(target.generation), "seed \(seed): routed to unhealthy \(target)")
                }
                if world.chance(0.1) {
                    event = .proxyRouteFailed("nginx -t failed")
                } else {
                    world.routed = target?.generation
                    event = .proxyRouted
                }
            case .verifyProxy(let instance, let delay):
                world.now = world.now + delay
                if world.routed == instance.generation && world.chance(0.7) {
                    world.verified.insert(instance.generation)
                    event = .proxyVerified
                } else {
                    event = .proxyNotServing("old generation answered")
                }
            case .checkDrain(let delay):
                world.now = world.now + delay
                if world.chance(0.4) {
                    world.drainEnded = true
                    event = .drained
                } else {
                    event = .drainPending(1)
                }
            case .readLogs:
                event = .logsRead(world.chance(0.5) ? "app output" : "")
            case .stopContainer(let instance, _):
                if instance == v1 {
                    // Safety 2: the old instance stops only once the proxy verifiably serves the new one.
                    #expect(world.routed == 2 && world.verified.contains(2), "seed \(seed): old stopped before the new one served")
                }
                if world.chance(0.05) {
                    event = .containerStopFailed("dockerd busy")
                } else {
                    world.running.remove(instance.containerID)
                    world.stopped.append(instance.containerID)
                    event = .containerStopped
                }
            }
            if let event { queue += swap.handle(event, now: world.now) }
        }

        guard let outcome else {
            Issue.record("seed \(seed): no outcome")
            return
        }
        #expect(swap.isFinished)
        switch outcome {
        case .succeeded(let new, _, _):
            // Safety 3: success means the proxy serves the new instance.
            #expect(new == v2 && world.routed == 2 && world.verified.contains(2), "seed \(seed)")
        case .failed(_, let warnings):
            // Safety 4: failure means traffic is where it was and the new container was asked to go.
            if warnings.isEmpty {
                #expect(world.routed == (hasOld ? 1 : nil), "seed \(seed): failed swap left the proxy on \(String(describing: world.routed))")
            }
            if hasOld { #expect(!world.stopped.contains("old"), "seed \(seed): failed swap stopped the old instance") }
            #expect(!world.running.contains("new") || !warnings.isEmpty, "seed \(seed): failed swap left the new container running")
        }
    }
}
