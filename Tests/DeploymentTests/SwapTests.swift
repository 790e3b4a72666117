import Deployment
import PeerCore
import Testing

/// Drives a Swap with scripted answers and a manual clock, and records what it asked for.
struct SwapDriver {
    var swap: Swap
    var now = Instant.zero
    var actions: [Swap.Action] = []

    init(old: AppInstance?, settings: Swap.Settings = .init()) {
        swap = Swap(image: "app:v2", generation: 2, old: old, settings: settings)
    }

    @discardableResult
    mutating func send(_ event: Swap.Event, after delay: Duration = .milliseconds(10)) -> [Swap.Action] {
        now = now + delay
        let out = swap.handle(event, now: now)
        actions += out
        return out.filter { if case .report = $0 { false } else { true } }
    }

    var outcome: Swap.Outcome? {
        actions.lazy.compactMap { if case .finished(let o) = $0 { o } else { nil } }.first
    }

    var reports: [Swap.Progress] { actions.compactMap { if case .report(let p) = $0 { p } else { nil } } }
}

let v1 = AppInstance(generation: 1, image: "app:v1", containerID: "old", containerName: "peer-n-app-1", hostPort: 30001)
let v2 = AppInstance(generation: 2, image: "app:v2", containerID: "new", containerName: "peer-n-app-2", hostPort: 30002)

@Suite struct SwapTests {
    @Test func happyPathSwitchesOnlyAfterHealthAndStopsOldOnlyAfterDrain() {
        var d = SwapDriver(old: v1)
        #expect(d.send(.begin) == [.pull(image: "app:v2")])
        #expect(d.send(.pulled) == [.startContainer(image: "app:v2", generation: 2)])
        #expect(d.send(.containerStarted(v2)) == [.probeHealth(v2, after: .zero)])
        #expect(d.send(.health(.unreachable("connection refused"))) == [.probeHealth(v2, after: .milliseconds(100))])
        #expect(d.send(.health(.unhealthy(status: 503, body: "warming up"))) == [.probeHealth(v2, after: .milliseconds(100))])
        #expect(d.send(.health(.healthy(status: 200))) == [.routeProxy(to: v2)])
        #expect(d.send(.proxyRouted) == [.verifyProxy(v2, after: .zero)])
        #expect(d.send(.proxyNotServing("generation 1")) == [.verifyProxy(v2, after: .milliseconds(20))])
        #expect(d.send(.proxyVerified) == [.checkDrain(after: .zero)])
        #expect(d.send(.drainPending(2)) == [.checkDrain(after: .milliseconds(50))])
        #expect(d.send(.drained) == [.stopContainer(v1, grace: .seconds(10))])
        #expect(d.send(.containerStopped).count == 1)
        #expect(d.outcome == .succeeded(new: v2, retired: v1, warnings: []))
        #expect(d.swap.isFinished)
        let steps = d.reports.filter { $0.status == .done }.map(\.step)
        #expect(steps == [.pull, .start, .health, .switch, .verify, .drain, .stop])
    }

    @Test func firstDeployHasNothingToDrainOrStop() {
        var d = SwapDriver(old: nil)
        d.send(.begin)
        d.send(.pulled)
        d.send(.containerStarted(v2))
        d.send(.health(.healthy(status: 204)))
        d.send(.proxyRouted)
        #expect(d.send(.proxyVerified) == [.finished(.succeeded(new: v2, retired: nil, warnings: []))])
    }

    @Test func healthThatNeverPassesDiscardsTheNewContainerAndNeverTouchesTheProxy() {
        var d = SwapDriver(old: v1, settings: .init(healthTimeout: .seconds(1)))
        d.send(.begin)
        d.send(.pulled)
        d.send(.containerStarted(v2))
        var out: [Swap.Action] = []
        for _ in 0..<20 {
            out = d.send(.health(.unhealthy(status: 404, body: "Not Found")), after: .milliseconds(100))
            if out.contains(.readLogs(v2)) { break }
        }
        #expect(out == [.readLogs(v2)], "the app's output is read before its container goes")
        #expect(d.send(.logsRead("listening on :8080\nDATABASE_URL not set")) == [.stopContainer(v2, grace: .zero)])
        d.send(.containerStopped)
        guard case .failed(let failure, _) = d.outcome else {
            Issue.record("expected a failure, got \(String(describing: d.outcome))")
            return
        }
        #expect(failure.step == .health)
        #expect(failure.reason.contains("did not become healthy within 1.0s"))
        #expect(failure.evidence.contains("answered 404: Not Found"))
        #expect(failure.evidence.contains("DATABASE_URL not set"))
        #expect(!d.actions.contains { if case .routeProxy = $0 { true } else { false } })
        #expect(!d.actions.contains(.stopContainer(v1, grace: .seconds(10))))
    }

    @Test func containerThatExitsFailsAtOnceWithItsLogs() {
        var d = SwapDriver(old: v1)
        d.send(.begin)
        d.send(.pulled)
        d.send(.containerStarted(v2))
        #expect(d.send(.health(.exited(code: 3, logs: "panic: no DATABASE_URL"))) == [.stopContainer(v2, grace: .zero)])
        d.send(.containerStopped)
        guard case .failed(let failure, _) = d.outcome else { return #expect(Bool(false)) }
        #expect(failure.reason.contains("exited with code 3"))
        #expect(failure.evidence == "panic: no DATABASE_URL")
    }

    @Test func aMegabyteOfCrashOutputKeepsOnlyItsEnd() {
        var d = SwapDriver(old: v1)
        d.send(.begin)
        d.send(.pulled)
        d.send(.containerStarted(v2))
        let output = String(repeating: "noise\n", count: 200_000) + "panic: the real cause"
        d.send(.health(.exited(code: 2, logs: output)))
        d.send(.containerStopped)
        guard case .failed(let failure, _) = d.outcome else { return #expect(Bool(false)) }
        #expect(failure.evidence.utf8.count <= Swap.maximumEvidence)
        #expect(failure.evidence.hasSuffix("panic: the real cause"))
    }

    @Test func pullAndStartFailuresEndAtOnceWithNothingToUndo() {
        var pull = SwapDriver(old: v1)
        pull.send(.begin)
        #expect(pull.send(.pullFailed("manifest unknown")).count == 1)
        guard case .failed(let failure, _) = pull.outcome else { return #expect(Bool(false)) }
        #expect(failure.step == .pull && failure.reason.contains("manifest unknown"))

        var start = SwapDriver(old: v1)
        start.send(.begin)
        start.send(.pulled)
        start.send(.containerFailed("exited with code 3"))
        guard case .failed(let startFailure, _) = start.outcome else { return #expect(Bool(false)) }
        #expect(startFailure.step == .start)
    }

    @Test func rejectedProxyConfigKeepsTheOldInstanceAndRemovesTheNewOne() {
        var d = SwapDriver(old: v1)
        d.send(.begin)
        d.send(.pulled)
        d.send(.containerStarted(v2))
        d.send(.health(.healthy(status: 200)))
        #expect(d.send(.proxyRouteFailed("nginx -t: unknown directive")) == [.stopContainer(v2, grace: .zero)])
        d.send(.containerStopped)
        guard case .failed(let failure, _) = d.outcome else { return #expect(Bool(false)) }
        #expect(failure.step == .switch)
        #expect(!d.actions.contains(.stopContainer(v1, grace: .seconds(10))))
    }

    @Test func proxyThatNeverServesTheNewInstanceIsRoutedBack() {
        var d = SwapDriver(old: v1, settings: .init(verifyTimeout: .milliseconds(100)))
        d.send(.begin)
        d.send(.pulled)
        d.send(.containerStarted(v2))
        d.send(.health(.healthy(status: 200)))
        d.send(.proxyRouted)
        var out: [Swap.Action] = []
        for _ in 0..<20 {
            out = d.send(.proxyNotServing("answered generation 1"), after: .milliseconds(30))
            if out.contains(.routeProxy(to: v1)) { break }
        }
        #expect(out == [.routeProxy(to: v1)])
        #expect(d.send(.proxyRouted) == [.stopContainer(v2, grace: .zero)])
        d.send(.containerStopped)
        guard case .failed(let failure, _) = d.outcome else { return #expect(Bool(false)) }
        #expect(failure.step == .verify)
        #expect(failure.evidence == "answered generation 1")
    }

    @Test func drainTimeoutWarnsAndStillRetiresTheOldInstance() {
        var d = SwapDriver(old: v1, settings: .init(drainTimeout: .milliseconds(200)))
        d.send(.begin)
        d.send(.pulled)
        d.send(.containerStarted(v2))
        d.send(.health(.healthy(status: 200)))
        d.send(.proxyRouted)
        d.send(.proxyVerified)
        var out: [Swap.Action] = []
        for _ in 0..<20 {
            out = d.send(.drainPending(1), after: .milliseconds(50))
            if out.contains(.stopContainer(v1, grace: .seconds(10))) { break }
        }
        #expect(out == [.stopContainer(v1, grace: .seconds(10))])
        d.send(.containerStopFailed("dockerd timeout"))
        guard case .succeeded(let new, _, let warnings) = d.outcome else { return #expect(Bool(false)) }
        #expect(new == v2)
        #expect(warnings.count == 2)
        #expect(warnings[0].contains("drain timed out"))
        #expect(warnings[1].contains("could not stop"))
    }

    @Test func eventsThatDoNotBelongToTheStateChangeNothing() {
        var d = SwapDriver(old: v1)
        d.send(.begin)
        #expect(d.send(.proxyVerified).isEmpty)
        #expect(d.send(.health(.healthy(status: 200))).isEmpty)
        #expect(d.send(.containerStopped).isEmpty)
        #expect(d.send(.pulled) == [.startContainer(image: "app:v2", generation: 2)])
    }

    @Test func progressCarriesStepTimes() {
        var d = SwapDriver(old: nil)
        d.send(.begin)
        d.send(.pulled, after: .milliseconds(250))
        let pullDone = d.reports.first { $0.step == .pull && $0.status == .done }
        #expect(pullDone?.elapsed == .milliseconds(250))
        #expect(pullDone?.total == .milliseconds(250))
    }
}
